"""CPython's own interpreter and pool tests, run against manygil.

    python tools/upstream_tests.py SRC [--subset ci|all] [-v] [-k PATTERN]

SRC is a copy of CPython 3.14's ``Lib/test`` (Debian's ``libpython3.14-testsuite``;
``./dev upstream`` finds or fetches it).  The tests of ``test_interpreters`` and the
interpreter-pool half of ``test_concurrent_futures`` are copied into a scratch package with
``concurrent.interpreters`` replaced by ``manygil.interpreters`` and
``concurrent.futures.InterpreterPoolExecutor`` by ``manygil.InterpreterPoolExecutor``, then
run by unittest in this interpreter, on any CPython >= 3.12.

Nobody here wrote these tests.  The tables below say which ones do not apply and why:
``SKIP`` are tests of CPython's private internals (or of the standard library's own
choices that manygil makes differently on purpose, as documented in docs/interpreters.md);
``KNOWN`` are real differences not fixed yet: each must still fail, so that the list
shrinks as they are fixed (a known failure that passes is reported and fails the run).
"""

from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import os
import re
import shutil
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
V = sys.version_info[:2]

PRIVATE = "tests CPython's private internals (_interpreters, _testinternalcapi, whence)"
SCRIPTS = "the stdlib pool runs script strings; manygil's pool takes callables only"
CLOUDPICKLE = "manygil sends closures and local objects with cloudpickle on purpose (stdlib: NotShareableError)"
THREADPOOL = "asserts the stdlib pool's thread names and internals (it is a ThreadPoolExecutor)"
SUBPROCESS = "imports concurrent.futures/concurrent.interpreters in a child process by name"
NO_EVENTS = "needs events shared with the workers (skipped for the stdlib pool too)"

