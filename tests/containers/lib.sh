# Shared by the tiers that run our images (tests/containers/run.sh, tests/cluster/real-tier.sh):
# sourced after `log` is defined. `start_engine` gets a Docker engine (the running one, else
# dockerd started here, installing Debian's docker.io first when it is missing and this is root on
# Debian) and traps EXIT with `stop_engine`; `build_tier_images NAMES` builds the images with
# scripts/build-images.sh as kubestyle-test/kubestyle-<name>:ci (KUBESTYLE_TEST_IMAGE_REGISTRY,
# KUBESTYLE_TEST_IMAGE_TAG) — from local stand-ins of the base images unless
# KUBESTYLE_REAL_BASES=1, trusting KUBESTYLE_EXTRA_CA (default: this host's CA bundle).

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

start_engine() {
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
}

build_tier_images() { # NAMES (space separated)
  if [ "$(id -u)" = 0 ] && ! command -v debootstrap >/dev/null && [ -z "${KUBESTYLE_REAL_BASES:-}" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  export KUBESTYLE_TEST_IMAGE_REGISTRY=${KUBESTYLE_TEST_IMAGE_REGISTRY:-kubestyle-test}
  export KUBESTYLE_TEST_IMAGE_TAG=${KUBESTYLE_TEST_IMAGE_TAG:-ci}
  local build=(scripts/build-images.sh)
  [ -n "${KUBESTYLE_REAL_BASES:-}" ] || build+=(--offline)
  local ca=${KUBESTYLE_EXTRA_CA-/etc/ssl/certs/ca-certificates.crt}
  [ -z "$ca" ] || [ ! -s "$ca" ] || build+=(--extra-ca "$ca")
  local t0
  t0=$(date +%s)
  KUBESTYLE_IMAGES="$1" "${build[@]}" "$KUBESTYLE_TEST_IMAGE_REGISTRY" "$KUBESTYLE_TEST_IMAGE_TAG"
  log "images built in $(($(date +%s) - t0)) s"
}
