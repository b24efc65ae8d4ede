"""``pytest --own-gil[=N]``: run each test in N interpreters with their own GIL at once.

Installed with manygil (the ``pytest11`` entry point) and off unless ``--own-gil`` is
given.  Collection, fixtures' setup, marks, ``skip`` and ``xfail`` happen as usual in
the main interpreter; then, instead of calling the test function there, the plugin asks
a child process to call it in N own-GIL interpreters at once (``--own-gil-iterations=K``
runs it K times in each)::

    pytest process                                  child process (_own_gil_child)
    collect, set up fixtures (main interpreter)
    pytest_pyfunc_call ── test's module, name,   ─► N interpreters, each: import the test
                          parameters, fixtures       module, set up its fixtures, wait for
                          that can cross, tmp dirs    the others, call the test
    judge: passed / failed / differs / refused ◄─── outcome + traceback per interpreter
    (the child died: a crash of this test; the next test gets a fresh child)

What crosses into an interpreter: the test function (each interpreter imports its
module), parameters that pickle, ``tmp_path`` (a directory per interpreter), ``monkeypatch``
(a fresh ``MonkeyPatch`` there), ``capsys`` (``readouterr()`` of that interpreter), and
fixtures defined in the test module or a ``conftest.py`` whose own fixtures cross (a
``request`` they take offers only ``request.param``); such fixtures are set up again in
each interpreter for each test, whatever their scope.  A test that needs any other
fixture, or is marked ``own_gil_unsafe``, runs in the main interpreter as usual, and the
report names the reason.  Autouse fixtures that cannot cross are set up in the main
interpreter only (listed in the report).

The report: a module that refuses an own GIL once (with ``manygil.check``'s verdict and
why: single-phase init, or no per-interpreter-GIL slot), its tests then run in the main
interpreter; a failure with the interpreter and the traceback from inside it; a crash of
the child as a crash of the test it was running; a test that passes in some interpreters
and fails in others as "differs between interpreters"; and a line per test module:
loads / runs / fails under own GIL.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

__all__ = ("OwnGilPlugin", "pytest_addoption", "pytest_configure", "pytest_load_initial_conftests")

DIFFERS = "differs between interpreters: likely shared state (a C static, a cached global...)"
_BUILTIN = ("tmp_path", "monkeypatch", "capsys")
_CROSSING = "tmp_path, monkeypatch, capsys, parameters and fixtures of the test module or a conftest.py"
_DEFAULT_TIMEOUT = 300.0


def _count(value: str) -> int:
    """``--own-gil``'s value: a number of interpreters, or ``auto`` (the cores)."""
    if value == "auto":
        cpus = getattr(os, "process_cpu_count", os.cpu_count)()
        return max(1, cpus or 1)
    try:
        n = int(value)
    except ValueError:
        raise pytest.UsageError(f"--own-gil: expected a number of interpreters or 'auto', got {value!r}") from None
    if n < 1:
        raise pytest.UsageError(f"--own-gil: the number of interpreters must be at least 1, got {n}")
    return n


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--own-gil[=N]``, ``--own-gil-iterations=K`` and ``--own-gil-timeout=SECONDS``."""
    group = parser.getgroup("manygil", "manygil: run tests in interpreters with their own GIL")
    group.addoption(
        # a str here: checked in pytest_configure, as argparse's early parse must not fail
        # on "--own-gil tests/" before pytest_load_initial_conftests rewrites it
        "--own-gil", dest="own_gil", nargs="?", const="auto", default=None, metavar="N",
        help="run each test in N own-GIL interpreters at once, in a child process (default N: the cores)",
    )
    group.addoption(
        "--own-gil-iterations", dest="own_gil_iterations", type=int, default=1, metavar="K",
        help="with --own-gil: run each test K times in each interpreter",
    )
    group.addoption(
        "--own-gil-timeout", dest="own_gil_timeout", type=float, default=None, metavar="SECONDS",
        help="with --own-gil: a test still running after this long is reported as a hang "
             "(default: 0.9 x pytest-timeout's timeout, else 300 s)",
    )


def _normalize_args(args: list[str]) -> None:
    """``--own-gil tests/`` means N = cores, not N = "tests/": say ``--own-gil=auto``."""
    for i, arg in enumerate(args):
        if arg == "--own-gil":
            nxt = args[i + 1] if i + 1 < len(args) else ""
            if nxt != "auto" and not nxt.isdigit():
                args[i] = "--own-gil=auto"


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Read a bare ``--own-gil`` followed by a path as ``--own-gil=auto``."""
    if "--own-gil" in args:
        _normalize_args(args)
        early_config.known_args_namespace = parser.parse_known_args(args)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``own_gil_unsafe`` marker; with ``--own-gil``, the plugin object too."""
    config.addinivalue_line(
        "markers", "own_gil_unsafe(reason=None): with --own-gil, run this test in the main interpreter only"
    )
    if config.getoption("own_gil", None) is not None:
        config.pluginmanager.register(OwnGilPlugin(config), "manygil-own-gil")


class _CannotCross(Exception):
    """Why a test runs in the main interpreter."""


@dataclass
class _Plan:
    """What the child needs to run one test (``spec`` goes there as it is)."""

    spec: dict[str, Any]
    needs_tmp_path: bool
    main_only_autouse: dict[str, str]

    @property
    def main_fixtures(self) -> set[str]:
        """The fixtures set up in the main interpreter: those an interpreter does not set up
        itself (the autouse ones that cannot cross), and ``tmp_path``, the base of the
        interpreters' own."""
        return set(self.main_only_autouse) | ({"tmp_path"} if self.needs_tmp_path else set())