# (test id pattern, reason): not run.
SKIP: list[tuple[str, str]] = [
    ("*test_api.LowLevelTests.*", PRIVATE),
    ("*test_api.GetCurrentTests.test_created_with_capi", PRIVATE),
    ("*test_api.ListAllTests.test_created_with_capi", PRIVATE),
    ("*test_api.InterpreterObjectTests.test_whence", PRIVATE),
    ("*test_api.TestInterpreterCall.test_func_in___main___hidden", PRIVATE),
    ("*test_api.TestInterpreterCall.test_stateless_funcs", PRIVATE),
    ("*test_api.TestInterpreterCall.test_stateless_func_returns_arg", PRIVATE),
    ("*test_api.TestInterpreterClose.test_created_with_capi", PRIVATE),
    ("*test_api.TestInterpreterIsRunning.test_created_with_capi", PRIVATE),
    ("*test_api.TestInterpreterIsRunning.test_with_only_background_threads", PRIVATE),
    ("*test_api.TestInterpreterExec.test_created_with_capi", PRIVATE),
    ("*test_api.CreateTests.test_in_subinterpreter", SUBPROCESS),
    ("*test_api.CreateTests.test_in_main", PRIVATE),
    ("*test_api.TestInterpreterPrepareMain.test_created_with_capi", PRIVATE),
    ("*test_api.TestInterpreterClose.test_remaining_daemon_threads", PRIVATE),
    ("*test_api.InterpreterObjectTests.test_cleanup_in_repl",
     "asserts text the stdlib module prints while the REPL finalizes (GH-135729)"),
    ("*test_api.TestInterpreterExec.test_display_preserved_exception",
     "asserts the source line of the stdlib module's own raise statement in the traceback"),
    ("*test_api.TestInterpreterCall.test_call_invalid", CLOUDPICKLE),
    ("*test_api.TestInterpreterCall.test_call_in_thread", CLOUDPICKLE),
    ("*test_api.TestInterpreterPrepareMain.test_not_shareable", CLOUDPICKLE),
    ("*test_api.TestInterpreterCall.test_globals_from_stateless_func",
     "a local function crosses by value with cloudpickle, keeping its own module's globals"),
    ("*test_api.TestInterpreterCall.test_callable_requires_frame",
     "modules cross by reference with cloudpickle, so call(globals) returns a copy instead of raising"),
    ("*test_api.TestInterpreterCall.test_globals_from_builtins",
     "manygil's __main__ has a module __getattr__ (it finds the caller's script's functions)"),
    ("*test_api.TestInterpreterCall.test_func_in___main__*",
     "functions of the caller's __main__ are found by importing its script as __mg_main__, as spawn "
     "does (3.14 runs them in a fake __main__)"),
    ("*test_queues.LowLevelTests.*", PRIVATE),
    ("*test_queues.TestQueueOps.test_put_get_different_interpreters", "lists queues with the private _queues.list_all()"),
    ("*test_queues.TestQueueOps.test_timeout_uses_monotonic_clock", "mocks the private module's time import"),
    ("*test_lifecycle.*", "starts child processes that run CPython's private startup paths"),
    ("*test_interpreter_pool.*test_init_script*", SCRIPTS),
    ("*test_interpreter_pool.*test_submit_script*", SCRIPTS),
    ("*test_interpreter_pool.*test_init_exception_in_script", SCRIPTS),
    ("*test_interpreter_pool.*test_submit_exception_in_script", SCRIPTS),
    ("*test_interpreter_pool.*test_init_closure", CLOUDPICKLE),
    ("*test_interpreter_pool.*test_init_instance_method", CLOUDPICKLE),
    ("*test_interpreter_pool.*test_submit_closure", CLOUDPICKLE),
    ("*test_interpreter_pool.*test_submit_local_instance", CLOUDPICKLE),
    ("*test_interpreter_pool.*test_submit_instance_method", CLOUDPICKLE),
    ("*test_interpreter_pool.*test_pickle_errors_propagate",
     "submits an object that is not callable; the stdlib pool would run it as a script, manygil's "
     "submit() raises TypeError at once"),
    ("*test_interpreter_pool.*test_init_exception_in_func",
     "asserts the text the stdlib pool prints to stderr; manygil chains the initializer's error "
     "to BrokenInterpreterPool instead"),
    ("*test_interpreter_pool.*test_saturation", THREADPOOL),
    ("*test_interpreter_pool.*test_thread_name_prefix*", THREADPOOL),
    ("*test_interpreter_pool.*test_idle_thread_reuse", THREADPOOL),
    ("*test_interpreter_pool.*test_import_interpreter_pool_executor", SUBPROCESS),
    ("*test_interpreter_pool.*test_init_with___main___global", SUBPROCESS),
    ("*test_stress.StressTests.test_create_interpreter_no_memory", PRIVATE),
    ("*test_deadlock.*", "kills and crashes worker processes (ProcessPoolExecutor's failure modes)"),
    ("*.test_free_reference", "counts references through gc in the caller's process, CPython-internal"),
]

# (test id pattern, reason, versions): expected to fail until fixed.
ALL = ((3, 12), (3, 13), (3, 14), (3, 15))
KNOWN: list[tuple[str, str, tuple[tuple[int, int], ...]]] = [
]

CI_SUBSET = [
    "test_interpreters.test_api",
    "test_interpreters.test_queues",
    "test_concurrent_futures.test_interpreter_pool",
    "test_concurrent_futures.test_wait",
    "test_concurrent_futures.test_as_completed",
    "test_concurrent_futures.test_init",
    "test_concurrent_futures.test_shutdown",
]
ALL_MODULES = CI_SUBSET + ["test_interpreters.test_stress"]

