"""The child process of ``pytest --own-gil``, and what runs inside its interpreters.

::

    pytest process (main interpreter)           child process: python -m manygil._own_gil_child
    ---------------------------------           --------------------------------------------------
    pytest_pyfunc_call(item)
      request {spec, n, tmp dirs} ── pipe ──►   main thread: serve()
                                                  thread i ─► interps[i].call(run_test, spec, ...)
                                                               (own GIL) import the test module,
                                                               set up fixtures, Barrier.wait(),
                                                               call the test, tear down
      outcomes per interpreter ◄──── pipe ────    join the threads, send the outcomes
      (EOF: the child died = a crash of this test; the plugin starts a fresh child)

Actors: the pytest process sends one request at a time and waits for the answer with a
time limit; the child's main thread reads requests and, for each, starts one thread per
interpreter and joins them; each of those threads only calls into its own interpreter.
The interpreters meet in one ``manygil.sync.Barrier`` per request, so that the test bodies
start together.  No lock is shared between the child's threads: each writes its own
slot of the result list, read after ``join``.

The interpreters live as long as the child, like the modules a pytest run imports: a
test module is imported once per interpreter.  Nothing here imports pytest at module
level: ``run_test`` imports it inside the interpreter only when a test needs it.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ("main", "run_test")

REFUSAL_PHRASES = ("does not support loading in subinterpreters", "not supported in subinterpreters")

# Outcome of one run of a test in one interpreter (a plain dict, so that it crosses by
# pickle without importing anything): status is passed, failed, skipped, xfailed or
# refused; refused carries the name of the module that declined the interpreter.
Outcome = dict[str, Any]


def refused_module(text: str) -> str | None:
    """The module named by CPython's refusal message in ``text``, if there is one."""
    import re

    for line in text.splitlines():
        if any(phrase in line for phrase in REFUSAL_PHRASES):
            match = re.search(r"module '?([\w.]+)'? does not support loading in subinterpreters", line)
            return match.group(1) if match else line.strip()
    return None


# ---------------------------------------------------------------- inside an interpreter


def run_test(spec: dict[str, Any], tmp_dirs: list[str], barrier: Any) -> list[Outcome]:
    """Run one test ``spec["iterations"]`` times in this interpreter.

    Args:
        spec: what the plugin sends (see ``pytest_plugin._Plan.spec``).
        tmp_dirs: one ``tmp_path`` per iteration, made by the pytest process.
        barrier: a ``manygil.sync.Barrier`` shared by the interpreters running the test.

    Returns:
        One outcome per iteration, or a single one if the test module did not import.
    """
    sys.path[:] = spec["sys_path"]
    try:
        module = _import_test_module(spec["module"], spec["file"])
        function = _resolve(module, spec["qualname"])
    except BaseException as exc:  # noqa: BLE001 - reported, never raised into the child
        barrier.abort()  # the others must not wait for this one
        return [_failure(exc, "while importing the test module")]
    outcomes = []
    for iteration in range(spec["iterations"]):
        outcomes.append(_run_once(module, function, spec, tmp_dirs[iteration], barrier))
    return outcomes


def _import_test_module(name: str, file: str) -> Any:
    """Import the test module as pytest did, with pytest's assert rewriting if it can."""
    import importlib
    import os

    existing = sys.modules.get(name)
    if existing is not None and os.path.realpath(getattr(existing, "__file__", "") or "") == os.path.realpath(file):
        return existing
    parent = name.rpartition(".")[0]
    if parent:
        importlib.import_module(parent)
    try:
        return _import_rewritten(name, file)
    except ImportError:
        raise
    except Exception:  # noqa: BLE001 - pytest's rewriter is private: plain import then
        sys.modules.pop(name, None)
        return importlib.import_module(name)


def _import_rewritten(name: str, file: str) -> Any:
    import ast
    import importlib.util

    from _pytest.assertion.rewrite import rewrite_asserts

    with open(file, "rb") as f:
        source = f.read()
    tree = ast.parse(source, file)
    rewrite_asserts(tree, source, file, None)
    code = compile(tree, file, "exec", dont_inherit=True)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None:
        raise RuntimeError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _resolve(root: Any, qualname: str) -> Any:
    obj = root
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _unwrap_fixture(obj: Any) -> Any:
    """The function under ``@pytest.fixture`` (pytest 8.4+ and earlier)."""
    getter = getattr(obj, "_get_wrapped_function", None)
    if getter is not None:
        return getter()
    wrapped = getattr(obj, "__pytest_wrapped__", None)
    return wrapped.obj if wrapped is not None else obj


def _fixture_params(obj: Any) -> Any:
    marker: Any = getattr(obj, "_fixture_function_marker", None) or getattr(obj, "_pytestfixturefunction")
    return marker.params


class _Request:
    """What a fixture run inside an interpreter gets as ``request``: only ``param``."""

    def __init__(self, fixturename: str, param: Any) -> None:
        self.fixturename = fixturename
        self.param = param


