#!/usr/bin/env bash
# make bench: plughost against its references, in one run, on loopback only.
#
# Systems under test, each driven by wrk (64 connections, 2 threads) in turn, A B C D A B C D ...
# for BENCH_ROUNDS rounds, so the machine's drift falls on all of them alike (then the ones
# issue 17's request-cost ratios compare, again with one wrk thread):
#   plughost-route  plughost with the cache off: every request runs the default route
#   plughost-hit    plughost with the default cache: every request after the first is a hit
#   nginx           Debian's nginx, `return 200` with the same body, 2 workers, buffered access log
#   hyper-hello     a bare hyper 1.x hello world (bench/src/hyper_hello.rs): the ceiling
#   plughost-filter plughost-hit plus one wasm filter (plugins/rust/headers) on every request
#   plughost-filter-lean  the same filter given no request headers and no body
#                   (`request_headers = []`, `request_body = false`)
#   plughost-wasm   the hello wasm responder on /hello, cache off (compare with plughost-route);
#                   -fresh and -max100: the same with reuse = "fresh" and max_requests = 100
#   plughost-wasihttp  that same wasi:http hello component in plughost (kind = "wasi-http",
#                   pooled, cache off); -fresh: with reuse = "fresh"
#   wasmtime-serve  `wasmtime serve` 48 with the wasi:http hello component, its defaults (a
#                   fresh instance per request); -reuse: with its instance-reuse flags
#                   (BENCH_PEERS=0 skips both)
#   plughost-outbound  a responder making one outbound call per request to a hyper-hello
#                   backend (the hostile test plugin's `fetch` mode), against plughost-proxy1,
#                   the reverse proxy to that same backend
#   plughost-native plughost-hit plus the C counter observer (plugins/native/examples/counter.c)
#   plughost-proxy  reverse proxy, round robin over two hyper-hello backends, cache off
#   nginx-proxy     nginx doing the same round robin, keep-alive upstream connections
#   haproxy-proxy   Debian's HAProxy doing the same round robin (2 threads, `http-reuse always`)
#   caddy, caddy-proxy  Debian's Caddy: a static `respond` with the same body, and
#                   `reverse_proxy` round robin over the same backends, access logs on
#                   (BENCH_PEERS=0 skips these and the wasmtime ones)
# Medians over the rounds are reported with the ratios the issues target. Then: start-up time
# with 10 wasm plugins, cold and from the compiled cache, criterion's in-process plugin call
# costs, per-language figures of the example plugins (bench/languages.py), and how cost grows
# with filters, body size, connections and cache capacity (bench/scaling.py, drawn as SVG
# charts in bench/results by bench/src/charts.rs); last, the WASI 0.3 figures (bench/wasi_p3.sh).
#
# Environment: BENCH_QUICK=1 (2 s runs, short criterion and scaling runs: under 2 minutes once
# built), BENCH_DURATION (seconds per run, default 7: under 10 minutes), BENCH_ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
CRITERION=()
[ "$QUICK" = 1 ] && CRITERION=(-- --warm-up-time 0.2 --measurement-time 0.4)
RESULTS=bench/results

scripts/need.sh wrk wrk
scripts/need.sh nginx nginx-light
NGINX=$(command -v nginx)

cargo build --release -q -p plughost -p plughost-bench
cargo build --release -q -p plughost --benches
cargo build -q -p plughost-e2e   # its build script builds every plugin (make plugins)
WASM_DIR=$PWD/plugins/target/wasm32-wasip2/release
NATIVE_DIR=$PWD/plugins/target/native
# bench/peers/wasi-http-hello, built by the e2e tests' build script as it is built for the peer.
HTTP_HELLO=$PWD/plugins/target/peers/wasm32-wasip2/release/wasi_http_hello.wasm


# start NAME PATTERN COMMAND...: runs COMMAND, waits for a stdout line "PATTERN ADDR", prints ADDR.
start() {
    local name=$1 pattern=$2; shift 2
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    echo $! >"$WORK/$name.pid"
    # plughost listens while its plugins load and says `plughost ready` once they have: its
    # routes are measured from then on. (A bound of 60 s: a cold compile of the plugins.)
    for _ in $(seq 600); do
        local addr
        addr=$(sed -n "s|^$pattern http://||p" "$WORK/$name.out" | head -n1)
        if [ -n "$addr" ] && { [[ $pattern != plughost* ]] || grep -qx 'plughost ready' "$WORK/$name.out"; }; then
            echo "$addr"
            return
        fi
        sleep 0.1
    done
    echo "bench: $name did not start: $(cat "$WORK/$name.err")" >&2
    exit 1
}


plughost_config() { # plughost_config NAME EXTRA_TOML
    cat >"$WORK/$1.toml" <<EOF
port = 0
bind = "127.0.0.1"
admin = "off"
log_file = "$WORK/$1.log"
log_stderr = false
$2
EOF
}

