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
