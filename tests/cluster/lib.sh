# Shared by control-plane.sh and up.sh (sourced, not run).

# daemon LOG CMD...: run CMD in the background in a new session (own process group, pgid = its
# pid, which is $!), stdin /dev/null, stdout+stderr appended to LOG, and no other inherited
# descriptor (so it never holds a pipe of whoever called us, and a caller waiting for EOF is not
# kept waiting).
daemon() {
  local log=$1
  shift
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@"
  ) >>"$log" 2>&1 </dev/null &
}

# watchdog DIR HERE: when KUBESTYLE_CLUSTER_WATCH_PID is set, run `HERE/down.sh DIR` once that
# process is gone (so that a crashed test run leaves nothing behind); its pid in DIR/run.
watchdog() {
  [ -n "${KUBESTYLE_CLUSTER_WATCH_PID:-}" ] || return 0
  daemon "$1/logs/watchdog.log" env KUBESTYLE_WATCHDOG=1 \
    bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; exec "$2" "$3"' \
    watchdog "$KUBESTYLE_CLUSTER_WATCH_PID" "$2/down.sh" "$1"
  echo $! >"$1/run/watchdog.pid"
}
