#!/usr/bin/env python3
"""Instruction profile of plughost's request paths with valgrind's callgrind.

callgrind counts instructions, not time, so the figures repeat run after run whatever else the
machine does: they show what a change saves even on a noisy 2-core machine. For each path the
optimized binary with line tables (`cargo build --profile profiling -p plughost`,
target/profiling/plughost; the release one is stripped) runs under callgrind; after a warm-up the counters are zeroed, N keep-alive
requests are sent, and the counts are dumped. Printed: instructions per request (all threads:
workers, the log thread, the epoch ticker) and plughost's own functions by inclusive cost.

Each of the `proxy`, `route` and `cache-hit` paths is also measured for the reference issue 33
sets for it, serving the same request: Debian's nginx proxying to the same two origins
(`nginx-proxy`, one process, `master_process off; daemon off;`, keep-alive upstream
connections, a buffered access log), nginx's `return 200` with a body as long as plughost's page
(`nginx-return`) and bench's bare hyper hello on one tokio thread (`hyper-hello`, built by
`cargo build --release -p plughost-bench`).

With PROFILE_TRACE_RATIO=R every path runs with `[tracing]` on, sampling R of new traces
(exported to a closed port: the cost of making and queueing spans, not of a collector's
answers). With PROFILE_SUMMARY=1 only a `path<TAB>instructions per request` line a path is
printed.

usage: profile.py PLUGHOST WASM_DIR OUT_DIR [N]   (PROFILE_PATHS=a,b selects paths)
"""

import http.client
import http.server
import os
import re
import subprocess
import sys
import threading
import time

# An origin for the paths that go through the reverse proxy (ORIGIN is its address).
ORIGIN_POOL = ('[upstreams.origin]\nservers = ["ORIGIN"]\nhealth_path = "/vary"\n'
               'health_interval = "1h"\n[[routes]]\nprefix = "/o"\nupstream = "origin"\n')

# The proxy path's pool: two origins, every response `no-store`, so each request goes through.
PROXY_POOL = ('[upstreams.origin]\nservers = ["ORIGIN", "SECOND"]\nhealth_path = "/vary"\n'
              'health_interval = "1h"\n[[routes]]\nprefix = "/o"\nupstream = "origin"\n')

