#!/usr/bin/env bash
# WASI 0.3 figures (issue 32), in one run, on loopback only, each system driven by wrk in turn
# (A B C ... for BENCH_ROUNDS rounds, so the machine's drift falls on all alike):
#   p3-plughost        the 0.3 hello service (plugins/rust/p3-hello) in plughost, cache off
#   p3-wasmtime        `wasmtime serve -S p3` 48.0.8 of the same component, its defaults
#   p3-wasmtime-reuse  the same with its best reuse flags (instances kept, 16 requests each)
#   filter-hit         a cache hit through plughost's own-world filter adding a request and a
#                      response header (plugins/rust/headers, as `make bench`'s plughost-filter)
#   mw-hit             a cache hit through a 0.3 middleware doing the same (plugins/test/p3-middleware)
#   out-1x16           a 0.3 service making one outbound call per request to a hyper-hello
#                      backend: 1 instance serving 16 requests at once
#   out-16x1           the same: 16 instances, one request each at a time
# Printed: medians over the rounds (req/s, p50, p99), the ratios the issue targets, and each
# plughost's RSS after its runs. Run by `make bench` (bench/run.sh); alone:
#   bash bench/wasi_p3.sh   (BENCH_QUICK=1 for 2 s runs, BENCH_PEERS=0 without wasmtime serve)
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh

scripts/need.sh wrk wrk
cargo build --release -q -p plughost -p plughost-bench
cargo build -q -p plughost-e2e   # its build script builds every plugin
WASM_DIR=$PWD/plugins/target/wasm32-wasip2/release


# start NAME CONFIG: plughost with CONFIG on a free port, once it says it is ready; prints ADDR.
start() {
    plughost_toml "$1" 0 "$2"
    target/release/plughost --config "$WORK/$1.toml" >"$WORK/$1.out" 2>"$WORK/$1.err" &
    PIDS+=($!)
    echo $! >"$WORK/$1.pid"
    for _ in $(seq 600); do
        if grep -qx 'plughost ready' "$WORK/$1.out"; then
            sed -n 's|^plughost listening on http://||p' "$WORK/$1.out" | head -n1
            return
        fi
        sleep 0.1
    done
    echo "bench: $1 did not start: $(cat "$WORK/$1.err")" >&2
    exit 1
}