@dataclass
class _ModuleStats:
    runs: int = 0
    fails: int = 0
    main: int = 0
    refused: str | None = None
    main_reasons: set[str] = field(default_factory=set)


class _ChildDied(Exception):
    def __init__(self, how: str, stderr: str) -> None:
        super().__init__(how)
        self.how = how
        self.stderr = stderr


class _Child:
    """The child process and its two pipes (requests in, answers out)."""

    def __init__(self) -> None:
        r_req, w_req = os.pipe()
        r_ans, w_ans = os.pipe()
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "manygil._own_gil_child", str(r_req), str(w_ans)],
                pass_fds=(r_req, w_ans), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env,
            )
        except BaseException:
            for fd in (w_req, r_ans):
                os.close(fd)
            self.log.close()
            raise
        finally:
            os.close(r_req)
            os.close(w_ans)
        self.requests = Connection(w_req, readable=False)
        self.answers = Connection(r_ans, writable=False)

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``request`` and wait up to ``timeout`` seconds for the answer.

        Raises:
            _ChildDied: the child died (a crash), or gave no answer in time (it is killed).
        """
        try:
            self.requests.send(request)
        except OSError:
            raise self._died() from None
        if not self.answers.poll(timeout):
            # faulthandler writes every thread's stack on SIGABRT: the report shows where it hung
            self.proc.send_signal(signal.SIGABRT)
            died = self._died()
            died.how = f"no answer within {timeout:g} s"
            raise died
        try:
            answer: dict[str, Any] = self.answers.recv()
        except (EOFError, OSError):
            raise self._died() from None
        return answer

    def _died(self) -> _ChildDied:
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        died = _ChildDied(how, self._tail())
        self._close()
        return died

    def _tail(self, lines: int = 40, most: int = 200) -> str:
        """The end of the child's output: from faulthandler's report if there is one (its first
        line: two threads that crash at once interleave theirs)."""
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace").rstrip()
        start = text.find("Fatal Python error")
        if start >= 0:
            return "\n".join(text[start:].splitlines()[:most])
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        try:
            self.requests.send({"op": "stop"})
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        for conn in (self.requests, self.answers):
            if not conn.closed:
                conn.close()
        self.log.close()


def _default_timeout(config: pytest.Config) -> float:
    try:
        limit = float(config.getini("timeout") or 0)
    except (ValueError, TypeError):
        limit = 0.0
    return 0.9 * limit if limit > 0 else _DEFAULT_TIMEOUT


def _module_key(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _via(chain: list[str]) -> str:
    return f" (needed by {' -> '.join(repr(c) for c in chain)})" if chain else ""


def _uses_only_request_param(func: Any) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    uses = re.findall(r"\brequest\b(\s*\.\s*\w+)?", source)
    return sum(1 for u in uses if not u) == 1 and all(u.replace(" ", "") in ("", ".param") for u in uses)


def _attribute_of(module: Any, func: Any) -> str | None:
    from ._own_gil_child import _unwrap_fixture

    for name, obj in vars(module or {}).items():
        try:
            if obj is func or _unwrap_fixture(obj) is func:
                return name
        except Exception:  # noqa: BLE001 - an object whose attributes misbehave is not it
            continue
    return None


def _pickled(what: str, value: object) -> bytes:
    try:
        return pickle.dumps(value)
    except Exception as exc:  # noqa: BLE001 - any failure means it cannot cross
        raise _CannotCross(f"{what} cannot cross into an interpreter: it does not pickle ({exc})") from None


def _plan_fixtures(item: pytest.Function) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The fixtures an interpreter sets up for ``item``, in order, and the autouse ones it
    cannot (name -> why).

    Raises:
        _CannotCross: a fixture the test asks for cannot be set up in an interpreter.
    """
    info = item._fixtureinfo
    defs = info.name2fixturedefs
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    indices = callspec.indices if callspec is not None else {}
    test_module = item.module.__name__ if item.module is not None else ""
    order: list[dict[str, Any]] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def need(name: str, chain: list[str]) -> None:
        if name in done:
            return
        if name in _BUILTIN:
            order.append({"kind": name, "name": name})
            done.add(name)
            return
        fds = defs.get(name)
        if not fds or name in visiting:
            raise _CannotCross(
                f"fixture {name!r}{_via(chain)} cannot cross into an interpreter (what crosses: {_CROSSING})"
            )
        fd = fds[-1]
        func = fd.func
        if getattr(func, "__name__", "") == "get_direct_param_fixture_func":  # @parametrize's argument
            order.append({"kind": "param", "name": name, "value": _pickled(f"parameter {name!r}", params[name])})
            done.add(name)
            return
        where = getattr(func, "__module__", "") or ""
        if where != test_module and where.rpartition(".")[2] != "conftest":
            raise _CannotCross(
                f"fixture {name!r}{_via(chain)} cannot cross into an interpreter (it comes from {where}; "
                f"what crosses: {_CROSSING})"
            )
        if "." in getattr(func, "__qualname__", ""):
            raise _CannotCross(f"fixture {name!r}{_via(chain)} is defined in a class: it cannot cross")
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise _CannotCross(f"fixture {name!r}{_via(chain)} is async: it cannot cross")
        attr = _attribute_of(sys.modules.get(where), func)
        if attr is None:
            raise _CannotCross(f"fixture {name!r}{_via(chain)} is not a name of {where}: it cannot cross")
        entry: dict[str, Any] = {"kind": "fixture", "name": name, "module": where, "attr": attr,
                                 "argnames": list(fd.argnames)}
        visiting.add(name)
        try:
            for dep in fd.argnames:
                if dep != "request":
                    need(dep, [*chain, name])
                elif not _uses_only_request_param(func):
                    raise _CannotCross(
                        f"fixture {name!r}{_via(chain)} uses 'request' for more than request.param: it cannot cross"
                    )
                elif fd.params is not None and name in indices:
                    entry["param_index"] = indices[name]  # the interpreter takes it from its own copy
                elif name in params:
                    entry["param"] = _pickled(f"the parameter of fixture {name!r}", params[name])
        finally:
            visiting.discard(name)
        order.append(entry)
        done.add(name)

    for name in info.argnames:
        need(name, [])
    for mark in item.iter_markers("usefixtures"):
        for name in mark.args:
            need(name, [])
    not_crossing: dict[str, str] = {}
    for name in info.initialnames:
        if name in done or name == "request" or name.startswith(("_xunit_setup_method", "_xunit_setup_function")):
            continue  # setup_method and setup_function: the interpreter calls them itself
        kept = len(order), set(done)
        try:
            need(name, [])
        except _CannotCross as exc:
            del order[kept[0]:]
            done.clear()
            done.update(kept[1])
            not_crossing[name] = str(exc)
    return order, not_crossing


