#!/usr/bin/env bash
# The control plane (control-plane.sh start DIR) with a REAL node: kubelet + containerd (CRI) + CNI,
# our images imported into that containerd (real-node/node.sh). Waits until the node is Ready,
# then prints on stdout:
#
#   export KUBESTYLE_TEST_KUBECONFIG=DIR/admin.kubeconfig
#
# usage: tests/cluster/up-real.sh DIR          (root; stop with tests/cluster/down.sh DIR)
# Environment: everything control-plane.sh and real-node/node.sh read (KUBESTYLE_K8S_BIN,
# KUBESTYLE_TIER_IMAGES, …), and KUBESTYLE_CLUSTER_WATCH_PID as for up.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
t0=$SECONDS
kubeconfig=$("$here/control-plane.sh" start "$1")
dir=$(cd "$1" && pwd)
if ! "$here/real-node/node.sh" start "$dir"; then
  "$here/down.sh" "$dir" >&2 || true
  exit 1
fi
# shellcheck source=tests/cluster/lib.sh
. "$here/lib.sh"
watchdog "$dir" "$here"
echo "up-real.sh: cluster with a real node ready after $((SECONDS - t0))s; logs in $dir/logs; stop: $here/down.sh $dir" >&2
echo "export KUBESTYLE_TEST_KUBECONFIG=$kubeconfig"