REWRITES = [
    (r"\bfrom concurrent import interpreters\b", "from manygil import interpreters"),
    (r"\bfrom concurrent\.interpreters import _queues as queues, _crossinterp\b",
     "from mg_upstream import _mg_queues as queues, _mg_crossinterp as _crossinterp"),
    (r"\bfrom concurrent\.interpreters import _queues as queues\b", "from mg_upstream import _mg_queues as queues"),
    (r"\bfrom concurrent\.interpreters import\b", "from manygil.interpreters import"),
    (r"\bfrom concurrent\.futures\.interpreter import BrokenInterpreterPool\b",
     "from manygil import BrokenInterpreterPool"),
    (r"\bexecutor_type = futures\.InterpreterPoolExecutor\b",
     "executor_type = __import__('manygil').InterpreterPoolExecutor"),
    (r"\bimport test\._crossinterp_definitions as defs\b", "from mg_upstream import _crossinterp_definitions as defs"),
    (r"\bfrom test\._code_definitions import\b", "from mg_upstream._code_definitions import"),
]

# concurrent.interpreters' private submodules that the tests reach for, as manygil spells them.
SHIMS = {
    "_mg_queues.py": """\
from manygil.interpreters import (
    UNBOUND, UNBOUND_ERROR, UNBOUND_REMOVE, ItemInterpreterDestroyed, Queue, QueueEmpty, QueueError,
    QueueFull, create_queue as create,
)
QueueNotFoundError = QueueError
""",
    "_mg_crossinterp.py": """\
from manygil.interpreters import UNBOUND, UNBOUND_ERROR, UNBOUND_REMOVE
_UNBOUND_CONSTANT_TO_FLAG = {UNBOUND_REMOVE: 1, UNBOUND_ERROR: 2, UNBOUND: 3}
""",
    "_support_shim.py": """\
# Names 3.14's tests use that an older test.support lacks, and the private modules' names
# on older versions.  Every copied test module imports this first, in every interpreter.
import contextlib, gc, inspect, sys
from test import support
from test.support import threading_helper

if not hasattr(support, "Py_GIL_DISABLED"):
    support.Py_GIL_DISABLED = False
if not hasattr(support, "force_not_colorized"):
    support.force_not_colorized = lambda f: f
if "thread" not in inspect.signature(getattr(support, "skip_if_sanitizer", lambda thread: 0)).parameters:
    support.skip_if_sanitizer = lambda *a, **k: (lambda f: f)  # not a sanitizer build
if not hasattr(support, "requires_gil_enabled"):
    support.requires_gil_enabled = lambda *a, **k: (lambda f: f)
if not hasattr(support, "nomemtest"):
    support.nomemtest = lambda f: f
if not hasattr(support, "check_sanitizer"):
    support.check_sanitizer = lambda *a, **k: False
if not hasattr(support, "gc_threshold"):
    @contextlib.contextmanager
    def gc_threshold(*args):
        old = gc.get_threshold()
        gc.set_threshold(*args)
        try:
            yield
        finally:
            gc.set_threshold(*old)
    support.gc_threshold = gc_threshold
try:
    import _interpreters
except ImportError:  # 3.12: its ids are objects, and get_current() has no whence
    import types
    import _xxsubinterpreters
    _interpreters = types.ModuleType("_interpreters")
    _interpreters.__dict__.update(vars(_xxsubinterpreters))
    _interpreters.get_current = lambda: (int(_xxsubinterpreters.get_current()), None)
    _interpreters.get_main = lambda: (int(_xxsubinterpreters.get_main()), None)
    sys.modules["_interpreters"] = _interpreters
try:
    import _interpqueues
except ImportError:  # 3.12: the tests only list queues to clean up
    import types
    sys.modules["_interpqueues"] = types.SimpleNamespace(__name__="_interpqueues", list_all=lambda: [])
import asyncio.events
if not hasattr(asyncio.events, "_set_event_loop_policy"):  # a 3.14 test's cleanup uses it
    asyncio.events._set_event_loop_policy = asyncio.events.set_event_loop_policy
""",
}


