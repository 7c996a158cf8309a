#!/usr/bin/env bash
# A real node for the tests/cluster control plane: kubelet 1.36 + a containerd of its own (CRI) +
# CNI (bridge, host-local, portmap, firewall), the tier's images imported into that containerd, and
# a small provisioner that gives each pending claim a `local` PersistentVolume on this host.
#
#   tests/cluster/real-node/node.sh start DIR     # DIR: a running `control-plane.sh start DIR`
#   tests/cluster/real-node/node.sh stop DIR      # undoes everything start did (safe to run twice)
#
# Needs root, Linux with cgroup v1 or v2, containerd + runc + ctr (Debian's containerd), the CNI
# plugins (Debian's containernetworking-plugins, /usr/lib/cni), gcc (a static pause binary), docker
# (to build the pause image and `docker save` the images), and a kubelet binary in
# $KUBESTYLE_K8S_BIN (tests/cluster/build-k8s.sh).
# Environment:
#   KUBESTYLE_TIER_IMAGES   docker images to import (space separated), e.g.
#                           "kubestyle-test/kubestyle-download:ci kubestyle-test/kubestyle-upload:ci"
#   KUBESTYLE_NODE_IP       the address the kubelet serves on (default: the source address of the
#                           default route; never loopback: `kubectl logs` dials it from the apiserver)
#   KUBESTYLE_NODE_NAME     default kubestyle-node
#   KUBESTYLE_CNI_BIN       default /usr/lib/cni
#   KUBESTYLE_POD_SUBNET    default 10.244.77.0/24 (the bridge kstier0 is its first address)
# Everything it writes is under DIR/node, except what the kubelet insists on (noted at each undo).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib.sh
. "$here/../lib.sh"
cmd=${1:-}
[ $# -eq 2 ] && { [ "$cmd" = start ] || [ "$cmd" = stop ]; } || {
  sed -n '2,21p' "$0" >&2
  exit 2
}
[ -d "$2" ] || { echo "node.sh: no such directory: $2" >&2; exit 2; }
dir=$(cd "$2" && pwd)
node=$dir/node
run=$dir/run
logs=$dir/logs
k8s_bin=${KUBESTYLE_K8S_BIN:-/work/k8s/bin}
cni_bin=${KUBESTYLE_CNI_BIN:-/usr/lib/cni}
node_name=${KUBESTYLE_NODE_NAME:-kubestyle-node}
subnet=${KUBESTYLE_POD_SUBNET:-10.244.77.0/24}
bridge=kstier0
sock=$node/containerd/containerd.sock
pause_ref=docker.io/kubestyle-tier/pause:1
timeout=${KUBESTYLE_K8S_START_TIMEOUT:-180}
# The sysctls the kubelet wants (it would set them itself; protectKernelDefaults makes it check).
sysctls="vm.overcommit_memory=1 kernel.panic=10 kernel.panic_on_oops=1 net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1"

say() { echo "node.sh: $*" >&2; }
die() { say "$*"; exit 1; }
ctr_() { ctr -a "$sock" -n k8s.io "$@"; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pidfile() { # NAME PIDFILE GRACE
  local f=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + $3))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$1 still running after $3 s: KILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $1"
  fi
  rm -f "$f"
}

