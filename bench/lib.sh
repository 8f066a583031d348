# What the bench scripts share (sourced): their settings from the environment, a work
# directory and the processes started in it, both cleaned up on exit, and their helpers.
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
# spawn NAME COMMAND...: COMMAND in the background, its output in $WORK/NAME.out.
spawn() {
    local name=$1; shift
    "$@" >"$WORK/$name.out" 2>&1 &
    PIDS+=($!)
    echo $! >"$WORK/$name.pid"
}
# wait_url URL: until URL answers 200 (10 s at most).
wait_url() {
    for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return; sleep 0.1; done
    echo "bench: $1 does not answer" >&2
    exit 1
}
# plughost_toml NAME PORT TOML: $WORK/NAME.toml, a plughost on loopback PORT (0: any) with
# no admin, its log in $WORK, a compiled cache shared by the run, and TOML.
plughost_toml() {
    cat >"$WORK/$1.toml" <<CFG
port = $2
bind = "127.0.0.1"
admin = "off"
log_file = "$WORK/$1.log"
log_stderr = false
wasm_cache_dir = "$WORK/cache"
$3
CFG
}
# plughost_at REV: the path of a release plughost built from commit REV (a baseline measured
# in the same run as today's), built once into target/bench/ from a worktree that shares
# target/ (only plughost itself and what changed since are compiled again). Rebuilds today's
# binary afterwards, as the worktree's build replaced target/release/plughost.
plughost_at() {
    local rev out src
    rev=$(git rev-parse --short "$1") out=$PWD/target/bench/plughost-$rev
    if [ ! -x "$out" ]; then
        src="$WORK/src-$rev"
        git worktree add -q --detach "$src" "$rev" >&2
        (cd "$src" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release -q -p plughost >&2)
        mkdir -p target/bench && cp target/release/plughost "$out"
        git worktree remove --force "$src" >&2
        cargo build --release -q -p plughost >&2
    fi
    echo "$out"
}