BACKEND=$(target/release/hyper-hello 127.0.0.1:0 >"$WORK/backend.out" 2>&1 & PIDS+=($!); sleep 0.5; sed -n 's|^listening on http://||p' "$WORK/backend.out" | head -n1)
[ -n "$BACKEND" ] || { echo "bench: hyper-hello backend did not start" >&2; exit 1; }
declare -A URL
URL[p3-plughost]="http://$(start p3-plughost "cache_capacity = 0
[[plugins]]
name = \"hello\"
file = \"$WASM_DIR/p3_hello.wasm\"
kind = \"wasi-http\"
[[routes]]
prefix = \"/hello\"
plugin = \"hello\"")/hello"
URL[filter-hit]="http://$(start filter-hit "[[plugins]]
name = \"headers\"
file = \"$WASM_DIR/headers.wasm\"
config = { request = { name = \"x-a\", value = \"1\" }, response = { name = \"x-b\", value = \"2\" } }")/"
URL[mw-hit]="http://$(start mw-hit "[[plugins]]
name = \"mw\"
file = \"$WASM_DIR/p3_middleware.wasm\"
kind = \"middleware\"")/"
outbound() { # outbound NAME INSTANCES CONCURRENT
    start "$1" "cache_capacity = 0
[[plugins]]
name = \"svc\"
file = \"$WASM_DIR/p3_service.wasm\"
kind = \"wasi-http\"
timeout = \"5s\"
instances = $2
max_concurrent_requests = $3
allowed_outbound = [\"http://$BACKEND\"]
[[routes]]
prefix = \"/svc\"
plugin = \"svc\""
}
URL[out-1x16]="http://$(outbound out-1x16 1 16)/svc/outbound?url=http://$BACKEND/"
URL[out-16x1]="http://$(outbound out-16x1 16 1)/svc/outbound?url=http://$BACKEND/"
ORDER=(p3-plughost filter-hit mw-hit out-1x16 out-16x1)
for sys in "${ORDER[@]}"; do
    curl -sf "${URL[$sys]}" >/dev/null || { echo "bench: $sys not answering: $(cat "$WORK/$sys.log" | tail -3)" >&2; exit 1; }
done

if [ "${BENCH_PEERS:-1}" != 0 ]; then
    PEERS=$PWD/target/bench-peers
    [ -x "$PEERS/bin/wasmtime" ] || cargo install -q --locked --root "$PEERS" wasmtime-cli@48.0.8
    serve_peer() { # serve_peer NAME FLAGS...
        local name=$1 port; shift
        port=$(free_port)
        # -S cli: Rust's std on wasm32-wasip2 imports wasi:cli, which serve omits by default.
        "$PEERS/bin/wasmtime" serve -S cli -S p3 "$@" --addr "127.0.0.1:$port" "$WASM_DIR/p3_hello.wasm" \
            >"$WORK/$name.out" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/hello" >/dev/null && break; sleep 0.1; done
        curl -sf "http://127.0.0.1:$port/hello" >/dev/null || { echo "bench: $name not answering: $(cat "$WORK/$name.out")" >&2; exit 1; }
        URL[$name]="http://127.0.0.1:$port/hello"
        ORDER+=("$name")
    }
    serve_peer p3-wasmtime
    serve_peer p3-wasmtime-reuse -O pooling-allocator=y --max-instance-reuse-count 100000 \
        --max-instance-concurrent-reuse-count 16 --idle-instance-timeout 60s
fi

RAW="$WORK/raw.tsv"
echo "bench: WASI 0.3, $ROUNDS rounds x ${DURATION}s per system, wrk -t2 -c$CONNS, loopback" >&2
for round in $(seq "$ROUNDS"); do
    for sys in "${ORDER[@]}"; do
        out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${URL[$sys]}")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1=="50%" {print $2}' <<<"$out")
        p99=$(awk '$1=="99%" {print $2}' <<<"$out")
        errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sys" "$rps" "$p50" "$p99" "$errs" >>"$RAW"
        printf '  round %s  %-18s %10s req/s  p50 %-8s p99 %-8s %s\n' "$round" "$sys" "$rps" "$p50" "$p99" "$errs" >&2
    done
done
for sys in "${ORDER[@]}"; do
    [ -f "$WORK/$sys.pid" ] && printf 'rss\t%s\t%s\n' "$sys" "$(rss_kib "$(cat "$WORK/$sys.pid")")" >>"$RAW"
done
python3 - "$RAW" "$DURATION" "$ROUNDS" "$CONNS" <<'PY'
import statistics, sys
raw, duration, rounds, conns = sys.argv[1:5]
runs, rss = {}, {}
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
for line in open(raw):
    f = line.rstrip("\n").split("\t")
    if f[0] == "rss":
        rss[f[1]] = int(f[2])
        continue
    runs.setdefault(f[1], []).append((float(f[2]), ms(f[3]), ms(f[4]), f[5].strip()))
med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
           statistics.median(r[2] for r in v), "; ".join(sorted({r[3] for r in v if r[3]}))) for k, v in runs.items()}
print(f"WASI 0.3 (wrk -t2 -c{conns}, {rounds} interleaved rounds of {duration} s, medians):")
print()
print("| system | req/s | p50 ms | p99 ms | RSS after (MiB) | errors |")
print("|---|---:|---:|---:|---:|---|")
for k, (rps, p50, p99, errs) in med.items():
    r = f"{rss[k] / 1024:.0f}" if k in rss else ""
    print(f"| {k} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {r} | {errs} |")
print()
def ratio(a, b, what):
    if a in med and b in med:
        print(f"- {what}: {med[a][0] / med[b][0]:.2f}x ({a} / {b})")
best = max((k for k in ("p3-wasmtime", "p3-wasmtime-reuse") if k in med), key=lambda k: med[k][0], default=None)
if best:
    ratio("p3-plughost", best, "0.3 hello, plughost against wasmtime serve's best (target >= 1.5x)")
ratio("filter-hit", "mw-hit", "cache hit with plughost's own filter / with a 0.3 middleware doing the same (cost ratio = this; target <= 1.2x)")
ratio("out-1x16", "out-16x1", "outbound service, 1 instance x 16 concurrent / 16 instances x 1")
PY
