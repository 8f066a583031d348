#!/usr/bin/env python3
"""Turns bench/run.sh's raw wrk figures into the markdown table `make bench` prints.

Usage: report.py RAW_TSV IDLE_RSS_KIB DURATION ROUNDS CONNS
"""
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone


def micros(text):
    """wrk latency ('812.00us', '1.20ms', '2.1s') in microseconds."""
    for unit, scale in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float("nan")


def main():
    raw, idle_rss, duration, rounds, conns = sys.argv[1:6]
    runs = defaultdict(list)
    with open(raw) as f:
        for line in f:
            _, system, rps, p50, p99, errors = (line.rstrip("\n").split("\t") + [""])[:6]
            runs[system].append((float(rps), micros(p50), micros(p99), errors.strip()))
    med = {
        s: tuple(statistics.median(r[i] for r in rs) for i in range(3))
        for s, rs in runs.items()
    }
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        "unknown",
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"## plughost bench, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}")
    print()
    print(
        f"Machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
        f"{cpu}, Linux {platform.release()}. wrk -t2 -c{conns} (SYSTEM@t1: -t1), {duration} s "
        f"per run, {rounds} rounds alternating; medians over the rounds."
    )
    print()
    print("| system | req/s (median) | p50 µs | p99 µs | errors |")
    print("|---|---:|---:|---:|---|")
    for s, (rps, p50, p99) in med.items():
        errs = "; ".join(sorted({r[3] for r in runs[s] if r[3]})) or "none"
        print(f"| {s} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {errs} |")
    print()
    print("| target | measured | met |")
    print("|---|---:|---|")

    def ratio(a, b, target, label):
        if a in med and b in med:
            r = med[a][0] / med[b][0]
            if target:
                print(f"| {label} ≥ {target}× | {r:.2f}× | {'met' if r >= target else 'NOT met'} |")
            else:
                print(f"| {label} | {r:.2f}× | - |")

    # The request-cost ratios (issue 17), with wrk -t2 and again with -t1 (SYSTEM@t1).
    cost = [
        ("plughost-route", "nginx", 1.0, "default route vs nginx `return 200`"),
        ("plughost-hit", "hyper-hello", 0.85, "cache hit vs bare hyper"),
        ("plughost-filter", "plughost-hit", 0.8, "one wasm filter on a cache hit vs none"),
        ("plughost-filter-lean", "plughost-hit", 0.0, "the same filter given no headers and no body (`request_headers = []`, `request_body = false`) vs none (no target)"),
        ("plughost-proxy", "nginx-proxy", 1.0, "proxy to 2 backends vs nginx round robin"),
        ("plughost-proxy", "haproxy-proxy", 1.0, "proxy to 2 backends vs HAProxy round robin (`http-reuse always`)"),
        ("plughost-proxy", "caddy-proxy", 0.0, "proxy to 2 backends vs Caddy `reverse_proxy` (no target)"),
        ("plughost-route", "caddy", 0.0, "default route vs Caddy `respond` (no target)"),
        ("plughost-hit", "caddy", 0.0, "cache hit vs Caddy `respond` (no target)"),
    ]
    for a, b, target, label in cost:
        ratio(a, b, target, label)
    for a, b, target, label in cost:
        ratio(a + "@t1", b + "@t1", target, label + ", wrk -t1")
    ratio("plughost-wasm", "plughost-route", 0.6, "wasm responder vs static route")
    ratio("plughost-wasm", "wasmtime-serve", 2.0, "wasm responder vs `wasmtime serve` hello")
    ratio("plughost-wasm-fresh", "plughost-wasm", 0.0, "reuse = fresh vs pooled (no target)")
    ratio("plughost-wasm-max100", "plughost-wasm", 0.0, "max_requests = 100 vs pooled (no target)")
    ratio("plughost-native", "plughost-hit", 0.9, "C observer loaded vs none (cache hit)")
    ratio("plughost-wasihttp", "wasmtime-serve", 3.0, "wasi:http hello, pooled vs `wasmtime serve` defaults")
    ratio("plughost-wasihttp", "wasmtime-serve-reuse", 1.5, "wasi:http hello, pooled vs `wasmtime serve` reusing instances")
    ratio("plughost-wasihttp-fresh", "wasmtime-serve", 1.0, "wasi:http hello, fresh vs `wasmtime serve` defaults")
    ratio("plughost-outbound", "plughost-proxy1", 0.0, "one outbound call per request vs the proxy to the same backend (no target)")
    mib = int(idle_rss) / 1024
    print(f"| idle RSS ≤ 10 MB | {mib:.1f} MiB | {'met' if mib <= 10 else 'NOT met'} |")


if __name__ == "__main__":
    main()
