"""The tables of bench/tracing.sh from its raw runs (one line a run: system, req/s, requests,
plughost's CPU ticks, p50, p99, errors): medians over the rounds, and each system's ratios to
the same path untraced (off) and to the binary from before tracing, in the same run; then,
from its callgrind runs (system, path, instructions per request), the same comparison in
instructions, with 1% sampled estimated as unsampled + 1% of what sampling adds."""

import statistics
import sys
from collections import defaultdict

raw, hz = sys.argv[1], float(sys.argv[2])
ir_file = sys.argv[3] if len(sys.argv) > 3 else None
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text):
    """wrk's latency (`812.00us`, `1.20ms`, `2.01s`) in ms."""
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * UNITS[unit]
    return float("nan")


runs = defaultdict(lambda: defaultdict(list))
errors = defaultdict(str)
for line in open(raw):
    name, rps, requests, ticks, p50, p99, err = (line.rstrip("\n").split("\t") + [""])[:7]
    r = runs[name]
    r["rps"].append(float(rps))
    r["cpu"].append(float(ticks) / hz * 1e6 / max(float(requests), 1.0))
    r["p50"].append(ms(p50))
    r["p99"].append(ms(p99))
    errors[name] += err
med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in runs.items()}

print("| path | system | req/s | CPU µs/request | p50 ms | p99 ms | req/s vs off | CPU vs off | CPU vs before tracing |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for path in ("hit", "filter", "proxy"):
    off, before = med[f"{path}-off"], med[f"{path}-before"]
    for system in ("before", "off", "1pct", "all", "dead"):
        m = med.get(f"{path}-{system}")
        if m is None:
            continue
        print(
            f"| {path} | {system} | {m['rps']:,.0f} | {m['cpu']:.1f} | {m['p50']:.2f} | {m['p99']:.2f} "
            f"| {m['rps'] / off['rps']:.3f}x | {m['cpu'] / off['cpu']:.3f}x | {m['cpu'] / before['cpu']:.3f}x |"
        )
dead, live = med["proxy-dead"], med["proxy-all"]
print(
    f"\nproxy, all sampled, dead collector vs live sink: req/s {dead['rps'] / live['rps']:.3f}x, "
    f"p50 {dead['p50'] / live['p50']:.3f}x, p99 {dead['p99'] / live['p99']:.3f}x"
)
bad = {k: v for k, v in errors.items() if v.strip()}
if bad:
    print("\nerrors: " + "; ".join(f"{k}: {v.strip()}" for k, v in bad.items()))

if ir_file:
    ir = {}
    for line in open(ir_file):
        system, path, count = line.split()
        ir[(system, path)] = float(count)
    print("\n| path (callgrind) | before tracing | off | unsampled | all sampled | off vs before | unsampled vs off | 1% (estimated) vs off | all vs off |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in ("cache-hit", "one-filter-both", "proxy"):
        b, off, un, every = (ir[(s, path)] for s in ("before", "off", "unsampled", "all"))
        one = un + 0.01 * (every - un)
        print(
            f"| {path} | {b:,.0f} | {off:,.0f} | {un:,.0f} | {every:,.0f} | {off / b:.3f}x "
            f"| {un / off:.3f}x | {one / off:.3f}x | {every / off:.3f}x |"
        )
