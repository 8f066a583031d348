#!/usr/bin/env python3
"""make soak: the long reliability runs, bounded in time, on loopback only.

1. Load: 10,000 concurrent keep-alive connections with steady wrk traffic for LOAD_SECONDS
   (60): no error but the limiter's deliberate 503s, which are counted from the server's own
   metrics and reported with the p99 and peak RSS.
2. Soak: the maximum rate is measured (wrk, 64 connections, 10 s), then plughost is driven at
   about half of it for SOAK_SECONDS (300) while its RSS and open descriptors are sampled every
   10 s: RSS growth after warm-up must stay under 10 %, descriptors must return to their idle
   value, no processing permit may be left taken.

SOAK_QUICK=1 shortens both (10 s and 40 s). Results go to bench/results/soak.md.
Exit status 1 when a criterion fails.
"""

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "plughost")
QUICK = os.environ.get("SOAK_QUICK") == "1"
LOAD_SECONDS = int(os.environ.get("LOAD_SECONDS", 10 if QUICK else 60))
SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", 40 if QUICK else 300))
WARM_UP = 10 if QUICK else 30
SAMPLE_EVERY = 5 if QUICK else 10


class Server:
    """A release plughost on free loopback ports, in a temp dir; stopped by stop()."""

    def __init__(self, config=""):
        self.dir = tempfile.mkdtemp(prefix="plughost-soak-")
        with open(os.path.join(self.dir, "plughost.toml"), "w") as f:
            f.write('port = 0\nbind = "127.0.0.1"\nadmin = "127.0.0.1:0"\nlog_stderr = false\n' + config)
        self.proc = subprocess.Popen(
            [BINARY, "--config", "plughost.toml"], cwd=self.dir,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addr = self.admin = None
        ready = False
        while not ready:
            line = self.proc.stdout.readline()
            if not line:
                sys.exit("plughost did not start")
            # Its routes are served once its plugins have loaded: `plughost ready`.
            ready = line.strip() == "plughost ready"
            if m := re.match(r"plughost listening on http://(\S+)", line):
                self.addr = m.group(1)
            if m := re.match(r"plughost admin listening on http://(\S+)", line):
                self.admin = m.group(1)

    def url(self, path="/"):
        return f"http://{self.addr}{path}"

    def metric(self, name):
        text = urllib.request.urlopen(f"http://{self.admin}/metrics").read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_kib(self, field="VmRSS"):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wrk(url, conns, seconds, script=None):
    """Runs wrk and returns its figures."""
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout

    def number(pattern, default=0.0):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else default

    def ms(pattern):
        m = re.search(pattern + r"\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(number(r"(\d+) requests in")),
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": ms(r"50%"),
        "p99_ms": ms(r"99%"),
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "report": out,
    }


def load(report):
    """10,000 connections with steady traffic."""
    server = Server()
    idle = server.rss_kib()
    run = wrk(server.url(), 10_000, LOAD_SECONDS)
    refused = server.metric('plughost_requests_total{status="503"}')
    peak = server.rss_kib("VmHWM")
    inflight = server.metric("plughost_inflight_requests")
    server.stop()
    ok = run["socket_errors"] == 0 and run["non_2xx"] <= refused and inflight == 0
    report.append(f"""## 10,000 connections, {LOAD_SECONDS} s

| requests | req/s | p50 | p99 | limiter 503s (server) | non-2xx (wrk) | socket errors | RSS idle → peak |
|---|---|---|---|---|---|---|---|
| {run['requests']} | {run['rps']:.0f} | {run['p50_ms']:.1f} ms | {run['p99_ms']:.1f} ms | {refused:.0f} | {run['non_2xx']} | {run['socket_errors']} | {idle / 1024:.1f} → {peak / 1024:.1f} MiB |

Criterion: no socket error, every non-2xx a limiter 503, nothing in flight after: **{'met' if ok else 'NOT MET'}**.
""")
    return ok


def soak(report):
    """Half of the maximum rate for SOAK_SECONDS, sampling RSS and descriptors."""
    server = Server()
    for _ in range(50):
        urllib.request.urlopen(server.url()).read()
    time.sleep(0.5)
    fds_idle = server.fds()
    top = wrk(server.url(), 64, 10)
    target = top["rps"] / 2
    # wrk paces a connection with a whole number of ms between its requests: 2 ms each, and
    # as many connections as make the target rate (a little under it, by the latency).
    delay = 2
    conns = max(2, round(target * delay / 1000))
    script = os.path.join(server.dir, "paced.lua")
    with open(script, "w") as f:
        f.write(f"delay = function() return {delay} end\n")
    child = subprocess.Popen(
        ["wrk", "-t2", f"-c{conns}", f"-d{SOAK_SECONDS}s", "--latency", "-s", script, server.url()],
        stdout=subprocess.PIPE, text=True)
    samples = []
    started = time.time()
    while child.poll() is None:
        time.sleep(SAMPLE_EVERY)
        if child.poll() is None:  # samples under load only
            samples.append((time.time() - started, server.rss_kib(), server.fds()))
    out = child.stdout.read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    time.sleep(2)
    fds_after = server.fds()
    permits = server.metric("plughost_limiter_permits_available")
    inflight = server.metric("plughost_inflight_requests")
    server.stop()
    warm = [s for s in samples if s[0] >= WARM_UP]
    base, last, peak = warm[0][1], warm[-1][1], max(s[1] for s in warm)
    growth = (peak - base) / base * 100
    ok = growth < 10 and fds_after == fds_idle and permits == 10 and inflight == 0 \
        and not errors and not non_2xx
    rows = "\n".join(f"| {t:.0f} s | {rss / 1024:.1f} MiB | {fds} |" for t, rss, fds in samples)
    report.append(f"""## Soak: {SOAK_SECONDS} s at half the maximum rate

Maximum (64 connections, 10 s): {top['rps']:.0f} req/s. Soak target {target:.0f} req/s, reached
{rps:.0f} req/s over {conns} connections (wrk waits {delay} ms between the requests of a
connection). Errors: {errors.group(1) if errors else 'none'}; non-2xx:
{non_2xx.group(1) if non_2xx else 0}.

| time | RSS | open fds |
|---|---|---|
{rows}

RSS under load after warm-up ({WARM_UP} s): {base / 1024:.1f} MiB, at most {peak / 1024:.1f} MiB
({growth:+.1f} %), {last / 1024:.1f} MiB at the end; open
descriptors idle {fds_idle}, after the run {fds_after}; permits free after: {permits:.0f} of 10;
in flight: {inflight:.0f}.

Criteria: RSS growth < 10 % after warm-up, descriptors back to idle, no permit leaked, no
error: **{'met' if ok else 'NOT MET'}**.
""")
    return ok


def main():
    # wrk's 10,000 connections need descriptors; plughost raises its own limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    machine = subprocess.run(["uname", "-sr"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    report = [f"# make soak\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit "
              f"{commit}, {os.cpu_count()} cores, {machine}; release build, loopback, wrk.\n"]
    ok = load(report)
    ok = soak(report) and ok
    text = "\n".join(report)
    print(text)
    out = os.path.join(ROOT, "bench", "results", "soak.md")
    with open(out, "w") as f:
        f.write(text)
    print(f"written to {os.path.relpath(out, ROOT)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