# name: (config, request path, request headers)
PATHS = {
    "cache-hit": ("", "/", {}),
    # The default route with the cache off: the page is made for every request.
    "route": ("cache_capacity = 0\n", "/", {}),
    "one-filter": ('[[plugins]]\nname = "headers"\nfile = "WASM/headers.wasm"\n'
                   'config = { response = { name = "x-b", value = "2" } }\n', "/", {}),
    # The same filter given no request headers and no body (`request_headers = []`,
    # `request_body = false`): what a filter that reads neither costs.
    "one-filter-lean": ('[[plugins]]\nname = "headers"\nfile = "WASM/headers.wasm"\n'
                        'request_headers = []\nrequest_body = false\n'
                        'config = { response = { name = "x-b", value = "2" } }\n', "/", {}),
    # A WASI 0.3 middleware doing what the bench's filter does (a request header on the way
    # in, a response header on the way out) in front of a cache hit.
    # (A deadline valgrind's slowdown cannot reach: instructions are what is counted.)
    "one-middleware": ('[[plugins]]\nname = "mw"\nfile = "WASM/p3_middleware.wasm"\n'
                       'kind = "middleware"\ntimeout = "10s"\n', "/", {}),
    # The same work by plughost's own filter, as `make bench`'s plughost-filter.
    "one-filter-both": ('[[plugins]]\nname = "headers"\nfile = "WASM/headers.wasm"\n'
                        'timeout = "10s"\nconfig = { request = { name = "x-a", value = "1" }, '
                        'response = { name = "x-b", value = "2" } }\n', "/", {}),
    # The hello wasm responder on /hello with the cache off, as `make bench`'s plughost-wasm.
    "responder": ('cache_capacity = 0\n[[plugins]]\nname = "hello"\nfile = "WASM/hello.wasm"\n'
                  'kind = "responder"\n[[routes]]\nprefix = "/hello"\nplugin = "hello"\n',
                  "/hello", {}),
    # A hit on a stored variant: the response says Vary: Accept-Encoding.
    "cache-hit-vary": (ORIGIN_POOL, "/o/vary", {"Accept-Encoding": "gzip"}),
    # Every request revalidates (max-age=0 + ETag): a conditional request, a 304, a refresh.
    "revalidation": (ORIGIN_POOL, "/o/reval", {}),
    # The reverse proxy itself: nothing is stored, every request goes to an origin.
    "proxy": (PROXY_POOL, "/o/nostore", {}),
}


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"v" * 100
        if self.path == "/o/nostore":
            self.answer(200, {"Cache-Control": "no-store"}, body)
        elif self.path == "/o/vary":
            self.answer(200, {"Cache-Control": "max-age=3600", "Vary": "Accept-Encoding"}, body)
        elif self.headers.get("If-None-Match") == '"r1"':
            self.answer(304, {"Cache-Control": "max-age=0", "ETag": '"r1"'}, b"")
        else:
            self.answer(200, {"Cache-Control": "max-age=0", "ETag": '"r1"'}, body)

    def answer(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


def requests(addr, n, path="/", headers=None):
    """Sends n keep-alive requests; returns the last response's body."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = b""
    for _ in range(n):
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, resp.status
    conn.close()
    return body


def profile(binary, wasm, out_dir, name, n):
    extra, target, headers = PATHS[name]
    config = os.path.join(out_dir, f"{name}.toml")
    with open(config, "w") as f:
        f.write('port = 0\nbind = "127.0.0.1"\nadmin = "off"\nlog_stderr = false\n'
                f'log_file = "{out_dir}/{name}.log"\nwasm_cache_dir = "{out_dir}/cache"\n'
                + extra.replace("WASM", wasm).replace("ORIGIN", ORIGIN_ADDR)
                .replace("SECOND", SECOND_ADDR))
        if ratio := os.environ.get("PROFILE_TRACE_RATIO"):
            f.write(f'\n[tracing]\nendpoint = "http://127.0.0.1:9/v1/traces"\nsample_ratio = {ratio}\n')
    dump = os.path.join(out_dir, f"callgrind.{name}.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", binary, "--config", config],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # Its routes are served once its plugins have loaded: `plughost ready`.
    addr = None
    for line in proc.stdout:
        if m := re.match(r"plughost listening on http://(\S+)", line):
            addr = m.group(1)
        elif line.strip() == "plughost ready":
            break
    if addr is None:
        sys.exit(f"profile: plughost ({name}) did not start under valgrind")
    body = requests(addr, 200, target, headers)
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                   capture_output=True)
    requests(addr, n, target, headers)
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                   capture_output=True)
    requests(addr, 1)  # the dump happens when the program next runs
    time.sleep(1)
    proc.terminate()
    proc.wait()
    dumps = sorted(f for f in os.listdir(out_dir) if f.startswith(f"callgrind.{name}.out."))
    part = os.path.join(out_dir, dumps[0])
    with open(part) as f:
        total = next(int(l.split()[1]) for l in f if l.startswith("summary:") or l.startswith("totals:"))
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", part],
        capture_output=True, text=True).stdout
    own = []
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+\S*?:?(plughost::\S+)", line)
        if m and "{{closure}}" not in m.group(3):
            own.append((int(m.group(1).replace(",", "")), m.group(3)))
    return total / n, own, body


ORIGIN_ADDR = ""
SECOND_ADDR = ""

# nginx as the references issues 17 and 33 set: one process (`master_process off; daemon off;`),
# a buffered access log; LOCATION is what it does with every request.
NGINX_CONF = """master_process off;
daemon off;
worker_processes 1;
pid {out}/nginx.pid;
error_log {out}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {out}/nginx-access.log combined buffer=64k;
    upstream origin {{ server {origin}; server {second}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ {location} }}
    }}
}}
"""

# Reference servers doing what a plughost path does, named `REFERENCE-for-PATH`:
# name: (plughost path it is compared with, nginx `location` body or None for bare hyper).
REFERENCES = {
    "nginx-proxy": ("proxy", 'proxy_pass http://origin; proxy_http_version 1.1; '
                             'proxy_set_header Connection "";'),
    # The same length of body as plughost's default route answers with.
    "nginx-return": ("route", 'default_type "text/plain; charset=utf-8"; return 200 "BODY";'),
    # bench/src/hyper_hello.rs on one tokio thread: the floor a hyper server sets for the hit.
    "hyper-hello": ("cache-hit", None),
}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def profile_reference(out_dir, name, hyper_hello, body, n):
    """Instructions per request of reference `name` serving its plughost path's request."""
    import socket
    path, location = REFERENCES[name]
    target = PATHS[path][1]
    port = free_port()
    if location is None:
        argv = [hyper_hello, f"127.0.0.1:{port}"]
    else:
        conf = os.path.join(out_dir, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(out=out_dir, origin=ORIGIN_ADDR, second=SECOND_ADDR,
                                      port=port, location=location.replace("BODY", body)))
        argv = ["nginx", "-c", conf, "-p", out_dir]
    dump = os.path.join(out_dir, f"callgrind.{name}.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TOKIO_WORKER_THREADS": "1"})
    addr = f"127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit(f"profile: {name} did not start under valgrind")
            time.sleep(0.2)
    requests(addr, 200, target)
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
    requests(addr, n, target)
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
    requests(addr, 1, target)
    time.sleep(1)
    proc.terminate()
    proc.wait()
    part = os.path.join(out_dir, sorted(
        f for f in os.listdir(out_dir) if f.startswith(f"callgrind.{name}.out."))[0])
    with open(part) as f:
        total = next(int(l.split()[1]) for l in f if l.startswith(("summary:", "totals:")))
    return total / n