plughost_config plughost-route "cache_capacity = 0"
plughost_config plughost-hit ""
plughost_config plughost-filter "wasm_cache_dir = \"$WORK/cache\"
[[plugins]]
name = \"headers\"
file = \"$WASM_DIR/headers.wasm\"
config = { request = { name = \"x-a\", value = \"1\" }, response = { name = \"x-b\", value = \"2\" } }"
plughost_config plughost-filter-lean "wasm_cache_dir = \"$WORK/cache\"
[[plugins]]
name = \"headers\"
file = \"$WASM_DIR/headers.wasm\"
request_headers = []
request_body = false
config = { request = { name = \"x-a\", value = \"1\" }, response = { name = \"x-b\", value = \"2\" } }"
wasm_responder() { # wasm_responder NAME REUSE_TOML: the hello responder on /hello, cache off
    plughost_config "$1" "cache_capacity = 0
wasm_cache_dir = \"$WORK/cache\"
[[plugins]]
name = \"hello\"
file = \"$WASM_DIR/hello.wasm\"
kind = \"responder\"
$2
[[routes]]
prefix = \"/hello\"
plugin = \"hello\""
}
wasm_responder plughost-wasm ""
wasm_responder plughost-wasm-fresh "reuse = \"fresh\""
wasm_responder plughost-wasm-max100 "max_requests = 100"
wasi_http_responder() { # wasi_http_responder NAME REUSE_TOML: the wasi:http hello on /hello
    plughost_config "$1" "cache_capacity = 0
wasm_cache_dir = \"$WORK/cache\"
[[plugins]]
name = \"hello\"
file = \"$HTTP_HELLO\"
kind = \"wasi-http\"
$2
[[routes]]
prefix = \"/hello\"
plugin = \"hello\""
}
wasi_http_responder plughost-wasihttp ""
wasi_http_responder plughost-wasihttp-fresh "reuse = \"fresh\""
plughost_config plughost-native "[[plugins]]
name = \"counter\"
file = \"$NATIVE_DIR/counter.so\"
config = { every = 1000000 }"
ROUTE=$(start plughost-route "plughost listening on" target/release/plughost --config "$WORK/plughost-route.toml")
HIT=$(start plughost-hit "plughost listening on" target/release/plughost --config "$WORK/plughost-hit.toml")
FILTER=$(start plughost-filter "plughost listening on" target/release/plughost --config "$WORK/plughost-filter.toml")
FILTER_LEAN=$(start plughost-filter-lean "plughost listening on" target/release/plughost --config "$WORK/plughost-filter-lean.toml")
WASM=$(start plughost-wasm "plughost listening on" target/release/plughost --config "$WORK/plughost-wasm.toml")
WASM_FRESH=$(start plughost-wasm-fresh "plughost listening on" target/release/plughost --config "$WORK/plughost-wasm-fresh.toml")
WASM_MAX=$(start plughost-wasm-max100 "plughost listening on" target/release/plughost --config "$WORK/plughost-wasm-max100.toml")
NATIVE=$(start plughost-native "plughost listening on" target/release/plughost --config "$WORK/plughost-native.toml")
WASIHTTP=$(start plughost-wasihttp "plughost listening on" target/release/plughost --config "$WORK/plughost-wasihttp.toml")
WASIHTTP_FRESH=$(start plughost-wasihttp-fresh "plughost listening on" target/release/plughost --config "$WORK/plughost-wasihttp-fresh.toml")
HYPER=$(start hyper-hello "listening on" target/release/hyper-hello 127.0.0.1:0)
BACKEND1=$(start backend1 "listening on" target/release/hyper-hello 127.0.0.1:0)
BACKEND2=$(start backend2 "listening on" target/release/hyper-hello 127.0.0.1:0)
plughost_config plughost-proxy "cache_capacity = 0
[upstreams.bench]
servers = [\"$BACKEND1\", \"$BACKEND2\"]
[[routes]]
prefix = \"/\"
upstream = \"bench\""
PROXY=$(start plughost-proxy "plughost listening on" target/release/plughost --config "$WORK/plughost-proxy.toml")
plughost_config plughost-proxy1 "cache_capacity = 0
[upstreams.bench]
servers = [\"$BACKEND1\"]
[[routes]]
prefix = \"/\"
upstream = \"bench\""
PROXY1=$(start plughost-proxy1 "plughost listening on" target/release/plughost --config "$WORK/plughost-proxy1.toml")
plughost_config plughost-outbound "cache_capacity = 0
[[plugins]]
name = \"fetch\"
file = \"$WASM_DIR/hostile.wasm\"
kind = \"responder\"
allowed_outbound = [\"http://$BACKEND1\"]
config = { mode = \"fetch\", path = \"http://$BACKEND1/\" }
[[routes]]
prefix = \"/fetch\"
plugin = \"fetch\""
OUTBOUND=$(start plughost-outbound "plughost listening on" target/release/plughost --config "$WORK/plughost-outbound.toml")
curl -sf "http://$OUTBOUND/fetch" | grep -q "status=200" || { echo "bench: plughost outbound not answering" >&2; exit 1; }

NGINX_PORT=$(free_port)
NGINX_PROXY_PORT=$(free_port)
BODY=$(curl -s "http://$HIT/")
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log $WORK/nginx/access.log combined buffer=64k;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    upstream bench {
        server $BACKEND1;
        server $BACKEND2;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            default_type "text/plain; charset=utf-8";
            return 200 "$(printf '%s' "$BODY" | sed 's/"/\\"/g')\n";
        }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx.err" &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$NGINX_PROXY_PORT/" >/dev/null || { echo "bench: nginx proxy not answering" >&2; exit 1; }
curl -sf "http://$PROXY/" >/dev/null || { echo "bench: plughost proxy not answering" >&2; exit 1; }

sleep 1
IDLE_RSS=$(rss_kib "$(cat "$WORK/plughost-hit.pid")")

declare -A URL=(
    [plughost-route]="http://$ROUTE/"
    [plughost-hit]="http://$HIT/"
    [nginx]="http://127.0.0.1:$NGINX_PORT/"
    [hyper-hello]="http://$HYPER/"
    [plughost-filter]="http://$FILTER/"
    [plughost-filter-lean]="http://$FILTER_LEAN/"
    [plughost-wasm]="http://$WASM/hello"
    [plughost-wasm-fresh]="http://$WASM_FRESH/hello"
    [plughost-wasm-max100]="http://$WASM_MAX/hello"
    [plughost-native]="http://$NATIVE/"
    [plughost-wasihttp]="http://$WASIHTTP/hello"
    [plughost-wasihttp-fresh]="http://$WASIHTTP_FRESH/hello"
    [plughost-proxy1]="http://$PROXY1/"
    [plughost-outbound]="http://$OUTBOUND/fetch"
    [plughost-proxy]="http://$PROXY/"
    [nginx-proxy]="http://127.0.0.1:$NGINX_PROXY_PORT/"
)
ORDER=(plughost-route plughost-hit plughost-filter plughost-filter-lean plughost-wasm plughost-wasm-fresh plughost-wasm-max100 plughost-native nginx hyper-hello plughost-proxy nginx-proxy plughost-wasihttp plughost-wasihttp-fresh plughost-proxy1 plughost-outbound)

# The peer: `wasmtime serve` (same wasmtime major version as plughost) running a wasi:http
# hello component (bench/peers/wasi-http-hello). Built once into target/bench-peers; BENCH_PEERS=0
# skips it.
if [ "${BENCH_PEERS:-1}" != 0 ]; then
    PEERS=$PWD/target/bench-peers
    [ -x "$PEERS/bin/wasmtime" ] || cargo install -q --locked --root "$PEERS" wasmtime-cli@48.0.8
    # serve_peer NAME FLAGS...: `wasmtime serve` of the hello component on a free port.
    serve_peer() {
        local name=$1 port; shift
        port=$(free_port)
        # -S cli: Rust's std on wasm32-wasip2 imports wasi:cli (environment), which serve omits
        # by default.
        "$PEERS/bin/wasmtime" serve -S cli "$@" --addr "127.0.0.1:$port" "$HTTP_HELLO" \
            >"$WORK/$name.out" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/hello" >/dev/null && break; sleep 0.1; done
        curl -sf "http://127.0.0.1:$port/hello" >/dev/null || { echo "bench: $name not answering: $(cat "$WORK/$name.out")" >&2; exit 1; }
        URL[$name]="http://127.0.0.1:$port/hello"
    }
    serve_peer wasmtime-serve
    # Its best reuse for a p2 component: instances kept for many requests (one at a time each,
    # as p2 requires) in the pooling allocator.
    serve_peer wasmtime-serve-reuse -O pooling-allocator=y --max-instance-reuse-count 100000 --idle-instance-timeout 60s
    ORDER+=(wasmtime-serve wasmtime-serve-reuse)
    # The gateways users weigh plughost against, on the same two backends.
    scripts/need.sh haproxy haproxy
    scripts/need.sh caddy caddy
    HAPROXY_PORT=$(free_port)
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 2
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend pool
backend pool
    balance roundrobin
    server b1 $BACKEND1
    server b2 $BACKEND2
EOF
    haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.out" 2>&1 &
    PIDS+=($!)
    CADDY_PORT=$(free_port)
    CADDY_PROXY_PORT=$(free_port)
    cat >"$WORK/Caddyfile" <<EOF
{
    admin off
    auto_https off
}
http://127.0.0.1:$CADDY_PORT {
    respond "$(printf '%s' "$BODY" | sed 's/"/\\"/g')" 200
    log {
        output file $WORK/caddy-access.log
    }
}
http://127.0.0.1:$CADDY_PROXY_PORT {
    reverse_proxy $BACKEND1 $BACKEND2 {
        lb_policy round_robin
    }
    log {
        output file $WORK/caddy-proxy-access.log
    }
}
EOF
    XDG_DATA_HOME="$WORK" XDG_CONFIG_HOME="$WORK" caddy run --config "$WORK/Caddyfile" \
        --adapter caddyfile >"$WORK/caddy.out" 2>&1 &
    PIDS+=($!)
    for name_port in "haproxy-proxy:$HAPROXY_PORT" "caddy:$CADDY_PORT" "caddy-proxy:$CADDY_PROXY_PORT"; do
        name=${name_port%%:*} port=${name_port##*:}
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
        curl -sf "http://127.0.0.1:$port/" >/dev/null || { echo "bench: $name not answering: $(cat "$WORK/haproxy.out" "$WORK/caddy.out")" >&2; exit 1; }
        URL[$name]="http://127.0.0.1:$port/"
    done
    ORDER+=(haproxy-proxy caddy caddy-proxy)
fi

RAW="$WORK/raw.tsv"
# measure ROUND SYSTEM THREADS LABEL: one wrk run, recorded under LABEL.
measure() {
    local out rps p50 p99 errs
    out=$(wrk -t"$3" -c"$CONNS" -d"${DURATION}s" --latency "${URL[$2]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$4" "$rps" "$p50" "$p99" "$errs" >>"$RAW"
    printf '  round %s  %-22s %10s req/s  p50 %-8s p99 %-8s %s\n' "$1" "$4" "$rps" "$p50" "$p99" "$errs"
}
echo "bench: $ROUNDS rounds x ${DURATION}s per system, wrk -t2 -c$CONNS, loopback"
for round in $(seq "$ROUNDS"); do
    for sys in "${ORDER[@]}"; do measure "$round" "$sys" 2 "$sys"; done
done
# The request-cost ratios again with one wrk thread, which leaves the servers more of the two
# cores: recorded as SYSTEM@t1.
T1_ORDER=(plughost-route plughost-hit plughost-filter nginx hyper-hello plughost-proxy nginx-proxy)
[ "${BENCH_PEERS:-1}" != 0 ] && T1_ORDER+=(haproxy-proxy caddy caddy-proxy)
echo "bench: $ROUNDS rounds x ${DURATION}s per system, wrk -t1 -c$CONNS"
for round in $(seq "$ROUNDS"); do
    for sys in "${T1_ORDER[@]}"; do measure "$round" "$sys" 1 "$sys@t1"; done
done

mkdir -p "$RESULTS"
{
    python3 bench/report.py "$RAW" "$IDLE_RSS" "$DURATION" "$ROUNDS" "$CONNS"
    echo
    echo "| start-up | to listening line | to first 200 | RSS after 100 requests |"
    echo "|---|---:|---:|---:|"
    python3 bench/startup.py "$PWD/target/release/plughost" "$WASM_DIR/headers.wasm" 10 "$WORK/startup"
    echo
    echo "In-process plugin costs (criterion, middle of the estimate):"
    echo
    echo "| call | time |"
    echo "|---|---:|"
    { cargo bench -q -p plughost --bench plugins "${CRITERION[@]}"
      cargo bench -q -p plughost --bench core "${CRITERION[@]}"; } 2>/dev/null \
        | awk '/^(wasm_plugin_call|native_plugin|cache_|limiter_|round_robin)/ {name=$1}
               /time:/ && match($0, /\[[^]]*\]/) {
                   split(substr($0, RSTART + 1, RLENGTH - 2), t, " ")
                   print "| " name " | " t[3] " " t[4] " |"
               }'
    echo
    echo "Example plugins by language (release binary; call = plugin-process with a 1 KiB body):"
    echo
    python3 bench/languages.py "$PWD/target/release/plughost" "$PWD/plugins/target" "$WORK/languages"
    echo
    # Stop the systems above first: the scaling runs want the machine to themselves.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    mkdir -p "$WORK/scaling"
    python3 bench/scaling.py "$PWD/target/release/plughost" "$WASM_DIR" "$WORK/scaling" "$RESULTS/scaling.json"
    target/release/charts "$RESULTS/scaling.json" "$RESULTS" >&2
    echo
    bash bench/wasi_p3.sh
    echo
    bash bench/workers.sh
    echo
    bash bench/tracing.sh
} | tee "$RESULTS/latest.md"
