#!/usr/bin/env bash
# The serving design's figures (issue 33), in one run, on loopback only: each system at 1 and
# 2 workers, driven by wrk with 1 and then 2 threads (64 connections), in turn for
# BENCH_ROUNDS rounds, with the CPU time each request cost the server and, for the proxies,
# its two backends, read from /proc around each run (no tracer attached). Systems:
#   route    plughost's default route, cache off        nginx     nginx `return 200`, same body
#   hit      a cache hit                                hyper     bare hyper hello (tokio threads)
#   filter   a hit through one wasm filter (headers)
#   proxy    round robin over two hyper-hello backends  nginx-proxy, haproxy-proxy: the same
# nginx runs N worker processes, HAProxy N threads, hyper N tokio threads, plughost N
# `workers`. With BENCH_BEFORE=PATH, another plughost binary (one built before the worker
# threads: its runtime gets N threads) is measured beside them as before-*.
# BENCH_SYSTEMS="proxy nginx-proxy ..." measures only those (each at both worker counts).
# Run by `make bench` (bench/run.sh); alone: bash bench/workers.sh (BENCH_QUICK=1: 2 s runs).
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
DURATION=${BENCH_DURATION:-$([ "$QUICK" = 1 ] && echo 2 || echo 5)}

scripts/need.sh wrk wrk
scripts/need.sh nginx nginx-light
scripts/need.sh haproxy haproxy
cargo build --release -q -p plughost -p plughost-bench
cargo build -q -p plughost-e2e   # its build script builds every plugin
WASM_DIR=$PWD/plugins/target/wasm32-wasip2/release
PLUGHOST=$PWD/target/release/plughost
HYPER=$PWD/target/release/hyper-hello

B1=$(free_port) B2=$(free_port)
spawn backend1 "$HYPER" "127.0.0.1:$B1"
spawn backend2 "$HYPER" "127.0.0.1:$B2"
wait_url "http://127.0.0.1:$B1/"
wait_url "http://127.0.0.1:$B2/"

