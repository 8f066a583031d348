#!/usr/bin/env python3
"""Per-language figures of the example plugins, with the release binary: component size, cold
compile (`plughost plugin check`), warm load from the compiled cache (a server's `load_ms`),
median and p99 of `plugin-process` with a 1 KiB body (`plughost plugin run --repeat`), and the
linear memory one instance reached (`GET /plugins`). Prints a markdown table.

Usage: languages.py PLUGHOST_BIN PLUGINS_TARGET_DIR WORKDIR
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

EXAMPLES = [
    ("Rust", "wasm32-wasip2/release/hello.wasm", "responder", {"greeting": "Hi"}),
    ("C", "c/blocklist.wasm", "filter", {"blocked": ["/admin"]}),
    ("Python", "python/describe.wasm", "responder", {}),
    ("JavaScript", "js/rewrite.wasm", "filter", {"from": "x-user", "to": "x-forwarded-user"}),
    ("Go", "go/cors.wasm", "filter", {"origins": ["https://app.example"]}),
]


def toml_value(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def serve_once(binary, work, wasm, kind, config):
    """Starts a server with one plugin; returns (load_ms, from_cache, peak_memory_bytes)."""
    log = os.path.join(work, "lang.log")
    if os.path.exists(log):
        os.remove(log)
    conf = os.path.join(work, "lang.toml")
    with open(conf, "w") as f:
        f.write(f'port = 0\nbind = "127.0.0.1"\nadmin = "127.0.0.1:0"\nlog_stderr = false\n')
        f.write(f'log_file = "{log}"\nwasm_cache_dir = "{work}/cache"\n')
        # A filter's request goes on to a route that takes a POST body.
        f.write("debug_routes = true\n")
        f.write(f'[[plugins]]\nname = "p"\nfile = "{wasm}"\nkind = "{kind}"\nconfig = {toml_value(config)}\n')
        if kind == "responder":
            f.write('[[routes]]\nprefix = "/"\nplugin = "p"\n')
    proc = subprocess.Popen([binary, "--config", conf], stdout=subprocess.PIPE, text=True)
    try:
        addrs = []
        # Both listening lines, then `plughost ready` (its plugin loaded).
        for line in proc.stdout:
            if "listening on http://" in line:
                addrs.append(line.strip().split("http://", 1)[1])
            if line.strip() == "plughost ready":
                break
        path = "/" if kind == "responder" else "/_debug/body"
        urllib.request.urlopen(f"http://{addrs[0]}{path}", data=b"x" * 1024).read()
        plugins = json.load(urllib.request.urlopen(f"http://{addrs[1]}/plugins"))
    finally:
        proc.terminate()
        proc.wait()
    text = open(log).read()
    m = re.search(r"from_cache=(\w+).*?load_ms=(\d+)", text)
    return int(m.group(2)), m.group(1) == "true", plugins[0]["peak_memory_bytes"]


def main():
    binary, target, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    body = os.path.join(work, "1k.bin")
    with open(body, "wb") as f:
        f.write(b"b" * 1024)
    print("| language | example | size | cold compile | warm load (cache) | call median | call p99 | instance memory |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for lang, rel, kind, config in EXAMPLES:
        wasm = os.path.join(target, rel)
        size = os.path.getsize(wasm) / 1024
        check = subprocess.run([binary, "plugin", "check", wasm], capture_output=True, text=True).stdout
        compile_ms = re.search(r"compile: (\d+) ms", check).group(1)
        run = subprocess.run(
            [binary, "plugin", "run", wasm, "--config", json.dumps(config), "--method", "POST",
             "--uri", "/x", "--header", "x-user: ann", "--body-file", body, "--repeat", "2000"],
            capture_output=True, text=True,
        ).stdout
        m = re.search(r"median ([\d.]+) µs, p99 ([\d.]+) µs", run)
        for cache in (os.path.join(work, "cache"),):
            subprocess.run(["rm", "-rf", cache])
        serve_once(binary, work, wasm, kind, config)  # fills the compiled cache
        warm_ms, from_cache, memory = serve_once(binary, work, wasm, kind, config)
        assert from_cache
        name = os.path.basename(rel)
        print(
            f"| {lang} | {name} | {size:,.0f} KiB | {compile_ms} ms | {warm_ms or '<1'} ms | "
            f"{m.group(1)} µs | {m.group(2)} µs | {memory / 1048576:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
