"""The package's layout holds: no import cycle between its modules, counting every import (module level, inside
functions, under TYPE_CHECKING); the core never imports the contrib job types; the documented import paths
of moved modules still give their public names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pgqueue"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports. A subpackage's __init__ is a module like the others
    (pgqueue.sql holds the statement handles); the root's is not a target: importing any submodule runs
    it, and it imports nothing back except lazily, by name, for the public API."""
    paths = {module_of(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    packages = {m for m, p in paths.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for module, path in paths.items():
        here = module if module in packages else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            graph[module] |= {n for n in names if n in paths and n != module and n != "pgqueue"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "pgqueue.enqueuing.insert" in graph and graph["pgqueue.enqueuing.decorator"]  # the graph was read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = "def f():\n    from pgqueue.enqueuing import insert\n"
    imported = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert imported and imported[0].module == "pgqueue.enqueuing"  # ast.walk reaches into function bodies


def test_the_core_never_imports_contrib() -> None:
    importers = {m for m, targets in import_graph().items() if any(t.startswith("pgqueue.contrib") for t in targets)}
    assert {m for m in importers if not m.startswith("pgqueue.contrib")} == {"pgqueue.http"}  # the documented path


@pytest.mark.parametrize(("old", "new", "names"), [
    ("pgqueue.http", "pgqueue.contrib.http", ["request", "BlockedRequest", "HttpClientError", "RetryableHttpError"]),
    ("pgqueue.flow", "pgqueue.enqueuing.flow", ["Unique", "Until", "OnConflict", "RetryOrder", "KeySpec"]),
    ("pgqueue.options", "pgqueue.enqueuing.options", ["JobCall", "JobOptions", "DEPENDENCIES_MAX"]),
    ("pgqueue.batches", "pgqueue.enqueuing.batches", ["Batch", "BatchProgress", "batch"]),
    ("pgqueue.workflows", "pgqueue.enqueuing.workflows", ["enqueue_workflow", "STEPS_MAX"]),
    ("pgqueue.monitor", "pgqueue.ops.monitor", ["snapshot"]),
    ("pgqueue.health", "pgqueue.ops.health", ["report"]),
    ("pgqueue.explain", "pgqueue.ops.explain", ["explain", "format_text"]),
    ("pgqueue.doctor", "pgqueue.ops.doctor", ["run_checks", "Verdict"]),
    ("pgqueue.metrics", "pgqueue.ops.metrics", ["exposition", "uninstall", "PLACEHOLDER_TOKENS"]),
    ("pgqueue.logs", "pgqueue.ops.logs", ["JsonFormatter", "subscribe", "JOB_FIELDS"]),
    ("pgqueue.retention", "pgqueue.ops.retention", ["prune"]),
])
def test_the_documented_paths_of_moved_modules_give_the_same_objects(old: str, new: str, names: list[str]) -> None:
    documented, home = importlib.import_module(old), importlib.import_module(new)
    assert all(getattr(documented, n) is getattr(home, n) for n in names)
