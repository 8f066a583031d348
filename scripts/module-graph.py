#!/usr/bin/env python3
"""Fails when the modules of a Rust crate import each other in a loop.

Reads every `.rs` file under SRC (default host/src), takes the modules each one names through
`crate::`, `super::` or a child it declares (`mod x;` then `x::`), and looks for cycles at two
levels: between files (a module's own file; a directory's `mod.rs` is the directory module),
and between the crate's top-level modules (each with everything under it). Test code is left
out: a file's `#[cfg(test)] mod tests` and the files only such declarations pull in.

Written by hand: cargo-modules draws the graph from rust-analyzer's analysis of the whole
crate, a `cargo install` of its own; this check needs only which file names which, read from
the source in well under a second, with nothing to install. What it reads: `crate::` and
`super::` paths (groups too) and a declared child named as `child::`; an inline `mod x { }`
counts as its file.
`--print` shows the edges of every module.
"""
import os
import re
import sys


def modules(src):
    """Module path ('' for the crate root) -> file."""
    found = {}
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            parts = os.path.relpath(os.path.join(d, f), src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found["::".join(parts)] = os.path.join(d, f)
    return found


def code(path):
    """The file's text without comments and without its test module."""
    text = open(path, encoding="utf-8").read()
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)[0]
    return re.sub(r"//[^\n]*", "", text)


def group_items(text, start):
    """The top-level names of a `{a, b::c, d as e}` group that starts at `start`."""
    depth, j = 1, start
    while depth and j < len(text):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    items, cur, depth = [], "", 0
    for ch in text[start : j - 1]:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip().split("::")[0].split(" ")[0] for i in items if i.strip()]


def edges(mods):
    test_only = set()
    for m, path in mods.items():
        text = open(path, encoding="utf-8").read()
        for t in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+(\w+)\s*;", text):
            test_only.add((m + "::" if m else "") + t.group(1))

    def resolve(path):
        segs = path.split("::")
        for i in range(len(segs), 0, -1):
            if "::".join(segs[:i]) in mods:
                return "::".join(segs[:i])
        return None

    graph = {}
    for m, path in mods.items():
        if m in test_only:
            continue
        text, targets = code(path), set()
        here = m.split("::") if m else []
        for use in re.finditer(r"\b(crate|super)((?:::\w+)*)(::\{)?", text):
            kind, rest, group = use.group(1), use.group(2)[2:], use.group(3)
            if not rest and not group:
                continue
            segs = [s for s in rest.split("::") if s]
            if kind == "super":
                base = here[:-1]
                while segs and segs[0] == "super":
                    base, segs = base[:-1], segs[1:]
                segs = base + segs
            prefix = "::".join(segs)
            names = [prefix] if not group else [
                (prefix + "::" if prefix else "") + n for n in group_items(text, use.end())
            ]
            for n in names:
                r = resolve(n)
                if r and r != m:
                    targets.add(r)
        for child in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            full = (m + "::" if m else "") + child.group(1)
            if full in mods and full not in test_only and re.search(
                r"(?<![:\w])(?:self::)?" + child.group(1) + r"::", text
            ):
                targets.add(full)
        graph[m] = targets - test_only
    return graph


def cycles(graph):
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = args[0] if args else "host/src"
    files = {m: t for m, t in edges(modules(src)).items() if m}
    top = {}
    for m, targets in files.items():
        head = m.split("::")[0]
        top.setdefault(head, set()).update(t.split("::")[0] for t in targets if t)
    top = {m: t - {m} for m, t in top.items()}
    if "--print" in sys.argv:
        for m in sorted(files):
            print(m, "->", ", ".join(sorted(files[m])) or "-")
    failed = False
    for level, graph in (("file", files), ("top-level module", top)):
        for comp in cycles(graph):
            failed = True
            print(f"{src}: {level} import cycle among {len(comp)} modules:", file=sys.stderr)
            for m in comp:
                inside = sorted(t for t in graph[m] if t in comp)
                print(f"  {m} -> {', '.join(inside)}", file=sys.stderr)
    if failed:
        print("Move what both sides need into a module that neither imports back "
              "(docs/architecture.md says which layer each module is in).", file=sys.stderr)
        sys.exit(1)
    print(f"{src}: {len(files)} modules, no import cycle")


main()
