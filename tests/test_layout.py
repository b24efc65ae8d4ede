"""The house's layout, read from the sources: imports point one way, no circle.

    facade (_pool) -> router (_router) -> sides (_interp_side, _process_side, _shared_side) -> services

Read with ``ast``, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "manygil"

FACADE = {"_pool", "pool"}
ROUTER = {"_router"}
SIDES = {"_interp_side", "_process_side", "_shared_side"}
# What the sides share; none of them knows a side, the router or the facade.
SERVICES = {"_seats", "_deadlines", "_waits", "_futures", "_refusals", "_faults", "_cpython"}


def _imports() -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports."""
    names = {path.stem for path in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 1:
                base = node.module
            elif node.module and node.module.startswith("manygil"):
                base = node.module.partition(".")[2] or None
            else:
                continue
            if base:
                found.add(base.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        graph[path.stem] = (found & names) - {path.stem}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_package_has_no_import_circle():
    assert _cycles(_imports()) == []


def test_a_circle_would_be_found():
    # The check itself: a made-up graph with one circle.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_one_way():
    graph = _imports()
    for side in SIDES:
        assert not graph[side] & (FACADE | ROUTER | (SIDES - {side})), (side, graph[side])
    for router in ROUTER:
        assert not graph[router] & (FACADE | SIDES), graph[router]
    for service in SERVICES:
        assert not graph[service] & (FACADE | ROUTER | SIDES), (service, graph[service])


def test_only_the_facade_makes_the_other_sides():
    # Who imports the process and shared-GIL sides: the facade (which makes them), and
    # nobody else of the pool; the router knows them only by their protocol.
    graph = _imports()
    for side in ("_process_side", "_shared_side"):
        users = {module for module, deps in graph.items() if side in deps}
        assert users <= FACADE | {"_run"}, (side, users)  # _run asks for the start method only


# "A class over ~300 lines is a design smell" (issue 25): docstrings included, a public
# class's Args and Raises among them, none of the package's is over this.
_LIMIT = 320


def test_no_class_grows_past_about_300_lines():
    grown = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno
                if lines > _LIMIT:
                    grown.append(f"{path.stem}.{node.name}: {lines} lines (limit {_LIMIT})")
    assert not grown, grown


# The private CPython hooks the main interpreter's code uses live in _cpython.py; a worker
# interpreter's (_worker.py) stay there, since it imports nothing it does not need.
_PRIVATE_HOOKS = (
    "threading._register_atexit", "_threading_atexits", "_SHUTTING_DOWN", "atexit._run_exitfuncs",
    "_executor_manager_thread", "_adjust_process_count", "concurrent.futures._base",
)


def test_private_cpython_hooks_are_gathered_in_one_module():
    found = []
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("_cpython", "_worker"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if "``" in code or code.strip().startswith(('"', "'")):
                continue  # named in a docstring, not used
            found += [f"{path.name}:{number}: {hook}" for hook in _PRIVATE_HOOKS if hook in code]
    assert not found, found


def test_every_fault_point_is_in_the_code_and_named_once():
    # Tests hook manygil's named fault points (manygil._faults) instead of patching private
    # methods: a point the code no longer reaches must not keep a test silently passing.
    from manygil import _faults

    calls: dict[str, int] = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "point"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                calls[node.args[0].value] = calls.get(node.args[0].value, 0) + 1
    assert set(calls) == set(_faults.POINTS), set(calls) ^ set(_faults.POINTS)
    assert all(count == 1 for count in calls.values()), calls


def test_a_fault_point_must_exist_and_runs_its_hook_only_while_set():
    from manygil import _faults

    with pytest.raises(ValueError, match="no fault point named 'interp.nowhere'"):
        with _faults.hooked("interp.nowhere", print):
            pass
    seen: list[tuple[object, ...]] = []
    with _faults.hooked("router.refused", lambda *args: seen.append(args)):
        _faults.point("router.refused", 1, 2, 3)
        _faults.point("seats.given", 4)  # another point: no hook
        with pytest.raises(RuntimeError, match="has a hook already"):
            with _faults.hooked("router.refused", print):
                pass
    _faults.point("router.refused", 5)  # the block has ended
    assert seen == [(1, 2, 3)]