class OwnGilPlugin:
    """The plugin object registered by ``--own-gil``: runs tests in a child's interpreters."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.n = _count(config.getoption("own_gil"))
        self.iterations: int = max(1, config.getoption("own_gil_iterations"))
        self.timeout: float = config.getoption("own_gil_timeout") or _default_timeout(config)
        self.child: _Child | None = None
        self.plans: dict[str, _Plan | str] = {}
        self.how: dict[str, str] = {}  # nodeid -> interpreters | main | differs | crash | hang
        self.modules: dict[str, _ModuleStats] = {}
        self.refusals: dict[str, list[str]] = {}  # refusing module -> test modules
        self.crashes: list[tuple[str, str]] = []
        self.differs: list[tuple[str, str]] = []
        self.main_only: dict[str, str] = {}
        self.autouse_main: dict[str, str] = {}

    # -------------------------------------------------------------- planning

    def _plan(self, item: pytest.Item) -> _Plan | str:
        plan = self.plans.get(item.nodeid)
        if plan is None:
            try:
                plan = self._make_plan(item)
            except _CannotCross as exc:
                plan = str(exc)
            self.plans[item.nodeid] = plan
        return plan

    def _make_plan(self, item: pytest.Item) -> _Plan:
        if not isinstance(item, pytest.Function) or type(item).__name__ == "TestCaseFunction":
            raise _CannotCross("it is not a plain test function (a unittest, doctest or another plugin's item)")
        mark = item.get_closest_marker("own_gil_unsafe")
        if mark is not None:
            reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
            raise _CannotCross(f"it is marked own_gil_unsafe{': ' + reason if reason else ''}")
        func = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise _CannotCross("it is a coroutine function")
        module = item.module
        file = getattr(module, "__file__", None)
        if module is None or not file:
            raise _CannotCross("its module has no file")
        qualname = item.originalname if item.cls is None else f"{item.cls.__qualname__}.{item.originalname}"
        if "<locals>" in qualname:
            raise _CannotCross("it is defined inside a function")
        fixtures, not_crossing = _plan_fixtures(item)
        config = self.config
        spec = {
            "module": module.__name__,
            "file": file,
            "qualname": qualname,
            "argnames": list(item._fixtureinfo.argnames),
            "fixtures": fixtures,
            "iterations": self.iterations,
            "config_filters": list(config.getini("filterwarnings")),
            "cmdline_filters": list(config.known_args_namespace.pythonwarnings or []),
            "mark_filters": [arg for m in item.iter_markers("filterwarnings") for arg in m.args],
        }
        return _Plan(spec, any(f["kind"] == "tmp_path" for f in fixtures), not_crossing)

    def _stats(self, item: pytest.Item) -> _ModuleStats:
        return self.modules.setdefault(_module_key(item), _ModuleStats())

    def _in_main(self, item: pytest.Item, reason: str) -> None:
        """Note that ``item`` runs in the main interpreter, and set up its fixtures there."""
        request: Any = getattr(item, "_request", None)
        if hasattr(request, "_fillfixtures"):
            request._fillfixtures()  # those left to the interpreters in pytest_runtest_setup
        self.main_only[item.nodeid] = reason
        self.how[item.nodeid] = "main"
        stats = self._stats(item)
        stats.main += 1
        stats.main_reasons.add(reason)

    # -------------------------------------------------------------- hooks

    def pytest_report_header(self, config: pytest.Config) -> str:
        k = f", {self.iterations} times in each" if self.iterations > 1 else ""
        return f"manygil: each test runs in {self.n} own-GIL interpreters at once{k}, in a child process"

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self._plan(item)

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> str:
        crossing = sum(1 for item in items if isinstance(self.plans.get(item.nodeid), _Plan))
        return f"manygil: {crossing} of {len(items)} tests run in own-GIL interpreters"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        # The fixtures that each interpreter sets up itself are not set up here as well:
        # pytest fills item.fixturenames; the whole list is back once they are set up
        # (_in_main sets up the rest, should the test run here after all).
        plan = self._plan(item)
        request = getattr(item, "_request", None)
        full = getattr(item, "fixturenames", None)
        if (not isinstance(plan, _Plan) or self._stats(item).refused is not None or full is None
                or not hasattr(request, "_fillfixtures")):
            return (yield)
        keep = plan.main_fixtures
        item.fixturenames = [name for name in full if name in keep]  # type: ignore[attr-defined]
        try:
            return (yield)
        finally:
            item.fixturenames = full  # type: ignore[attr-defined]

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        item = pyfuncitem
        plan = self._plan(item)
        if not isinstance(plan, _Plan):
            self._in_main(item, plan)
            return None  # pytest calls it here, as usual
        stats = self._stats(item)
        if stats.refused is not None:
            self._in_main(item, f"{stats.refused} refuses an own GIL")
            return None
        for name, why in plan.main_only_autouse.items():
            self.autouse_main.setdefault(name, why)
        answer = self._ask(item, plan)
        if "error" in answer:
            self.how[item.nodeid] = "crash"
            pytest.fail(f"manygil could not run the test in interpreters:\n{answer['error']}", pytrace=False)
        return self._judge(item, answer["results"], stats)

    def _ask(self, item: pytest.Function, plan: _Plan) -> dict[str, Any]:
        tmp_dirs: list[list[str]] = []
        base = item.funcargs.get("tmp_path") if plan.needs_tmp_path else None
        for i in range(self.n):
            dirs = []
            for k in range(self.iterations):
                if base is None:
                    dirs.append("")
                    continue
                path = Path(str(base)) / f"interpreter-{i}"
                if self.iterations > 1:
                    path = path / f"iteration-{k}"
                path.mkdir(parents=True, exist_ok=True)
                dirs.append(str(path))
            tmp_dirs.append(dirs)
        spec = dict(plan.spec, sys_path=list(sys.path), timeout=self.timeout)
        if self.child is None:
            self.child = _Child()
            fresh = True
        else:
            fresh = False
        try:
            if fresh:  # its start (a Python process, manygil's imports) is not the test's time
                self.child.ask({"op": "ping"}, max(60.0, self.timeout))
            return self.child.ask({"op": "run", "n": self.n, "spec": spec, "tmp_dirs": tmp_dirs}, self.timeout)
        except _ChildDied as exc:
            died = exc
        except BaseException:
            self.child.kill()  # interrupted: a child still running this test cannot take the next one
            self.child = None
            raise
        self.child = None
        self.how[item.nodeid] = "hang" if died.how.startswith("no answer") else "crash"
        self.crashes.append((item.nodeid, died.how))
        if self.how[item.nodeid] == "hang":
            what = (f"hung: {died.how} from the {self.n} own-GIL interpreters running this test; the child "
                    "process was stopped with SIGABRT (its stacks are below)")
        else:
            what = f"crashed: the child process running this test in {self.n} own-GIL interpreters died, {died.how}"
        pytest.fail(
            f"{what}; the run goes on with a fresh child.\nThe end of the child's output:\n{died.stderr}",
            pytrace=False,
        )

    def _judge(self, item: pytest.Function, results: list[dict[str, Any]], stats: _ModuleStats) -> bool | None:
        runs = [(r["interpreter"], k, o) for r in results for k, o in enumerate(r["outcomes"])]
        refused = next((o["refused"] for _, _, o in runs if o["status"] == "refused"), None)
        if refused is not None:
            stats.refused = refused
            self.refusals.setdefault(refused, []).append(_module_key(item))
            self._in_main(item, f"{refused} refuses an own GIL")
            return None
        for interp, k, o in runs:
            label = f"interpreter {interp}" + (f", iteration {k + 1}" if self.iterations > 1 else "")
            for stream in ("stdout", "stderr"):
                if o.get(stream):
                    item.add_report_section("call", f"{stream} ({label})", o[stream])
        by_status: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
        for run in runs:
            by_status.setdefault(run[2]["status"], []).append(run)
        failed = by_status.get("failed", [])
        passed = by_status.get("passed", [])
        self.how[item.nodeid] = "interpreters"
        if failed:
            text = self._failure_text(failed)
            if passed:
                self.how[item.nodeid] = "differs"
                where = (f"passed in {self._where(passed)}, failed in {self._where(failed)}")
                self.differs.append((item.nodeid, where))
                text = f"{DIFFERS}\n{where}\n\n{text}"
            if passed or not self._expected_failure(item, failed):
                pytest.fail(text, pytrace=False)
        if "xfailed" in by_status or failed:  # failed here: each with the type xfail(raises=) expects
            pytest.xfail((by_status.get("xfailed") or failed)[0][2]["message"])
        if "skipped" in by_status:
            pytest.skip(by_status["skipped"][0][2]["message"])
        return True

    @staticmethod
    def _expected_failure(item: pytest.Function, failed: list[tuple[int, int, dict[str, Any]]]) -> bool:
        """Whether every failure has the type that the test's ``xfail(raises=...)`` names (the
        exceptions stay in the interpreters: their classes are looked up here by name)."""
        import importlib

        mark = item.get_closest_marker("xfail")
        raises = mark.kwargs.get("raises") if mark is not None else None
        if raises is None:
            return False
        for _, _, outcome in failed:
            module, qualname = outcome.get("type_path") or ("", "")
            try:
                cls: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    cls = getattr(cls, part)
            except (ImportError, AttributeError, ValueError):
                return False
            if not (isinstance(cls, type) and issubclass(cls, raises)):
                return False
        return True

    def _where(self, runs: list[tuple[int, int, dict[str, Any]]]) -> str:
        interps = sorted({interp for interp, _, _ in runs})
        word = "interpreter" if len(interps) == 1 else "interpreters"
        text = f"{word} {', '.join(map(str, interps))}"
        if self.iterations > 1:
            text += f" ({len(runs)} of {len({i for i, _, _ in runs}) * self.iterations} runs there)"
        return text

    def _failure_text(self, failed: list[tuple[int, int, dict[str, Any]]]) -> str:
        groups: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
        for run in failed:  # the same traceback in several interpreters is shown once
            groups.setdefault(run[2]["traceback"], []).append(run)
        parts = [f"---- in {self._where(runs)} ----\n{tb.rstrip()}" for tb, runs in groups.items()]
        return "\n\n".join(parts)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and self.how.get(report.nodeid) in ("interpreters", "differs", "crash", "hang"):
            stats = self.modules.setdefault(report.nodeid.split("::")[0], _ModuleStats())
            stats.runs += 1
            stats.fails += report.failed

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Generator[None, Any, Any]:
        result = yield
        how = self.how.get(report.nodeid)
        if report.when != "call" or how is None or not result or getattr(report, "wasxfail", None) is not None:
            return result
        category, letter, word = result
        text = word[0] if isinstance(word, tuple) else word
        if how == "crash" and report.failed:
            return "failed", "C", ("CRASHED", {"red": True})
        if how == "hang" and report.failed:
            return "failed", "H", ("HUNG", {"red": True})
        if how == "differs" and report.failed:
            return "failed", "D", ("DIFFERS", {"red": True})
        if not text:
            return result
        tag = "main interpreter" if how == "main" else f"{self.n} interpreters"
        text = f"{text} [{tag}]"
        return category, letter, ((text, word[1]) if isinstance(word, tuple) else text)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.section("manygil --own-gil", "=")
        k = f", {self.iterations} times in each" if self.iterations > 1 else ""
        tr.line(f"each test ran in {self.n} own-GIL interpreters at once{k}, in a child process")
        for key, stats in sorted(self.modules.items()):
            loads = f"refuses ({stats.refused})" if stats.refused else "loads"
            line = f"{key}: {loads}; {stats.runs} run, {stats.fails} fail under own GIL"
            if stats.main:
                line += f"; {stats.main} ran in the main interpreter"
            tr.line(line, red=bool(stats.fails), yellow=bool(stats.refused) and not stats.fails)
        if self.refusals:
            tr.line("")
            tr.line("refuses an own GIL (reported once; the tests of these modules ran in the main interpreter):",
                    yellow=True)
            for name, modules in sorted(self.refusals.items()):
                tr.line(f"  {name}: {describe_refusal(name)}; test modules: {', '.join(sorted(set(modules)))}")
        if self.crashes:
            tr.line("")
            tr.line("crashed or hung (the child process died or was stopped; the run went on with a fresh child):",
                    red=True)
            for nodeid, how in self.crashes:
                tr.line(f"  {nodeid}: {how}")
        if self.differs:
            tr.line("")
            tr.line(f"{DIFFERS}:", red=True)
            for nodeid, where in self.differs:
                tr.line(f"  {nodeid}: {where}")
        if self.main_only:
            tr.line("")
            tr.line("ran in the main interpreter:")
            for nodeid, reason in self.main_only.items():
                tr.line(f"  {nodeid}: {reason}")
        if self.autouse_main:
            tr.line("")
            tr.line("autouse fixtures set up in the main interpreter only:")
            for name, why in sorted(self.autouse_main.items()):
                tr.line(f"  {name}: {why}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


# What kind of init an extension module uses: its PyInit_<name> returns a module
# (single-phase init: prints "module") or a PyModuleDef (multi-phase init: prints
# "moduledef" and the value of its Py_mod_multiple_interpreters slot, read with the
# PyModuleDef layout of 3.12-3.15's default builds, or "none"; the slot is number 3, and 86
# when built against 3.15's headers, which renumber slots).  Run in a fresh process,
# like manygil.check's attempts, so a module whose init misbehaves cannot hurt the run.
_INIT_PROBE = r"""
import ctypes, importlib.util, sys
spec = importlib.util.find_spec(sys.argv[1])
init = getattr(ctypes.PyDLL(spec.origin), "PyInit_" + sys.argv[1].rpartition(".")[2])
init.restype = ctypes.py_object
result = init()
kind = type(result).__name__
if kind == "moduledef":
    class Slot(ctypes.Structure):
        _fields_ = [("slot", ctypes.c_int), ("value", ctypes.c_void_p)]
    class Def(ctypes.Structure):
        _fields_ = [(name, ctypes.c_void_p) for name in (
            "ob_refcnt", "ob_type", "m_init", "m_index", "m_copy", "m_name", "m_doc", "m_size", "m_methods")]
        _fields_ += [("m_slots", ctypes.POINTER(Slot))]
    slots, i, value = Def.from_address(id(result)).m_slots, 0, "none"
    while slots and slots[i].slot:
        if slots[i].slot in (3, 86):
            value = str(slots[i].value or 0)
        i += 1
    kind += " " + value
