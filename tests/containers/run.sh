#!/usr/bin/env bash
# The container tier, in one command (opt-in; not part of .ci/run):
#
#   tests/containers/run.sh
#
# 1. A Docker engine: the running one, else dockerd started here (installing Debian's docker.io
#    first when it is missing and this is root on Debian), stopped again at the end.
# 2. Every CPU image (and with KUBESTYLE_CUDA=1 the CUDA one) built with scripts/build-images.sh,
#    tagged kubestyle-test/kubestyle-<name>:ci
#    — from local stand-ins of the base images (`--offline`, for machines that reach no container
#    registry) unless KUBESTYLE_REAL_BASES=1 — trusting KUBESTYLE_EXTRA_CA during the build
#    (default: this host's CA bundle, which a TLS-inspecting proxy needs).
# 3. The workspace's binaries (`cargo build --workspace`: the process runner the containers are
#    compared with), the test venv, the assets and a moto S3 server (scripts/test-env.sh).
# 4. `cargo test -p kubestyle-e2e --test e2e containers -- --ignored`: tests/e2e/containers.rs.
# Leaves nothing running: containers of the tests, moto, and dockerd when it started it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
log() { printf '== %s\n' "$*" >&2; }
export CARGO_TERM_COLOR=never

engine=${KUBESTYLE_CONTAINER_ENGINE:-docker}
started_dockerd=
dockerd_pid=
stop_engine() {
  # Containers the tests started (a failed test may leave one).
  ids=$("$engine" ps -aq --filter label=app.kubernetes.io/managed-by=kubestyle-pipeline 2>/dev/null || true)
  [ -z "$ids" ] || "$engine" rm -f $ids >/dev/null 2>&1 || true
  if [ -n "$started_dockerd" ]; then
    log "stopping the dockerd this tier started"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
}

if ! "$engine" info >/dev/null 2>&1; then
  if [ "$engine" != docker ]; then
    echo "container tier: $engine does not answer" >&2; exit 2
  fi
  if ! command -v dockerd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing Debian's docker.io"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
    else
      echo "container tier: no Docker engine answers and dockerd is not installed" >&2; exit 2
    fi
  fi
  log "starting dockerd"
  dockerd_log=$(mktemp -t kubestyle-dockerd.XXXXXX.log)
  dockerd >"$dockerd_log" 2>&1 &
  dockerd_pid=$!
  started_dockerd=1
  trap stop_engine EXIT
  for _ in $(seq 1 150); do "$engine" info >/dev/null 2>&1 && break; sleep 0.2; done
  "$engine" info >/dev/null 2>&1 || { tail -n 30 "$dockerd_log" >&2; echo "dockerd did not start" >&2; exit 1; }
else
  trap stop_engine EXIT
fi
if [ "$(id -u)" = 0 ] && ! command -v debootstrap >/dev/null && [ -z "${KUBESTYLE_REAL_BASES:-}" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# --- images -----------------------------------------------------------------------------------
export KUBESTYLE_TEST_IMAGE_REGISTRY=${KUBESTYLE_TEST_IMAGE_REGISTRY:-kubestyle-test}
export KUBESTYLE_TEST_IMAGE_TAG=${KUBESTYLE_TEST_IMAGE_TAG:-ci}
build=(scripts/build-images.sh)
[ -n "${KUBESTYLE_REAL_BASES:-}" ] || build+=(--offline)
ca=${KUBESTYLE_EXTRA_CA-/etc/ssl/certs/ca-certificates.crt}
[ -z "$ca" ] || [ ! -s "$ca" ] || build+=(--extra-ca "$ca")
images="download package-model stylize upload pipeline"
# The CUDA image (~6 GB, ~20 min cold on 2 cores) with KUBESTYLE_CUDA=1.
[ -z "${KUBESTYLE_CUDA:-}" ] || images="$images stylize-cuda"
t0=$(date +%s)
KUBESTYLE_IMAGES="$images" "${build[@]}" "$KUBESTYLE_TEST_IMAGE_REGISTRY" "$KUBESTYLE_TEST_IMAGE_TAG"
log "images built in $(($(date +%s) - t0)) s"

# --- binaries, venv, assets, moto ---------------------------------------------------------------
log "cargo build --workspace (the process runner the containers are compared with)"
cargo build --workspace --locked
# The tests run the binaries just built (a copy: another build sharing the target directory
# cannot swap them underneath).
bins=$(mktemp -d -t kubestyle-tier-bins.XXXXXX)
tdir=${CARGO_TARGET_DIR:-$root/target}
for b in pipeline download package-model stylize upload; do cp "$tdir/debug/$b" "$bins/"; done
export KUBESTYLE_E2E_BIN_DIR=$bins
# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh
# test-env.sh traps EXIT with its own cleanup: stop moto, then the engine.
trap 'cleanup; stop_engine; rm -rf "$bins"' EXIT
export KUBESTYLE_CONTAINER_ENGINE=$engine

log "cargo test: the container tier"
cargo test --locked -p kubestyle-e2e --test e2e containers -- --ignored --test-threads=1
