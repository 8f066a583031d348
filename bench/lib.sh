# What the bench scripts share (sourced): their settings from the environment, a work
# directory and the processes started in it, both cleaned up on exit, and two helpers.
QUICK=${BENCH_QUICK:-0}
DURATION=${BENCH_DURATION:-$([ "$QUICK" = 1 ] && echo 2 || echo 7)}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=64
WORK=$(mktemp -d)
PIDS=()

# Processes started inside `$(...)` record themselves in $WORK/NAME.pid, as PIDS does not
# survive the subshell.
cleanup() {
    for pid in "${PIDS[@]}" $(cat "$WORK"/*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
