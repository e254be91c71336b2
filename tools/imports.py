#!/usr/bin/env python3
"""The import graph between the files of one crate, and its circles.

Lists every edge `file -> file` made by a `crate::`, `super::` or `self::` path (in a `use` or
inline), then the strongly connected components of more than one file. The last line is the
count the layout is judged by: files that import one another in a circle.

    tools/imports.py [crates/kept-server/src] [--edges] [--layers]

`--layers` also checks the layout's rule: kits (http, web, identity, subjects, index, ...) import
no feature, and a feature imports no other feature's handlers (`api.rs`, `page.rs`, `routes.rs`).
"""

import os
import re
import sys

KITS = {"http", "web", "identity", "subjects", "index", "config", "store", "observe"}
FEATURES = {"collect", "decide", "consent", "prefcenter", "connect", "admin", "snippet", "system"}
HANDLER_FILES = {"api.rs", "page.rs", "routes.rs"}


def module_files(src):
    """Maps a module path (tuple of names) to its file, relative to `src`."""
    modules = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts == ["lib"] or parts == ["main"]:
                parts = []
            modules[tuple(parts)] = rel
    return modules


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        return tuple(parts[:-1])
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def strip_comments(text):
    # Unit tests sit in a `#[cfg(test)] mod tests` at the end of a file; they are not the
    # product's dependencies (and their `super::` means the file itself).
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        # Drop line comments, doc comments included; string contents are rare enough here.
        idx = line.find("//")
        lines.append(line if idx < 0 else line[:idx])
    return "\n".join(lines)


def inline_modules(text):
    """The inline `mod name { … }` blocks of a file, as (start, end, name)."""
    blocks = []
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", text):
        depth = 0
        for i in range(m.end() - 1, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    blocks.append((m.start(), i, m.group(1)))
                    break
    return blocks


def scope(blocks, pos):
    """The inline modules around `pos`, outermost first."""
    return tuple(name for start, end, name in sorted(blocks) if start <= pos <= end)


def expand_use(tree):
    """Expands `a::{b, c::{d, e}}` into the paths `a::b`, `a::c::d`, `a::c::e`."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, rest):
        depth = 0
        start = 0
        items = []
        for i, ch in enumerate(rest):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(rest[start:i])
                start = i + 1
        items.append(rest[start:])
        for item in items:
            if not item:
                continue
            brace = item.find("{")
            if brace >= 0 and item.endswith("}"):
                walk(prefix + item[:brace], item[brace + 1 : -1])
            else:
                out.append(prefix + item)

    walk("", tree)
    return out


def reexports(src, modules):
    """For each module, the names it re-exports (`pub use a::B;`) and the path each names."""
    found = {}
    for key, rel in modules.items():
        text = strip_comments(open(os.path.join(src, rel), encoding="utf-8").read())
        names = {}
        for m in re.finditer(r"\bpub\s+use\s+([^;]*);", text):
            for path in expand_use(m.group(1)):
                if not path.startswith(("crate::", "super::", "self::")):
                    path = "self::" + path
                names[path.split("::")[-1]] = path
        found[key] = names
    return found


REEXPORTS = {}


def resolve(path, here, modules, seen=0):
    """The file a path names: the longest module prefix of it that has a file, following a
    name the module only re-exports to where it is defined."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base = ()
        parts = parts[1:]
    elif parts[0] in ("super", "self"):
        base = here
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    else:
        return None
    best = None
    for n in range(len(parts) + 1):
        key = base + tuple(parts[:n])
        if key in modules:
            best = modules[key]
            rest = parts[n:]
            again = REEXPORTS.get(key, {}).get(rest[0]) if rest else None
            if again and seen < 8:
                # The name is defined elsewhere: that file is the real dependency.
                followed = resolve(again, key, modules, seen + 1)
                if followed:
                    best = followed
                    break
    return best


def edges(src):
    modules = module_files(src)
    REEXPORTS.update(reexports(src, modules))
    result = set()
    for key, rel in modules.items():
        text = strip_comments(open(os.path.join(src, rel), encoding="utf-8").read())
        inline = inline_modules(text)
        children = {k[-1] for k in modules if len(k) == len(key) + 1 and k[: len(key)] == key}
        paths = []
        for m in re.finditer(r"\buse\s+([^;]*);", text):
            here = key + scope(inline, m.start())
            for path in expand_use(m.group(1)):
                if path.split("::")[0] in children and len(here) == len(key):
                    path = "self::" + path
                paths.append((here, path))
        body = re.sub(r"\buse\s+[^;]*;", lambda m: " " * len(m.group(0)), text)
        for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", body):
            paths.append((key + scope(inline, m.start()), m.group(1)))
        # A parent module reaching into a child by its bare name (`consents::append`).
        for m in re.finditer(r"(?<![\w:])(\w+(?:::\w+)+)", body):
            if m.group(1).split("::")[0] in children and not scope(inline, m.start()):
                paths.append((key, "self::" + m.group(1)))
        for here, path in paths:
            target = resolve(path, here, modules)
            if target and target != rel:
                # `mod.rs` declaring its children is not an import; a path through a parent
                # module to a child is counted at the child.
                result.add((rel, target))
    return modules, result


def scc(nodes, graph):
    index = {}
    low = {}
    stack = []
    on = set()
    comps = []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
            comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return comps


def top(rel):
    return rel.split(os.sep)[0].removesuffix(".rs")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = args[0] if args else "crates/kept-server/src"
    modules, result = edges(src)
    graph = {}
    for a, b in result:
        graph.setdefault(a, set()).add(b)
    if "--edges" in sys.argv:
        for a, b in sorted(result):
            print(f"{a} -> {b}")
    comps = [c for c in scc(modules.values(), graph) if len(c) > 1]
    comps.sort(key=len, reverse=True)
    for comp in comps:
        print(f"circle of {len(comp)}: {' '.join(comp)}")
    broken = 0
    if "--layers" in sys.argv:
        for a, b in sorted(result):
            ta, tb = top(a), top(b)
            if ta == tb:
                continue
            if ta in KITS and tb in FEATURES:
                print(f"kit imports feature: {a} -> {b}")
                broken += 1
            elif ta in FEATURES and tb in FEATURES and os.path.basename(b) in HANDLER_FILES:
                print(f"feature imports another's handlers: {a} -> {b}")
                broken += 1
        print(f"layer rule broken by {broken} edges")
    in_circles = sum(len(c) for c in comps)
    print(f"{len(modules)} files, {len(result)} edges, {in_circles} files in circles "
          f"(largest {max((len(c) for c in comps), default=0)})")


if __name__ == "__main__":
    main()
