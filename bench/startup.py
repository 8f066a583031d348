#!/usr/bin/env python3
"""Start-up time of plughost with N wasm plugins: cold (empty compiled cache) and warm (cache
filled by the cold run). Prints one markdown row per run: time to the listening line, to the
first 200, and the resident memory after 100 requests through every plugin.

Usage: startup.py PLUGHOST_BIN PLUGIN_WASM N WORKDIR
"""
import os
import subprocess
import sys
import time
import urllib.request


def run(binary, config, cwd):
    start = time.monotonic()
    proc = subprocess.Popen(
        [binary, "--config", config], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        addr = None
        for line in proc.stdout:
            if line.startswith("plughost listening on http://"):
                listening = time.monotonic() - start
                addr = line.strip().split("http://", 1)[1]
            # It answers 503 until its plugins have loaded: `plughost ready`.
            elif line.strip() == "plughost ready" and addr:
                break
        else:
            raise SystemExit("plughost did not start")
        with urllib.request.urlopen(f"http://{addr}/") as r:
            assert r.status == 200
        first = time.monotonic() - start
        for _ in range(100):
            urllib.request.urlopen(f"http://{addr}/").read()
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        return listening, first, rss
    finally:
        proc.terminate()
        proc.wait()


def main():
    binary, wasm, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "startup.toml")
    with open(config, "w") as f:
        f.write(f'port = 0\nbind = "127.0.0.1"\nadmin = "off"\nlog_stderr = false\n')
        f.write(f'log_file = "{work}/startup.log"\nwasm_cache_dir = "{work}/cache"\n')
        for i in range(n):
            f.write(f'[[plugins]]\nname = "p{i}"\nfile = "{wasm}"\n')
    for label in ("cold (empty cache)", "warm (compiled cache)"):
        listening, first, rss = run(binary, config, work)
        print(f"| {n} plugins, {label} | {listening * 1000:.0f} ms | {first * 1000:.0f} ms | "
              f"{rss / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