def prepare(src: str, dest: str) -> None:
    """Copy the upstream tests to DEST/mg_upstream, rewritten to test manygil."""
    pkg = os.path.join(dest, "mg_upstream")
    shutil.rmtree(pkg, ignore_errors=True)
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    for name, text in SHIMS.items():
        with open(os.path.join(pkg, name), "w", encoding="utf-8") as f:
            f.write(text)
    files = [("", "_crossinterp_definitions.py"), ("", "_code_definitions.py")]
    for sub in ("test_interpreters", "test_concurrent_futures"):
        os.makedirs(os.path.join(pkg, sub))
        files += [(sub, name) for name in sorted(os.listdir(os.path.join(src, sub))) if name.endswith(".py")]
    for sub, name in files:
        with open(os.path.join(src, sub, name), encoding="utf-8") as f:
            text = f.read()
        for pattern, repl in REWRITES:
            text = re.sub(pattern, repl, text)
        if sub:
            text = "import mg_upstream._support_shim  # noqa: F401\n" + text
        with open(os.path.join(pkg, sub, name), "w", encoding="utf-8") as f:
            f.write(text)


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


class Result(unittest.TextTestResult):
    """Arms a watchdog per test: a hung test dumps every interpreter's stack and ends the run."""

    def startTest(self, test):
        faulthandler.dump_traceback_later(120, exit=True)
        super().startTest(test)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="CPython 3.14's Lib/test folder (with test_interpreters)")
    ap.add_argument("--subset", choices=("ci", "all"), default="all")
    ap.add_argument("--work", default=os.path.join(HERE, "..", ".venv", "upstream", "%d.%d" % V))
    ap.add_argument("-k", dest="pattern", help="run only test ids containing this")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    prepare(args.src, args.work)
    sys.path.insert(0, args.work)
    import mg_upstream._support_shim  # noqa: F401
    faulthandler.enable()

    modules = CI_SUBSET if args.subset == "ci" else ALL_MODULES
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    skipped: list[tuple[str, str]] = []
    known: dict[str, str] = {}
    for mod in modules:
        for test in iter_tests(loader.loadTestsFromName("mg_upstream." + mod)):
            tid = test.id()
            # The pool's mixins are generated for every executor: keep manygil's.
            if "test_concurrent_futures" in tid and mod != "test_concurrent_futures.test_interpreter_pool":
                cls = tid.split(".")[-2]
                if not cls.startswith("InterpreterPool"):
                    continue
            if args.pattern and args.pattern not in tid:
                continue
            reason = next((r for p, r in SKIP if fnmatch.fnmatch(tid, p)), None)
            if reason:
                skipped.append((tid, reason))
                continue
            for p, r, versions in KNOWN:
                if V in versions and fnmatch.fnmatch(tid, p):
                    known[tid] = r
            suite.addTest(test)

    runner = unittest.TextTestRunner(resultclass=Result, verbosity=2 if args.verbose else 1, stream=sys.stdout)
    result = runner.run(suite)

    # A failing subtest counts for its test.
    failed = {getattr(t, "test_case", t).id(): tb for t, tb in result.failures + result.errors}
    unexpected = {tid: tb for tid, tb in failed.items() if tid not in known}
    fixed = sorted(tid for tid in known if tid not in failed)
    ran = result.testsRun - len(result.skipped)
    print()
    print("CPython %d.%d: %d upstream tests ran, %d passed, %d known failures, %d unexpected failures;"
          " %d not run here (private internals or deliberate differences), %d skipped by the tests"
          % (*V, ran, ran - len(failed), len(failed) - len(unexpected), len(unexpected),
             len(skipped), len(result.skipped)))
    for tid in sorted(unexpected):
        print("  unexpected failure:", tid)
    for tid in fixed:
        print("  known failure now passes (remove it from KNOWN):", tid)
    if args.verbose:
        for tid, reason in skipped:
            print("  not run:", tid, "--", reason)
    return 1 if unexpected or fixed else 0


if __name__ == "__main__":
    sys.exit(main())