# iptables chains that exist now, one "table chain" per line (IPv4 or IPv6 by $1).
chains() {
  local ipt=$1 t
  for t in filter nat mangle; do
    "$ipt" -w -t "$t" -S 2>/dev/null | awk -v t="$t" '$1 == "-N" { print t, $2 }'
  done | sort
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (containerd, CNI, cgroups)"
  [ -x "$k8s_bin/kubelet" ] || die "no kubelet in $k8s_bin (tests/cluster/build-k8s.sh builds it)"
  for t in containerd runc ctr gcc docker iptables ip python3; do
    command -v "$t" >/dev/null || die "$t is not installed (see tests/cluster/README.md, 'The real-kubelet tier')"
  done
  for p in bridge host-local portmap firewall loopback; do
    [ -x "$cni_bin/$p" ] || die "CNI plugin $cni_bin/$p is missing (apt-get install containernetworking-plugins)"
  done
  [ -s "$dir/kubelet.kubeconfig" ] || die "$dir has no control plane (control-plane.sh start $dir)"
  pid_alive "$run/kubelet.pid" && die "a kubelet of $dir runs already"
  mkdir -p "$node" "$run" "$logs"
  local node_ip=${KUBESTYLE_NODE_IP:-}
  if [ -z "$node_ip" ]; then
    node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1) }' | head -1)
  fi
  case "$node_ip" in "" | 127.*) die "no non-loopback address for the kubelet (set KUBESTYLE_NODE_IP)" ;; esac

  # --- what the host looks like before: undone by stop ---------------------------------------------
  if [ ! -e "$run/node-before" ]; then
    {
      for s in $sysctls; do echo "sysctl ${s%%=*}=$(sysctl -n "${s%%=*}" 2>/dev/null || echo absent)"; done
      [ -e /var/lib/kubelet ] && echo "had /var/lib/kubelet"
    } >"$run/node-before"
    chains iptables >"$run/chains4-before"
    chains ip6tables >"$run/chains6-before"
    ls /var/run/netns 2>/dev/null | sort >"$run/netns-before" || true
  fi
  [ -e /proc/sys/net/bridge ] || modprobe br_netfilter 2>/dev/null || true
  for s in $sysctls; do sysctl -qw "$s" || die "cannot set $s"; done

  # --- containerd with CRI -----------------------------------------------------------------------
  mkdir -p "$node/containerd" "$node/cni/net.d" "$node/cni/ipam"
  sed -e "s|@DIR@|$node|g" -e "s|@PAUSE@|$pause_ref|g" -e "s|@CNI_BIN@|$cni_bin|g" \
    "$here/containerd.toml.in" >"$node/containerd.toml"
  sed -e "s|@DIR@|$node|g" -e "s|@BRIDGE@|$bridge|g" -e "s|@SUBNET@|$subnet|g" \
    "$here/cni.conflist.in" >"$node/cni/net.d/10-kubestyle.conflist"
  daemon "$logs/containerd.log" containerd --config "$node/containerd.toml"
  echo $! >"$run/containerd.pid"
  local t0=$SECONDS
  until ctr_ version >/dev/null 2>&1; do
    pid_alive "$run/containerd.pid" || { tail -n 20 "$logs/containerd.log" >&2; die "containerd exited"; }
    [ $((SECONDS - t0)) -lt 30 ] || die "containerd did not answer on $sock"
    sleep 0.2
  done
  say "containerd up ($(containerd --version | awk '{print $3}')) on $sock"

  # --- images: the pause sandbox, then the tier's --------------------------------------------------
  if ! ctr_ images check "name==$pause_ref" 2>/dev/null | grep -q .; then
    local b
    b=$(mktemp -d)
    gcc -static -O2 -o "$b/pause" "$here/pause.c"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$b/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "${pause_ref#docker.io/}" "$b" >/dev/null 2>&1
    docker save "${pause_ref#docker.io/}" | ctr_ images import - >/dev/null
    rm -rf "$b"
  fi
  for img in ${KUBESTYLE_TIER_IMAGES:-}; do
    local t1=$SECONDS
    docker image inspect "$img" >/dev/null 2>&1 || die "image $img is not in docker (tests/cluster/real-tier.sh builds them)"
    docker save "$img" | ctr_ images import - >/dev/null || die "importing $img into containerd failed"
    say "imported $img ($((SECONDS - t1)) s)"
  done

  # --- kubelet -----------------------------------------------------------------------------------
  local port healthz
  port=$(free_port)
  healthz=$(free_port)
  mkdir -p "$node/kubelet" "$node/pki"
  sed -e "s|@DIR@|$node|g" -e "s|@NODE_IP@|$node_ip|g" -e "s|@PORT@|$port|g" \
    -e "s|@HEALTHZ_PORT@|$healthz|g" "$here/kubelet-config.yaml.in" >"$node/kubelet-config.yaml"
  # The CA that signed the apiserver's kubelet-client certificate.
  sed -i "s|$node/pki/ca.crt|$dir/pki/ca.crt|" "$node/kubelet-config.yaml"
  daemon "$logs/kubelet.log" "$k8s_bin/kubelet" --config "$node/kubelet-config.yaml" \
    --kubeconfig "$dir/kubelet.kubeconfig" --root-dir "$node/kubelet" --cert-dir "$node/pki" \
    --node-ip "$node_ip" --hostname-override "$node_name" --v="${KUBESTYLE_K8S_VERBOSITY:-1}"
  echo $! >"$run/kubelet.pid"
  echo "$node_name" >"$run/node-name"

  # --- the provisioner: a local PV per pending claim ------------------------------------------------
  mkdir -p "$node/pv"
  daemon "$logs/provisioner.log" python3 "$here/provisioner.py" --kubeconfig "$dir/admin.kubeconfig" \
    --node "$node_name" --dir "$node/pv"
  echo $! >"$run/provisioner.pid"

  local api
  api=$(sed -n 's/^apiserver=//p' "$run/ports")
  until curl -sf --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$api/api/v1/nodes/$node_name" | python3 -c '