def main():
    binary, wasm, out_dir = sys.argv[1:4]
    wasm = os.path.abspath(wasm)
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    os.makedirs(out_dir, exist_ok=True)
    only = os.environ.get("PROFILE_PATHS")
    global ORIGIN_ADDR, SECOND_ADDR
    ORIGIN_ADDR = start_origin()
    SECOND_ADDR = start_origin()
    bodies = {}
    for name in PATHS:
        if only and name not in only.split(","):
            continue
        per_request, own, bodies[name] = profile(binary, wasm, out_dir, name, n)
        if os.environ.get("PROFILE_SUMMARY"):
            print(f"{name}\t{per_request:.0f}")
            continue
        print(f"### {name}: {per_request:,.0f} instructions per request "
              f"(callgrind, {n} keep-alive requests, all threads)\n")
        print("| plughost function (inclusive) | instructions per request | share |")
        print("|---|---:|---:|")
        seen = set()
        for ir, fn in own:
            short = re.sub(r"<.*>", "", fn)
            if short in seen:
                continue
            seen.add(short)
            print(f"| `{short}` | {ir / n:,.0f} | {ir / n / per_request * 100:.0f}% |")
            if len(seen) == 12:
                break
        print()

    # The references, for the paths profiled (or named in PROFILE_PATHS themselves).
    hyper_hello = os.path.join(os.path.dirname(os.path.abspath(binary)), "..", "release",
                               "hyper-hello")
    # nginx answers with as many bytes as plughost's page (100 when the route was not profiled).
    body = "x" * len(bodies.get("route", bodies.get("cache-hit", b"x" * 100)))
    for name, (path, location) in REFERENCES.items():
        if only and name not in only.split(",") and path not in only.split(","):
            continue
        if location is None and not os.path.exists(hyper_hello):
            print(f"### {name}: skipped, build it with cargo build --release -p plughost-bench\n")
            continue
        per_request = profile_reference(out_dir, name, hyper_hello, body, n)
        if os.environ.get("PROFILE_SUMMARY"):
            print(f"{name}\t{per_request:.0f}")
            continue
        print(f"### {name}: {per_request:,.0f} instructions per request "
              f"(callgrind, {n} keep-alive requests, the {path} path's request)\n")

if __name__ == "__main__":
    main()