class _Capsys:
    """``capsys`` inside an interpreter: ``readouterr()`` and ``disabled()``."""

    def __init__(self) -> None:
        import io

        self._saved = (sys.stdout, sys.stderr)
        self._out, self._err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = self._out, self._err

    def readouterr(self) -> Any:
        import io

        import collections

        capture = sys.modules.get("_pytest.capture")
        result_type: Any = getattr(capture, "CaptureResult", None) or collections.namedtuple(
            "CaptureResult", ["out", "err"])
        result = result_type(self._out.getvalue(), self._err.getvalue())
        self._out, self._err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = self._out, self._err
        return result

    def disabled(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def disabled() -> Any:
            sys.stdout, sys.stderr = self._saved
            try:
                yield
            finally:
                sys.stdout, sys.stderr = self._out, self._err

        return disabled()

    def close(self) -> None:
        sys.stdout, sys.stderr = self._saved


def _run_once(module: Any, function: Any, spec: dict[str, Any], tmp_dir: str, barrier: Any) -> Outcome:
    import inspect
    import io
    import pathlib
    import pickle
    import threading
    import warnings

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    finalizers: list[Any] = []
    values: dict[str, Any] = {}
    outcome: Outcome = {"status": "passed"}
    sys.stdout, sys.stderr = out, err
    try:
        with warnings.catch_warnings():
            _apply_warning_filters(spec)
            try:
                instance = None
                if "." in spec["qualname"]:  # a method: a fresh instance of its class, as pytest makes
                    cls = _resolve(module, spec["qualname"].rpartition(".")[0])
                    instance = cls()
                    function = getattr(instance, spec["qualname"].rpartition(".")[2])
                for fixture in spec["fixtures"]:
                    kind, name = fixture["kind"], fixture["name"]
                    if kind == "param":  # pickled by the plugin: loaded here, where the test module is
                        values[name] = pickle.loads(fixture["value"])
                    elif kind == "tmp_path":
                        values[name] = pathlib.Path(tmp_dir)
                    elif kind == "monkeypatch":
                        from _pytest.monkeypatch import MonkeyPatch

                        values[name] = patch = MonkeyPatch()
                        finalizers.append(patch.undo)
                    elif kind == "capsys":
                        values[name] = capsys = _Capsys()
                        finalizers.append(capsys.close)
                    else:
                        values[name] = _setup_fixture(fixture, values, finalizers)
                for hook in ("setup_function",) if instance is None else ("setup_method",):
                    setup = getattr(instance if instance is not None else module, hook, None)
                    if setup is not None:
                        _call_xunit(setup, function)
                        teardown = getattr(instance if instance is not None else module,
                                           hook.replace("setup", "teardown"), None)
                        if teardown is not None:
                            finalizers.append(lambda t=teardown: _call_xunit(t, function))
                kwargs = {name: values[name] for name in spec["argnames"]}
                try:
                    barrier.wait(spec["timeout"])
                except threading.BrokenBarrierError:
                    pass  # another interpreter failed before the test: run anyway
                result = function(**kwargs)
                if inspect.isawaitable(result) or inspect.isgenerator(result):
                    raise TypeError("the test returned an awaitable or a generator; it did not run")
            except BaseException as exc:  # noqa: BLE001 - the outcome says what happened
                outcome = _failure(exc, "")
            finally:
                for fin in reversed(finalizers):
                    try:
                        fin()
                    except BaseException as exc:  # noqa: BLE001 - a fixture's teardown failing fails the test
                        if outcome["status"] in ("passed", "skipped"):
                            outcome = _failure(exc, "while tearing down a fixture")
    finally:
        sys.stdout, sys.stderr = saved
    outcome["stdout"] = out.getvalue()
    outcome["stderr"] = err.getvalue()
    return outcome


def _call_xunit(method: Any, function: Any) -> None:
    import inspect

    if len(inspect.signature(method).parameters):
        method(function)
    else:
        method()


def _setup_fixture(fixture: dict[str, Any], values: dict[str, Any], finalizers: list[Any]) -> Any:
    import importlib
    import inspect
    import pickle

    obj = getattr(importlib.import_module(fixture["module"]), fixture["attr"])
    func = _unwrap_fixture(obj)
    kwargs = {}
    for dep in fixture["argnames"]:
        if dep == "request":
            param = None
            if fixture.get("param_index") is not None:
                param = _fixture_params(obj)[fixture["param_index"]]
                param = param.values[0] if type(param).__name__ == "ParameterSet" else param
            elif "param" in fixture:
                param = pickle.loads(fixture["param"])
            kwargs[dep] = _Request(fixture["name"], param)
        else:
            kwargs[dep] = values[dep]
    if inspect.isgeneratorfunction(func):
        gen = func(**kwargs)
        value = next(gen)

        def finish() -> None:
            try:
                next(gen)
            except StopIteration:
                return
            raise RuntimeError(f"fixture {fixture['name']!r} yielded more than once")

        finalizers.append(finish)
        return value
    return func(**kwargs)


def _apply_warning_filters(spec: dict[str, Any]) -> None:
    import warnings

    try:
        from _pytest.config import apply_warning_filters, parse_warning_filter
    except ImportError:  # pragma: no cover - pytest moved them
        return
    if not sys.warnoptions:  # as pytest does for each test
        warnings.filterwarnings("always", category=DeprecationWarning)
        warnings.filterwarnings("always", category=PendingDeprecationWarning)
    apply_warning_filters(spec["config_filters"], spec["cmdline_filters"])
    for arg in spec["mark_filters"]:
        warnings.filterwarnings(*parse_warning_filter(arg, escape=False))


def _failure(exc: BaseException, when: str) -> Outcome:
    import traceback

    kind = type(exc)
    text_tb = exc.__traceback__
    while text_tb is not None and text_tb.tb_frame.f_code.co_filename == __file__:
        text_tb = text_tb.tb_next  # the frames of this module are noise in the report
    text = "".join(traceback.format_exception(kind, exc, text_tb))
    if when:
        text = f"({when})\n{text}"
    status = "failed"
    outcomes = sys.modules.get("_pytest.outcomes")  # imported if the test used pytest.skip()...
    if outcomes is not None:
        if isinstance(exc, outcomes.XFailed):  # an XFailed is a Failed: ask first
            status = "xfailed"
        elif isinstance(exc, outcomes.Skipped):
            status = "skipped"
    message = str(getattr(exc, "msg", None) or exc)
    refused = refused_module(f"{exc}") if isinstance(exc, ImportError) else None
    if refused is not None:
        status = "refused"
    return {"status": status, "type": kind.__name__, "type_path": (kind.__module__, kind.__qualname__),
            "message": message, "traceback": text, "refused": refused}


# ---------------------------------------------------------------- the child's main thread


def _warm_up(spec: dict[str, Any], done: set[str]) -> None:
    """Import what the interpreters will, in this main interpreter first.

    On CPython 3.12 the first call with keyword arguments of a C function whose
    arguments Argument Clinic parses sets up a parser that every interpreter shares; two
    own-GIL interpreters that import the same module at once race to set it up, and the
    process crashes (importing pytest in two interpreters at once does it on 3.12.1).
    Made here first, those calls are done before any interpreter makes them.  A module
    that fails to import here is left to the interpreters, which report it.
    """
    modules = [("pytest", ""), ("_pytest.assertion.rewrite", ""), ("_pytest.monkeypatch", ""),
               (spec["module"], spec["file"])]
    modules += [(f["module"], "") for f in spec["fixtures"] if f["kind"] == "fixture"]
    for name, file in modules:
        if name in done:
            continue
        done.add(name)
        try:
            if file:
                _import_test_module(name, file)
            else:
                __import__(name)
        except Exception:  # noqa: BLE001 - the interpreters import it again and report
            pass


def _serve_one(interps: list[Any], request: dict[str, Any]) -> list[Any]:
    import threading

    from manygil import sync

    n = request["n"]
    barrier = sync.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = interps[i].call(run_test, request["spec"], request["tmp_dirs"][i], barrier)
        except BaseException as exc:  # noqa: BLE001 - an interpreter that could not run it
            barrier.abort()
            results[i] = [_failure(exc, "manygil could not run the test in this interpreter")]

    threads = [threading.Thread(target=run, args=(i,), name=f"own-gil-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [{"interpreter": interps[i].id, "outcomes": results[i]} for i in range(n)]


def main(argv: list[str]) -> None:
    """Serve requests from the pytest process on the pipes named in ``argv``."""
    import faulthandler
    from multiprocessing.connection import Connection

    faulthandler.enable(all_threads=True)  # a crash prints where, on the stderr the plugin reads
    inbox = Connection(int(argv[1]), writable=False)
    outbox = Connection(int(argv[2]), readable=False)
    from manygil import interpreters

    interps: list[Any] = []
    warm: set[str] = set()
    while True:
        try:
            request = inbox.recv()
        except EOFError:
            break
        if request["op"] == "stop":
            break
        if request["op"] == "ping":  # up: the plugin's clock starts with the next request
            outbox.send({})
            continue
        sys.path[:] = request["spec"]["sys_path"]
        try:
            _warm_up(request["spec"], warm)
            while len(interps) < request["n"]:
                interps.append(interpreters.create())
            answer: dict[str, Any] = {"results": _serve_one(interps, request)}
        except BaseException as exc:  # noqa: BLE001 - told to the plugin, which reports it
            import traceback

            answer = {"error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
        outbox.send(answer)
    for interp in interps:
        interp.close()
    outbox.close()


if __name__ == "__main__":
    main(sys.argv)