print(kind)
"""
_MULTI_PHASE = "multi-phase init, but "
_WHY = {
    "module": "single-phase init: port it to multi-phase init with a Py_mod_multiple_interpreters slot",
    "moduledef none": _MULTI_PHASE + "no Py_mod_multiple_interpreters slot, which means a shared GIL only: "
                      "add the slot with Py_MOD_PER_INTERPRETER_GIL_SUPPORTED",
    "moduledef 0": _MULTI_PHASE + "its Py_mod_multiple_interpreters slot says "
                   "Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED",
    "moduledef 1": _MULTI_PHASE + "its Py_mod_multiple_interpreters slot says "
                   "Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED (a shared GIL only)",
}


def describe_refusal(name: str) -> str:
    """One line on why extension module ``name`` refuses an own GIL: ``manygil check``'s
    verdict and the kind of init it uses."""
    from .check import check_modules

    path = [p for p in sys.path if p and os.path.isdir(p)]
    try:
        (report,) = check_modules([name], path=path, use_cache=False, timeout=60)
        detail = report.own.detail
        if "module " in detail:  # numpy wraps CPython's message: "Original error was: module ..."
            detail = detail[detail.index("module "):]
        verdict = f"{report.own.status}: {detail}" if detail else report.own.status
        if report.version != "unknown":
            verdict = f"{report.version}; {verdict}"
    except Exception as exc:  # noqa: BLE001 - the report goes on without the verdict
        verdict = f"manygil check failed: {exc}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    try:
        kind = subprocess.run([sys.executable, "-c", _INIT_PROBE, name], capture_output=True, text=True,
                              timeout=60, env=env).stdout.strip()
    except subprocess.TimeoutExpired:
        kind = ""
    why = _WHY.get(kind, "single-phase init, or no Py_mod_multiple_interpreters slot allowing a per-interpreter GIL")
    return f"{verdict} ({why})"
