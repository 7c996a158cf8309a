#!/usr/bin/env bash
# Stop everything tests/cluster/up.sh or up-real.sh started for DIR: the watchdog, the process
# kubelet (which TERMs/KILLs its pods' processes) and any container process group it left behind, or
# the real node (real-node/node.sh stop), then the control
# plane (control-plane.sh stop DIR). Safe to run twice; DIR itself is kept (rm -rf it yourself).
#
# usage: tests/cluster/down.sh DIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "down.sh: no such directory: $1" >&2; exit 1; }
dir=$(cd "$1" && pwd)

group_alive() {
  ps -e -o pgid=,stat= 2>/dev/null | awk -v pg="$1" '$1 == pg && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

stop_group() { # NAME PGID GRACE
  local name=$1 pg=$2 grace=$3
  group_alive "$pg" || return 0
  kill -TERM -- "-$pg" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while group_alive "$pg" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if group_alive "$pg"; then
    echo "down.sh: $name (pgid $pg) still running after ${grace}s: KILL" >&2
    kill -KILL -- "-$pg" 2>/dev/null || true
    while group_alive "$pg"; do sleep 0.1; done
  fi
  echo "down.sh: stopped $name (pgid $pg)" >&2
}

if [ -z "${KUBESTYLE_WATCHDOG:-}" ] && [ -s "$dir/run/watchdog.pid" ]; then
  stop_group watchdog "$(cat "$dir/run/watchdog.pid")" 5
  rm -f "$dir/run/watchdog.pid"
fi
if [ -s "$dir/run/process-kubelet.pid" ]; then
  stop_group process-kubelet "$(cat "$dir/run/process-kubelet.pid")" 20
  rm -f "$dir/run/process-kubelet.pid"
fi
# Container process groups left behind (only if the kubelet could not clean up, e.g. SIGKILLed).
# A group is only touched if its leader still runs in a directory of this cluster.
if [ -d "$dir/kubelet/pgids" ]; then
  for f in "$dir"/kubelet/pgids/*; do
    [ -e "$f" ] || continue
    pg=$(basename "$f")
    cwd=$(readlink "/proc/$pg/cwd" 2>/dev/null || true)
    if [ -n "$cwd" ] && [ "${cwd#"$dir"/}" != "$cwd" ]; then
      stop_group "container process" "$pg" 5
    fi
    rm -f "$f"
  done
fi
# A real node (up-real.sh): kubelet, its pods, containerd, CNI, and what they changed on the host.
if [ -d "$dir/node" ]; then
  "$here/real-node/node.sh" stop "$dir"
fi
"$here/control-plane.sh" stop "$dir"
