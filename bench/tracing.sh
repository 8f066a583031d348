#!/usr/bin/env bash
# What tracing costs: the cache hit, one wasm filter on a hit, and the round-robin proxy, each
# run by plughost built before tracing existed (BENCH_TRACING_BEFORE, default ec3b76d, built
# once into target/bench/), and by today's with [tracing] off, on with 1% of new traces
# sampled, and on with all of them, exporting to a sink that accepts every batch (a hyper
# hello server: the exporter only needs a 200); and the proxy with all sampled to a dead
# collector (a closed port). For each, wrk -t1 -c64 --latency, BENCH_ROUNDS rounds (3) of
# BENCH_DURATION s (5), systems alternating; medians of req/s, of plughost's CPU time per
# request (user + system, from /proc around each run: steadier than req/s on a 2-core machine
# that wrk shares) and of p50/p99 latency, with ratios to the same path in the same run; then
# each path's instructions per request under callgrind, the steady measure.
# Run by `make bench` (bench/run.sh); alone: bash bench/tracing.sh (BENCH_QUICK=1: 2 s runs).
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
DURATION=${BENCH_DURATION:-$([ "$QUICK" = 1 ] && echo 2 || echo 5)}

scripts/need.sh wrk wrk
cargo build --release -q -p plughost -p plughost-bench
cargo build -q -p plughost-e2e   # its build script builds every plugin
WASM_DIR=$PWD/plugins/target/wasm32-wasip2/release
PLUGHOST=$PWD/target/release/plughost
HYPER=$PWD/target/release/hyper-hello
BEFORE=$(plughost_at "${BENCH_TRACING_BEFORE:-ec3b76d}")

B1=$(free_port) B2=$(free_port) SINK=$(free_port)
spawn backend1 "$HYPER" "127.0.0.1:$B1"
spawn backend2 "$HYPER" "127.0.0.1:$B2"
spawn sink "$HYPER" "127.0.0.1:$SINK"
for p in $B1 $B2 $SINK; do wait_url "http://127.0.0.1:$p/"; done

declare -A URL
# system NAME TOML [BINARY]
system() {
    local port; port=$(free_port)
    plughost_toml "$1" "$port" "$2"
    spawn "$1" "${3:-$PLUGHOST}" --config "$WORK/$1.toml"
    URL[$1]="http://127.0.0.1:$port/"
}
FILTER="[[plugins]]
name = \"headers\"
file = \"$WASM_DIR/headers.wasm\"
config = { request = { name = \"x-a\", value = \"1\" }, response = { name = \"x-b\", value = \"2\" } }"
PROXY="cache_capacity = 0
[upstreams.b]
servers = [\"127.0.0.1:$B1\", \"127.0.0.1:$B2\"]
[[routes]]
prefix = \"/\"
upstream = \"b\""
# traced RATIO [PORT]: [tracing] to the sink (or to PORT), sampling RATIO of new traces.
traced() { printf '[tracing]\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsample_ratio = %s\n' "${2:-$SINK}" "$1"; }
DEAD=$(free_port)   # nothing listens there
ORDER=()
for path in hit filter proxy; do
    case $path in
        hit) toml="" ;;
        filter) toml=$FILTER ;;
        proxy) toml=$PROXY ;;
    esac
    system "$path-before" "$toml" "$BEFORE"
    system "$path-off" "$toml"
    system "$path-1pct" "$toml
$(traced 0.01)"
    system "$path-all" "$toml
$(traced 1.0)"
    ORDER+=("$path-before" "$path-off" "$path-1pct" "$path-all")
done
system proxy-dead "$PROXY
$(traced 1.0 "$DEAD")"
ORDER+=(proxy-dead)
for sys in "${ORDER[@]}"; do wait_url "${URL[$sys]}"; done

RAW="$WORK/raw.tsv"
# ticks PID: its user + system clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "bench tracing: $ROUNDS rounds x ${DURATION}s per system, wrk -t1 -c$CONNS" >&2
for round in $(seq "$ROUNDS"); do
    for sys in "${ORDER[@]}"; do
        pid=$(cat "$WORK/$sys.pid")
        before=$(ticks "$pid")
        out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${URL[$sys]}")
        after=$(ticks "$pid")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" \
            "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '/requests in/ {print $1}' <<<"$out")" \
            "$((after - before))" "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
            "$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')" >>"$RAW"
    done
    echo "  round $round done" >&2
done
# The same paths' instructions per request under callgrind (bench/profile.py: the filter
# path is its one-filter-both), which repeat run after run where req/s and CPU time move by
# more than tracing's cost: today's binary off, on with nothing sampled and with all sampled,
# and the binary from before tracing.
IR="$WORK/ir.tsv"
scripts/need.sh valgrind valgrind
for sys in before off unsampled all; do
    bin=$PLUGHOST ratio=""
    case $sys in
        before) bin=$BEFORE ;;
        unsampled) ratio=0.0 ;;
        all) ratio=1.0 ;;
    esac
    PROFILE_TRACE_RATIO=$ratio PROFILE_SUMMARY=1 PROFILE_PATHS=cache-hit,one-filter-both,proxy \
        python3 bench/profile.py "$bin" "$WASM_DIR" "$WORK/prof-$sys" 2000 | sed "s/^/$sys\t/" >>"$IR"
    echo "  callgrind $sys done" >&2
done
python3 bench/tracing_report.py "$RAW" "$(getconf CLK_TCK)" "$IR"
