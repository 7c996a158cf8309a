#!/usr/bin/env bash
# Bring up a local Kubernetes cluster for the kubestyle cluster tests: the control plane
# (control-plane.sh start DIR) plus the process kubelet (process-kubelet.py) in the background.
# Waits until the node is Ready and schedulable, then prints on stdout:
#
#   export KUBESTYLE_TEST_KUBECONFIG=DIR/admin.kubeconfig
#
# usage: tests/cluster/up.sh DIR [BIN_DIR] [process-kubelet options...]
#   BIN_DIR    where the containers' command[0] is looked up (default $KUBESTYLE_BIN_DIR), e.g.
#              /var/tmp/kubestyle-ci-target/debug
#   options    passed on to process-kubelet.py, e.g. --node-label nvidia.com/gpu.present=true
#              (also from $KUBESTYLE_KUBELET_ARGS, split on spaces)
# Environment: everything control-plane.sh reads (KUBESTYLE_K8S_BIN, ...), and
#   KUBESTYLE_CLUSTER_WATCH_PID  if set, a watchdog runs down.sh DIR once that process is gone (so
#                                a crashed test run leaves nothing behind)
# Stop with: tests/cluster/down.sh DIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
dir=$1
shift
bin_dir=${KUBESTYLE_BIN_DIR:-}
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
  bin_dir=$1
  shift
fi
[ -n "$bin_dir" ] || { echo "up.sh: give BIN_DIR or set KUBESTYLE_BIN_DIR" >&2; exit 2; }
[ -d "$bin_dir" ] || { echo "up.sh: BIN_DIR $bin_dir is not a directory" >&2; exit 2; }
bin_dir=$(cd "$bin_dir" && pwd)
# shellcheck disable=SC2206
extra=(${KUBESTYLE_KUBELET_ARGS:-} "$@")
timeout=${KUBESTYLE_K8S_START_TIMEOUT:-180}
t0=$SECONDS

kubeconfig=$("$here/control-plane.sh" start "$dir")
dir=$(cd "$dir" && pwd)
pki=$dir/pki
api=$(sed -n 's/^apiserver=//p' "$dir/run/ports")

fail() {
  echo "up.sh: $*" >&2
  tail -n 30 "$dir/logs/process-kubelet.log" >&2 2>/dev/null || true
  "$here/down.sh" "$dir" >&2 || true
  exit 1
}

# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

daemon "$dir/logs/process-kubelet.log" python3 "$here/process-kubelet.py" --kubeconfig "$dir/kubelet.kubeconfig" \
  --bin-dir "$bin_dir" --data-dir "$dir/kubelet" --client-ca-file "$pki/ca.crt" ${extra[@]+"${extra[@]}"}
echo $! >"$dir/run/process-kubelet.pid"
kpid=$!

node_ready() {
  curl -sf --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$api/api/v1/nodes" | python3 -c '
import json, sys
for n in json.load(sys.stdin)["items"]:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
    tainted = any(t["key"].startswith("node.kubernetes.io/") for t in n.get("spec", {}).get("taints", []) or [])
    if ready and not tainted and not n.get("spec", {}).get("unschedulable"):
        sys.exit(0)
sys.exit(1)'
}
until node_ready; do
  kill -0 "$kpid" 2>/dev/null || fail "process-kubelet exited (log: $dir/logs/process-kubelet.log)"
  [ $((SECONDS - t0)) -lt "$timeout" ] || fail "timed out waiting for the node to be Ready"
  sleep 0.3
done

watchdog "$dir" "$here"

echo "up.sh: cluster ready after $((SECONDS - t0))s: node Ready; logs in $dir/logs; stop: $here/down.sh $dir" >&2
echo "export KUBESTYLE_TEST_KUBECONFIG=$kubeconfig"
