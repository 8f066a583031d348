#!/usr/bin/env bash
# What tracing costs: the cache hit, one wasm filter on a hit, and the round-robin proxy,
# each with [tracing] off, on with 1% of new traces sampled, and on with all of them, exporting
# to a sink that accepts every batch (a hyper hello server: the exporter only needs a 200).
# wrk -t1 -c64, BENCH_ROUNDS rounds (3) of BENCH_DURATION s (5), systems alternating; medians,
# and each traced system's ratio to the same path untraced in the same run.
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

B1=$(free_port) B2=$(free_port) SINK=$(free_port)
spawn backend1 "$HYPER" "127.0.0.1:$B1"
spawn backend2 "$HYPER" "127.0.0.1:$B2"
spawn sink "$HYPER" "127.0.0.1:$SINK"
for p in $B1 $B2 $SINK; do wait_url "http://127.0.0.1:$p/"; done

declare -A URL
# system NAME TOML
system() {
    local port; port=$(free_port)
    plughost_toml "$1" "$port" "$2"
    spawn "$1" "$PLUGHOST" --config "$WORK/$1.toml"
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
traced() { printf '[tracing]\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsample_ratio = %s\n' "$SINK" "$1"; }
ORDER=()
for path in hit filter proxy; do
    case $path in
        hit) toml="" ;;
        filter) toml=$FILTER ;;
        proxy) toml=$PROXY ;;
    esac
    system "$path-off" "$toml"
    system "$path-1pct" "$toml
$(traced 0.01)"
    system "$path-all" "$toml
$(traced 1.0)"
    ORDER+=("$path-off" "$path-1pct" "$path-all")
done
for sys in "${ORDER[@]}"; do wait_url "${URL[$sys]}"; done

RAW="$WORK/raw.tsv"
echo "bench tracing: $ROUNDS rounds x ${DURATION}s per system, wrk -t1 -c$CONNS" >&2
for round in $(seq "$ROUNDS"); do
    for sys in "${ORDER[@]}"; do
        out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "${URL[$sys]}")
        printf '%s\t%s\t%s\n' "$sys" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
            "$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')" >>"$RAW"
    done
    echo "  round $round done" >&2
done
python3 - "$RAW" <<'PY'
import statistics, sys
from collections import defaultdict
runs, errors = defaultdict(list), defaultdict(str)
for line in open(sys.argv[1]):
    sys_, rps, err = (line.rstrip("\n").split("\t") + [""])[:3]
    runs[sys_].append(float(rps))
    errors[sys_] += err
med = {k: statistics.median(v) for k, v in runs.items()}
print("| path | tracing off req/s | 1% sampled | all sampled | 1% vs off | all vs off |")
print("|---|---:|---:|---:|---:|---:|")
for path in ("hit", "filter", "proxy"):
    off, one, every = med[f"{path}-off"], med[f"{path}-1pct"], med[f"{path}-all"]
    print(f"| {path} | {off:,.0f} | {one:,.0f} | {every:,.0f} | {one/off:.2f}x | {every/off:.2f}x |")
bad = {k: v for k, v in errors.items() if v.strip()}
if bad:
    print("\nerrors: " + "; ".join(f"{k}: {v.strip()}" for k, v in bad.items()))
PY