import json, sys
n = json.load(sys.stdin)
ready = any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
tainted = any(t["key"].startswith("node.kubernetes.io/") for t in n.get("spec", {}).get("taints", []) or [])
sys.exit(0 if ready and not tainted else 1)' 2>/dev/null; do
    pid_alive "$run/kubelet.pid" || { tail -n 30 "$logs/kubelet.log" >&2; die "the kubelet exited (log: $logs/kubelet.log)"; }
    [ $((SECONDS - t0)) -lt "$timeout" ] || { tail -n 30 "$logs/kubelet.log" >&2; die "node $node_name not Ready after ${timeout}s"; }
    sleep 0.5
  done
  say "node $node_name Ready after $((SECONDS - t0)) s (kubelet $("$k8s_bin/kubelet" --version | awk '{print $2}') on $node_ip:$port)"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

stop() {
  [ "$(id -u)" = 0 ] || die "needs root"
  stop_pidfile provisioner "$run/provisioner.pid" 5
  stop_pidfile kubelet "$run/kubelet.pid" 20
  # The pods' containers and sandboxes, then containerd itself.
  if pid_alive "$run/containerd.pid"; then
    local ids
    ids=$(ctr_ tasks ls -q 2>/dev/null || true)
    for id in $ids; do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do
      for _ in $(seq 1 50); do
        ctr_ tasks ls -q 2>/dev/null | grep -qx "$id" || break
        ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
        sleep 0.1
      done
    done
    for id in $(ctr_ containers ls -q 2>/dev/null || true); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
    [ -z "$ids" ] || say "killed $(echo "$ids" | wc -w) container task(s) left behind"
  fi
  stop_pidfile containerd "$run/containerd.pid" 20
  # Leftover runc shims of this containerd (they outlive it by design).
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $sock" 2>/dev/null || true
  # Network namespaces made for the pods (absent before start).
  if [ -e "$run/netns-before" ]; then
    for ns in $(ls /var/run/netns 2>/dev/null | sort | comm -13 "$run/netns-before" -); do
      case "$ns" in cni-*) umount "/var/run/netns/$ns" 2>/dev/null || true; rm -f "/var/run/netns/$ns" ;; esac
    done
  fi
  ip link del "$bridge" 2>/dev/null || true
  # Mounts under DIR/node (overlay snapshots, the kubelet's volumes and its root bind mount), innermost first.
  awk -v p="$node/" '$5 == substr(p, 1, length(p) - 1) || index($5, p) == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  # iptables chains the kubelet and the CNI plugins made (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
  # KUBE-IPTABLES-HINT, CNI-FORWARD, CNI-ADMIN, …): the rules that jump to them, then the chains.
  local ipt fam
  for fam in 4 6; do
    [ -e "$run/chains$fam-before" ] || continue
    ipt=iptables
    [ $fam = 4 ] || ipt=ip6tables
    chains "$ipt" | comm -13 "$run/chains$fam-before" - | while read -r table chain; do
      "$ipt" -w -t "$table" -S 2>/dev/null | grep -- "-j $chain\( \|$\)" | grep -v "^-A $chain " |
        sed 's/^-A //' | while read -r rule; do eval "$ipt -w -t $table -D $rule" 2>/dev/null || true; done
    done
    chains "$ipt" | comm -13 "$run/chains$fam-before" - | while read -r table chain; do
      "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    chains "$ipt" | comm -13 "$run/chains$fam-before" - | while read -r table chain; do
      "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  # The kubelet's cgroups (cgroupfs driver: kubepods in every hierarchy), deepest first.
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # Fixed paths the kubelet creates whatever its --root-dir.
  if [ -e "$run/node-before" ] && ! grep -q '^had /var/lib/kubelet' "$run/node-before"; then
    rm -rf /var/lib/kubelet
  fi
  if [ -e "$run/node-before" ]; then
    sed -n 's/^sysctl //p' "$run/node-before" | while read -r s; do
      [ "${s#*=}" = absent ] || sysctl -qw "$s" 2>/dev/null || true
    done
    rm -f "$run/node-before" "$run/chains4-before" "$run/chains6-before" "$run/netns-before"
  fi
  say "node stopped; host restored"
}

"$cmd"