declare -A URL SERVER
# plughost_system NAME WORKERS BINARY EXTRA_TOML PATH
plughost_system() {
    local port; port=$(free_port)
    plughost_toml "$1" "$port" "$4"
    # An older binary knows no `workers`: its one runtime gets the threads instead.
    TOKIO_WORKER_THREADS=$2 PLUGHOST_WORKERS=$2 spawn "$1" "$3" --config "$WORK/$1.toml"
    URL[$1]="http://127.0.0.1:$port$5"
    SERVER[$1]=$(cat "$WORK/$1.pid")
}
PROXY_TOML="cache_capacity = 0
[upstreams.b]
servers = [\"127.0.0.1:$B1\", \"127.0.0.1:$B2\"]
[[routes]]
prefix = \"/\"
upstream = \"b\""
FILTER_TOML="[[plugins]]
name = \"headers\"
file = \"$WASM_DIR/headers.wasm\"
config = { request = { name = \"x-a\", value = \"1\" }, response = { name = \"x-b\", value = \"2\" } }"
ORDER=()
for w in 1 2; do
    plughost_system "route-w$w" $w "$PLUGHOST" "cache_capacity = 0" /
    plughost_system "hit-w$w" $w "$PLUGHOST" "" /
    plughost_system "filter-w$w" $w "$PLUGHOST" "$FILTER_TOML" /
    plughost_system "proxy-w$w" $w "$PLUGHOST" "$PROXY_TOML" /
    ORDER+=("route-w$w" "hit-w$w" "filter-w$w" "proxy-w$w")
    if [ -n "${BENCH_BEFORE:-}" ]; then
        plughost_system "before-route-w$w" $w "$BENCH_BEFORE" "cache_capacity = 0" /
        plughost_system "before-hit-w$w" $w "$BENCH_BEFORE" "" /
        plughost_system "before-proxy-w$w" $w "$BENCH_BEFORE" "$PROXY_TOML" /
        ORDER+=("before-route-w$w" "before-hit-w$w" "before-proxy-w$w")
    fi
done
for name in "${!URL[@]}"; do wait_url "${URL[$name]}"; done
BODY=$(curl -s "${URL[route-w1]}")

for w in 1 2; do
    np=$(free_port) npp=$(free_port) hp=$(free_port) hy=$(free_port)
    mkdir -p "$WORK/nginx-w$w"
    cat >"$WORK/nginx-w$w/nginx.conf" <<CFG
worker_processes $w;
pid $WORK/nginx-w$w/nginx.pid;
error_log $WORK/nginx-w$w/error.log;
events { worker_connections 4096; }
http {
    access_log $WORK/nginx-w$w/access.log combined buffer=64k;
    client_body_temp_path $WORK/nginx-w$w;
    proxy_temp_path $WORK/nginx-w$w;
    fastcgi_temp_path $WORK/nginx-w$w;
    uwsgi_temp_path $WORK/nginx-w$w;
    scgi_temp_path $WORK/nginx-w$w;
    upstream b { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 64; }
    server {
        listen 127.0.0.1:$np;
        location / {
            default_type "text/plain; charset=utf-8";
            return 200 "$(printf '%s' "$BODY" | sed 's/"/\\"/g')\n";
        }
    }
    server {
        listen 127.0.0.1:$npp;
        location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CFG
    spawn "nginx-w$w" nginx -p "$WORK/nginx-w$w" -c "$WORK/nginx-w$w/nginx.conf" -g 'daemon off;'
    URL[nginx-w$w]="http://127.0.0.1:$np/" URL[nginx-proxy-w$w]="http://127.0.0.1:$npp/"
    SERVER[nginx-w$w]=$(cat "$WORK/nginx-w$w.pid") SERVER[nginx-proxy-w$w]=${SERVER[nginx-w$w]}
    cat >"$WORK/haproxy-w$w.cfg" <<CFG
global
    nbthread $w
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend f
    bind 127.0.0.1:$hp
    default_backend b
backend b
    balance roundrobin
    server s1 127.0.0.1:$B1
    server s2 127.0.0.1:$B2
CFG
    spawn "haproxy-w$w" haproxy -db -f "$WORK/haproxy-w$w.cfg"
    URL[haproxy-proxy-w$w]="http://127.0.0.1:$hp/" SERVER[haproxy-proxy-w$w]=$(cat "$WORK/haproxy-w$w.pid")
    TOKIO_WORKER_THREADS=$w spawn "hyper-w$w" "$HYPER" "127.0.0.1:$hy"
    URL[hyper-w$w]="http://127.0.0.1:$hy/" SERVER[hyper-w$w]=$(cat "$WORK/hyper-w$w.pid")
    for name in "nginx-w$w" "nginx-proxy-w$w" "haproxy-proxy-w$w" "hyper-w$w"; do wait_url "${URL[$name]}"; done
    ORDER+=("nginx-w$w" "hyper-w$w" "nginx-proxy-w$w" "haproxy-proxy-w$w")
done
if [ -n "${BENCH_SYSTEMS:-}" ]; then
    KEEP=()
    for sys in "${ORDER[@]}"; do
        [[ " $BENCH_SYSTEMS " == *" ${sys%-w[12]} "* ]] && KEEP+=("$sys")
    done
    ORDER=("${KEEP[@]}")
fi
for name in "${ORDER[@]}"; do curl -sf -o /dev/null "${URL[$name]}"; done

# tree PID: it and its children (nginx's workers).
tree() { echo "$1"; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done; }
# ticks PIDS...: user and system clock ticks of the processes and their children, summed.
ticks() {
    local u=0 s=0 uu ss
    for p in "$@"; do
        for q in $(tree "$p"); do
            read -r uu ss < <(awk '{print $14, $15}' "/proc/$q/stat" 2>/dev/null || echo "0 0")
            u=$((u + uu)) s=$((s + ss))
        done
    done
    echo "$u $s"
}
RAW="$WORK/raw.tsv"
# measure ROUND SYSTEM THREADS: one wrk run and its CPU, recorded.
measure() {
    local before backends_before out after backends_after
    before=$(ticks "${SERVER[$2]}") backends_before=$(ticks "$(cat "$WORK/backend1.pid")" "$(cat "$WORK/backend2.pid")")
    out=$(wrk -t"$3" -c"$CONNS" -d"${DURATION}s" "${URL[$2]}")
    after=$(ticks "${SERVER[$2]}") backends_after=$(ticks "$(cat "$WORK/backend1.pid")" "$(cat "$WORK/backend2.pid")")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" \
        "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '/requests in/ {print $1}' <<<"$out")" \
        "$before $after" "$backends_before $backends_after" \
        "$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')" >>"$RAW"
}
echo "bench workers: $ROUNDS rounds x ${DURATION}s per system and wrk thread count, -c$CONNS" >&2
for round in $(seq "$ROUNDS"); do
    for threads in 1 2; do
        for sys in "${ORDER[@]}"; do measure "$round" "$sys" "$threads"; done
    done
    echo "  round $round done" >&2
done
python3 bench/workers_report.py "$RAW" "$(getconf CLK_TCK)"
