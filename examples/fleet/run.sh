#!/usr/bin/env bash
# A fleet on loopback: three plughost instances behind HAProxy (TCP, round robin), one Redis
# holding the ratelimit filter's counters, so one limit holds for the whole fleet.
#
#   examples/fleet/run.sh PLUGHOST RATELIMIT_WASM [REQUESTS] [LIMIT]
#
# Starts everything on free loopback ports in a temporary directory, sends REQUESTS (30)
# requests through HAProxy, prints how many got 200 and 429, and stops everything. Exit 0 when
# exactly LIMIT (10) got through. Needs redis-server, haproxy and curl (make setup installs
# the first two).
set -euo pipefail
plughost=$(realpath "$1") wasm=$(realpath "$2") requests=${3:-30} limit=${4:-10}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)

backends=()
for i in 1 2 3; do
    cat > "$work/plughost-$i.toml" <<TOML
port = 0
bind = "127.0.0.1"
admin = "off"
log_stderr = false
log_file = "$work/plughost-$i.log"

[[plugins]]
name = "ratelimit"
file = "$wasm"
keyvalue = ["limits"]
config = { limit = $limit, window_secs = 3600 }

[keyvalue.limits]
backend = "redis"
url = "redis://127.0.0.1:$redis_port/0"
ttl = "1h"
TOML
    "$plughost" --config "$work/plughost-$i.toml" > "$work/plughost-$i.out" &
    pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do
        addr=$(sed -n 's/^plughost listening on http:\/\///p' "$work/plughost-$i.out")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "plughost $i did not start" >&2; exit 1; }
    backends+=("$addr")
done

lb_port=$(free_port)
{
    echo "defaults"
    echo "    mode tcp"
    echo "    timeout connect 1s"
    echo "    timeout client 10s"
    echo "    timeout server 10s"
    echo "frontend fleet"
    echo "    bind 127.0.0.1:$lb_port"
    echo "    default_backend plughosts"
    echo "backend plughosts"
    echo "    balance roundrobin"
    for i in 0 1 2; do echo "    server p$i ${backends[$i]}"; done
} > "$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$lb_port/" && break
    sleep 0.1
done

ok=0 limited=0
# New connections, so HAProxy spreads them over the three instances. The first request
# above (the readiness probe) counted too.
for _ in $(seq "$requests"); do
    case $(curl -s -o /dev/null -w '%{http_code}' -H 'Connection: close' "http://127.0.0.1:$lb_port/") in
        200) ok=$((ok + 1)) ;;
        429) limited=$((limited + 1)) ;;
    esac
done
spread=""
for i in 1 2 3; do spread="$spread $(grep -c 'target="/"' "$work/plughost-$i.log" || true)"; done
echo "through HAProxy: $ok allowed, $limited limited (limit $limit, 1 probe before); requests per instance:$spread"
[ "$ok" -eq $((limit - 1)) ] && ! [[ " $spread " == *" 0 "* ]]
