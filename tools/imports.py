#!/usr/bin/env python3
"""The import graph of freshkeep's packages, read from the source with ``ast`` (stdlib only).

    python3 tools/imports.py            edges between packages, then any cycle
    python3 tools/imports.py --modules  edges between modules

A *package* here is ``freshkeep.<first part>`` (``freshkeep.sql``, ``freshkeep.views``, …).
Imports inside ``if TYPE_CHECKING:`` blocks are left out: they never run. Imports inside
functions count (they run when the function does). The layer test (tests/unit/test_layers.py)
reads the same graph.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "freshkeep"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node``, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def imports_of(path: Path) -> set[str]:
    """The freshkeep modules ``path`` imports at run time."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.split(".")[0] != ROOT:
                continue
            found.add(mod)
            for alias in node.names:  # `from freshkeep import views` imports a module
                if (SRC / mod.replace(".", "/") / alias.name).exists() or (
                    SRC / (mod.replace(".", "/") + "/" + alias.name + ".py")
                ).exists():
                    found.add(f"{mod}.{alias.name}")
    found.discard(name)
    return found


def module_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted((SRC / ROOT).rglob("*.py"))}


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, deps in module_graph().items():
        pkg = package_of(mod)
        graph[pkg]
        for d in deps:
            if package_of(d) != pkg:
                graph[pkg].add(package_of(d))
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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


def main(argv: list[str]) -> int:
    graph = module_graph() if "--modules" in argv else package_graph()
    for node in sorted(graph):
        deps = sorted(graph[node])
        print(f"{node} -> {', '.join(deps) if deps else '(nothing)'}")
    found = cycles(graph)
    print()
    if found:
        for c in found:
            print("cycle:", " <-> ".join(c))
    else:
        print("no cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
