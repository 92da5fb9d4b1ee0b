"""The import graph of the library: no cycles between modules, and no library module imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import msgnet

ROOT = Path(msgnet.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the msgnet modules it imports anywhere in its body (function-level imports too)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_library_module_imports_the_cli():
    graph = import_graph()
    offenders = {m: sorted(e for e in edges if e.startswith("msgnet.cli"))
                 for m, edges in graph.items() if not m.startswith("msgnet.cli")}
    assert not {m: e for m, e in offenders.items() if e}


def test_no_import_cycles():
    # Package __init__ files only re-export their children: an edge into a package's face is not a cycle.
    graph = import_graph()
    packages = {m for m in graph if (ROOT.parent / m.replace(".", "/") / "__init__.py").is_file()}
    trimmed = {m: {e for e in edges if e not in packages} for m, edges in graph.items() if m not in packages}
    assert _cycles(trimmed) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
