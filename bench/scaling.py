#!/usr/bin/env python3
"""How plughost's cost grows, for make bench: throughput and p99 against the number of wasm
filters in the chain, the request body size through a filter, and the number of connections;
and a cache hit's cost against the cache's capacity (criterion's estimates, from
`cargo bench --bench core`). Writes the figures as JSON for bench/src/charts.rs and prints a
Markdown table of each.

usage: scaling.py PLUGHOST WASM_DIR WORK_DIR OUT.json   (BENCH_QUICK=1: 1 s points, 1 round)
Each point is measured in every round and the median kept; points alternate within a round.
"""

import json
import os
import re
import resource
import statistics
import subprocess
import sys

QUICK = os.environ.get("BENCH_QUICK") == "1"
SECONDS = int(os.environ.get("SCALING_SECONDS", 1 if QUICK else 3))
ROUNDS = int(os.environ.get("SCALING_ROUNDS", 1 if QUICK else 2))
FILTERS = [0, 1, 2, 5, 10]
BODIES = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20]
CONNECTIONS = [1, 10, 100, 1000, 10000]
CAPACITIES = [100, 1000, 10000, 100000]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(binary, work, name, config):
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write('port = 0\nbind = "127.0.0.1"\nadmin = "off"\nlog_stderr = false\n'
                f'log_file = "{work}/{name}.log"\nwasm_cache_dir = "{work}/cache"\n' + config)
    proc = subprocess.Popen([binary, "--config", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    # Its routes are served once its plugins have loaded: `plughost ready`.
    addr = None
    for line in proc.stdout:
        if m := re.match(r"plughost listening on http://(\S+)", line):
            addr = m.group(1)
        elif line.strip() == "plughost ready" and addr:
            return proc, addr
    sys.exit(f"scaling: plughost ({name}) did not start")


def wrk(url, conns, script=None):
    cmd = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{SECONDS}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if bad:
        print(f"  warning: {url} with {conns} connections: {bad.group(0)}", file=sys.stderr)
    return rps, p99


def filters_config(n, wasm):
    return "".join(
        f'[[plugins]]\nname = "f{i}"\nfile = "{wasm}/headers.wasm"\n'
        f'config = {{ response = {{ name = "x-f{i}", value = "1" }} }}\n' for i in range(n))


def measure(binary, wasm, work):
    # name -> (config, url path, connections, lua script or None)
    points = {}
    for n in FILTERS:
        points[("filters", n)] = (filters_config(n, wasm), "/", 64, None)
    for size in BODIES:
        script = os.path.join(work, f"body{size}.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        config = "debug_routes = true\nmax_body_bytes = 2097152\n" + filters_config(1, wasm)
        points[("body", size)] = (config, "/_debug/body", 16, script)
    for conns in CONNECTIONS:
        points[("connections", conns)] = ("", "/", conns, None)
    results = {key: [] for key in points}
    for round_ in range(ROUNDS):
        for key, (config, path, conns, script) in points.items():
            proc, addr = start(binary, work, f"{key[0]}-{key[1]}", config)
            try:
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{addr}/"], check=False)
                results[key].append(wrk(f"http://{addr}{path}", conns, script))
            finally:
                proc.terminate()
                proc.wait()
            print(f"  round {round_ + 1} {key[0]:12} {key[1]:>8}: "
                  f"{results[key][-1][0]:10.0f} req/s  p99 {results[key][-1][1]:.2f} ms",
                  file=sys.stderr)
    return {key: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            for key, runs in results.items()}


def criterion_ns(group, param):
    path = os.path.join(ROOT, "target", "criterion", group, str(param), "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def main():
    binary, wasm, work, out = sys.argv[1:5]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    m = measure(binary, wasm, work)
    data = {
        "seconds": SECONDS,
        "rounds": ROUNDS,
        "filters": [{"x": n, "rps": m[("filters", n)][0], "p99_ms": m[("filters", n)][1]}
                    for n in FILTERS],
        "body": [{"x": s, "rps": m[("body", s)][0], "p99_ms": m[("body", s)][1]} for s in BODIES],
        "connections": [{"x": c, "rps": m[("connections", c)][0],
                         "p99_ms": m[("connections", c)][1]} for c in CONNECTIONS],
        "cache": [{"x": c, "get_ns": criterion_ns("cache_get_hit", c),
                   "put_ns": criterion_ns("cache_put_evict", c)} for c in CAPACITIES],
    }
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
    base = data["filters"][0]["rps"]
    print(f"How cost grows (median of {ROUNDS} round(s) of {SECONDS} s per point; charts in "
          "bench/results/*.svg):\n")
    print("| wasm filters | req/s | vs none | p99 |\n|---:|---:|---:|---:|")
    for p in data["filters"]:
        print(f"| {p['x']} | {p['rps']:.0f} | {p['rps'] / base:.2f}× | {p['p99_ms']:.2f} ms |")
    print("\n| body through one filter | req/s | MiB/s | p99 |\n|---:|---:|---:|---:|")
    for p in data["body"]:
        print(f"| {p['x'] >> 10} KiB | {p['rps']:.0f} | {p['rps'] * p['x'] / 2**20:.0f} | "
              f"{p['p99_ms']:.2f} ms |")
    print("\n| connections (cache hit) | req/s | p99 |\n|---:|---:|---:|")
    for p in data["connections"]:
        print(f"| {p['x']} | {p['rps']:.0f} | {p['p99_ms']:.2f} ms |")
    print("\n| cache capacity (full) | hit | store + evict |\n|---:|---:|---:|")
    for p in data["cache"]:
        get = f"{p['get_ns']:.0f} ns" if p["get_ns"] else "-"
        put = f"{p['put_ns']:.0f} ns" if p["put_ns"] else "-"
        print(f"| {p['x']} | {get} | {put} |")


if __name__ == "__main__":
    main()
