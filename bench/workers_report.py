#!/usr/bin/env python3
"""Turns bench/workers.sh's raw runs into its markdown tables: per system, workers and wrk
threads, the median req/s and CPU per request (server user and kernel, backends), then the
ratios issue 33 targets.

Usage: workers_report.py RAW_TSV CLK_TCK
"""
import statistics
import sys
from collections import defaultdict

TARGETS = [
    # (what, system, reference, target)
    ("proxy vs nginx proxy", "proxy", "nginx-proxy", 1.0),
    ("proxy vs HAProxy", "proxy", "haproxy-proxy", 1.0),
    ("route vs nginx return 200", "route", "nginx", 1.0),
    ("hit vs bare hyper", "hit", "hyper", 0.9),
    ("filter on a hit vs the hit", "filter", "hit", 0.8),
    ("route vs before", "route", "before-route", None),
    ("hit vs before", "hit", "before-hit", None),
    ("proxy vs before", "proxy", "before-proxy", None),
]


def main():
    raw, hz = sys.argv[1], int(sys.argv[2])
    runs = defaultdict(list)
    errors = defaultdict(set)
    with open(raw) as f:
        for line in f:
            _, system, threads, rps, reqs, server, backends, errs = (
                line.rstrip("\n").split("\t") + [""]
            )[:8]
            reqs = max(int(reqs or 0), 1)
            s0u, s0s, s1u, s1s = map(int, server.split())
            b0u, b0s, b1u, b1s = map(int, backends.split())
            us = lambda ticks: ticks / hz * 1e6 / reqs
            name, workers = system.rsplit("-w", 1)
            runs[(name, int(workers), int(threads))].append(
                (float(rps or 0), us(s1u - s0u), us(s1s - s0s), us(b1u - b0u + b1s - b0s))
            )
            if errs.strip():
                errors[system].add(errs.strip())
    med = {
        k: tuple(statistics.median(r[i] for r in v) for i in range(4)) for k, v in runs.items()
    }
    print("| system | workers | wrk -t | req/s | server user µs | server kernel µs | backends µs | total µs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, w, t), (rps, u, s, b) in sorted(med.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        proxy = "proxy" in name
        back = f"{b:.1f}" if proxy else ""
        print(f"| {name} | {w} | {t} | {rps:,.0f} | {u:.1f} | {s:.1f} | {back} | {u + s + (b if proxy else 0):.1f} |")
    print()
    print("| ratio (req/s) | target | w1 t1 | w1 t2 | w2 t1 | w2 t2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, system, ref, target in TARGETS:
        cells = []
        for w in (1, 2):
            for t in (1, 2):
                a, b = med.get((system, w, t)), med.get((ref, w, t))
                cells.append(f"{a[0] / b[0]:.2f}×" if a and b and b[0] else "")
        if any(cells):
            goal = f"≥ {target}×" if target else ""
            print(f"| {what} | {goal} | " + " | ".join(cells) + " |")
    cells = []
    for w in (1, 2):
        for t in (1, 2):
            a, b = med.get(("proxy", w, t)), med.get(("nginx-proxy", w, t))
            cells.append(f"{(a[1] + a[2] + a[3]) / (b[1] + b[2] + b[3]):.2f}×" if a and b else "")
    print("| proxy CPU per request (with backends) vs nginx's | ≤ 1.0× | " + " | ".join(cells) + " |")
    for system, errs in sorted(errors.items()):
        print(f"\n{system}: {'; '.join(sorted(errs))}")


if __name__ == "__main__":
    main()
