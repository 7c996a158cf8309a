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

# shellcheck source=tests/containers/lib.sh
. tests/containers/lib.sh
start_engine

# --- images -----------------------------------------------------------------------------------
images="download package-model stylize upload pipeline"
# The CUDA image (~6 GB, ~20 min cold on 2 cores) with KUBESTYLE_CUDA=1.
[ -z "${KUBESTYLE_CUDA:-}" ] || images="$images stylize-cuda"
build_tier_images "$images"

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
