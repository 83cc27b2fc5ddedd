"""The layered core (STYLE.md, "Layers"): imports only point down a floor, and no module import circle.

Floors, bottom up: ``datasets`` and ``trainables`` (1), ``analysis`` (2), ``study`` (3). Every import
statement of the packages is read with ``ast`` (function-level imports included), so a lazy import
that points up a floor fails here as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

FLOORS = {"datasets": 1, "trainables": 1, "analysis": 2, "study": 3}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a.b import c`` counts ``a.b`` and ``a.b.c``)."""
    modules = {module_name(p): p for package in FLOORS for p in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_imports_only_point_down_a_floor():
    up = [(name, target) for name, targets in imports().items() for target in targets
          if FLOORS[target.split(".")[0]] > FLOORS[name.split(".")[0]]]
    assert up == [], up


def test_floor_one_packages_do_not_import_each_other_upwards_or_sideways_into_studies():
    graph = imports()
    for name, targets in graph.items():
        if name.split(".")[0] == "trainables":
            assert not any(t.startswith(("analysis", "study")) for t in targets), (name, targets)


def test_no_import_circle():
    graph = imports()
    # A package's __init__ re-exporting its modules is not a circle of the code: drop package -> child edges.
    edges = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in edges.get(node, ()):
            if state.get(target) == 1:
                raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(target):] + [target])}")
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
