"""The package's import graph has no circle (issue 19).

Walks ``src/mineru_cli/**/*.py`` with ``ast`` and collects every import of a module of the
package: module-level ones AND the lazy ones inside functions (a circle of lazy imports is
still a circle in the design), ``TYPE_CHECKING`` blocks included. Not counted: the implicit
import of a parent package's ``__init__`` that Python makes when a submodule is imported
(``mineru_cli.backend.rules`` also runs ``mineru_cli/backend/__init__.py``); an explicit
``from . import x`` of the package itself is counted. Fails on any cycle, printing it.
"""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
PACKAGE = "mineru_cli"


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """``{module: {intra-package modules it imports}}`` (dotted names, self-edges dropped)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                subs = [f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in mods]
                targets = subs if subs and len(subs) == len(node.names) else [prefix, *subs]
            for t in targets:
                while t and t not in mods and "." in t:  # ``import mineru_cli.x.y`` of a name inside x
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search, stable order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_walker_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "mineru_cli.cli" in graph and "mineru_cli.convert" in graph["mineru_cli.cli"]  # lazy, in a function
    assert "mineru_cli.errors" in graph["mineru_cli.cli"]  # module level
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_convert_runs_tasks_only_through_the_executor_protocol():
    """convert (and run, its batch loop) reach the executors only through the Executor protocol
    and its factory: no module but executor imports an executor's module; both executors define
    every member of the protocol, with the protocol's parameters."""
    import inspect

    from mineru_cli.executor import Executor
    from mineru_cli.pool import LocalPool
    from mineru_cli.ray_pool import RayPool

    graph = import_graph()
    assert [m for m, deps in graph.items() if {"mineru_cli.pool", "mineru_cli.ray_pool"} & deps] == ["mineru_cli.executor"]
    assert "mineru_cli.executor" in graph["mineru_cli.run"]
    members = sorted(n for n in vars(Executor) if not n.startswith("_"))
    assert members == ["close", "idle", "peak_memory", "poll", "running", "submit", "unqueue"]
    for cls in (LocalPool, RayPool):
        for name in members:
            want, got = vars(Executor)[name], vars(cls).get(name)
            assert got is not None, f"{cls.__name__} lacks {name}"
            if isinstance(want, property):
                assert isinstance(got, property), f"{cls.__name__}.{name} is not a property"
                continue
            assert list(inspect.signature(got).parameters) == list(inspect.signature(want).parameters), name
