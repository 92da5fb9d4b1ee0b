"""The import graph of the library: one layer order between packages, no cycles between modules.

``LAYERS`` ranks every top-level module and package of msgnet; a module may import only from its
own package or from a lower rank. The order is the architecture: foundations, then data and
networks, models, training, the baselines, sampling, evaluation, the workflow that combines them,
and the command line on top.
"""

from __future__ import annotations

import ast
import sys
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


LAYERS: dict[str, int] = {
    "errors": 0,
    "io": 1, "device": 1, "threads": 1, "components": 1, "config": 1, "run_dir": 1, "locks": 1,
    "layouts": 2, "nn": 2,
    "data": 3, "augmentation": 3,
    "models": 4,
    "training": 5,
    "baselines": 6, "preset_derivation": 6, "step_budget": 6,
    "sampling": 7,
    "evaluation": 8,
    "workflow": 9,
    "cli": 10,
}


def _part(module: str) -> str | None:
    """The top-level module or package of ``module`` (None for the ``msgnet`` package's own face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one, as "a -> b (rank i < j)"."""
    found = []
    for module, edges in graph.items():
        here = _part(module)
        for target in edges:
            there = _part(target)
            if here is None or there is None or here == there:
                continue  # the package face re-exports lazily; a package may import itself
            if LAYERS[there] > LAYERS[here]:
                found.append(f"{module} -> {target} ({here} {LAYERS[here]} < {there} {LAYERS[there]})")
    return sorted(found)


def test_every_package_has_a_layer():
    parts = {_part(m) for m in import_graph()} - {None}
    assert parts == set(LAYERS), f"rank these in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_an_upward_import_is_found():
    # A planted import of evaluation from sampling, one of the package cycles this order removed.
    graph = import_graph()
    graph["msgnet.sampling.pipeline"] = graph["msgnet.sampling.pipeline"] | {"msgnet.evaluation.qc.checker"}
    assert upward_imports(graph) == [
        "msgnet.sampling.pipeline -> msgnet.evaluation.qc.checker (sampling 7 < evaluation 8)"]


def test_a_planted_upward_import_in_a_source_file_fails(tmp_path, monkeypatch):
    """The same through a file: a copy of the package with one module importing upward."""
    import shutil

    copy = tmp_path / "msgnet"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "data" / "rules.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from msgnet.sampling.pipeline import generate\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", copy)
    assert any(u.startswith("msgnet.data.rules -> msgnet.sampling.pipeline") for u in upward_imports(import_graph()))


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
