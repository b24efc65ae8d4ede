"""Where a task goes when an own-GIL interpreter refuses it (issue 14): the route table,
the learned refusals, the fallback modes and their warnings.

Real refusals only: ``mg_single_phase`` (a single-phase-init module built by the tests)
and numpy, which refuse an interpreter with its own GIL on every CPython version."""

from __future__ import annotations

import multiprocessing
import os
import warnings

import pytest

from manygil import FallbackWarning, InterpreterPoolExecutor
from manygil.shared import SharedValue

from . import helpers


def test_a_refused_function_runs_in_a_process_and_its_later_calls_go_there(refusing):
    with InterpreterPoolExecutor(2) as pool:
        with pytest.warns(FallbackWarning, match="refusing_tasks.where runs in a process worker.*mg_single_phase"):
            value, pid, _ = pool.submit(refusing.where, 21).result(timeout=120)
        assert value == 42 and pid != os.getpid()
        assert pool.routes() == {
            "refusing_tasks.where": "process: the extension module mg_single_phase refuses an own-GIL interpreter"
        }
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per function
            results = list(pool.map(refusing.where, range(7), chunksize=3))
            again = pool.submit(refusing.where, 1).result(timeout=120)
        assert [r[0] for r in results] == [2 * x for x in range(7)]
        assert all(pid != os.getpid() for _, pid, _ in results + [again])
        # Other functions still run in the interpreters.
        assert pool.submit(helpers.add, 1, 2).result(timeout=30) == 3
        assert pool.submit(helpers.current_pid).result(timeout=30) == os.getpid()


def test_fallback_none_raises_the_import_error_with_the_fix(refusing):
    with InterpreterPoolExecutor(1, fallback=None) as pool:
        with pytest.raises(ImportError, match="mg_single_phase") as info:
            pool.submit(refusing.where, 1).result(timeout=60)
        assert any('fallback="process"' in note for note in info.value.__notes__)
        # The worker's traceback, which a pool with a fallback side leaves out.
        assert "refusing_tasks.py" in info.value.__cause__.excinfo.errdisplay
        assert pool.routes() == {}


def test_fallback_shared_gil_runs_it_in_this_process(refusing):
    with InterpreterPoolExecutor(1, fallback="shared-gil") as pool:
        with pytest.warns(FallbackWarning, match="shared-GIL interpreter"):
            value, pid, interp_id = pool.submit(refusing.where, 5).result(timeout=60)
        assert (value, pid) == (10, os.getpid()) and interp_id > 0
        assert list(pool.routes().values())[0].startswith("shared-gil:")


def test_a_refusal_inside_a_running_task_is_not_run_again(single_phase_dir, monkeypatch):
    monkeypatch.syspath_prepend(single_phase_dir)
    runs = SharedValue(0)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(ImportError, match="mg_single_phase") as info:
            pool.submit(helpers.count_then_import, runs, "mg_single_phase").result(timeout=60)
        assert runs.value == 1  # it ran once, in the interpreter, and was not re-run
        # manygil's explanation first, then the import's own message (numpy's advice on a
        # broken install came three times before it, issue 29)
        message = str(info.value)
        assert message.startswith("manygil: the extension module mg_single_phase refuses to load"), message
        assert 'pool.route(fn, "process")' in message
        assert message.endswith("module mg_single_phase does not support loading in subinterpreters"), message
        assert pool.routes() == {}
        pool.route(helpers.count_then_import)  # the explicit way: a process from now on
        assert pool.submit(helpers.count_then_import, None, "mg_single_phase").result(timeout=120) == "imported"
        assert "helpers.count_then_import" in next(iter(pool.routes()))
    assert not multiprocessing.active_children()


def test_bad_fallback_and_route_say_what_to_use():
    with pytest.raises(ValueError, match='fallback must be "process", "shared-gil" or None'):
        InterpreterPoolExecutor(1, fallback="processes")
    with InterpreterPoolExecutor(1, fallback=None) as pool:
        with pytest.raises(ValueError, match=r"fallback is None; create the pool with InterpreterPoolExecutor\(fallback='process'\)"):
            pool.route(helpers.add, "process")


def test_a_pure_python_program_starts_no_process():
    with InterpreterPoolExecutor(2) as pool:
        assert list(pool.map(helpers.add, range(20), range(20))) == [2 * x for x in range(20)]
        assert pool._router is not None and pool._router.other.books.slots == 0  # no process slot made
    assert not multiprocessing.active_children()


def test_a_later_pool_sends_a_refused_function_to_its_processes_from_the_first_call(refusing):
    key = "refusing_tasks.where"
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            assert pool.submit(refusing.where, 1).result(timeout=120)[1] != os.getpid()
    with InterpreterPoolExecutor(1) as pool, warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # no refusal, no second warning
        assert "learned by an earlier pool" in pool.routes()[key]  # before any call
        doubled, pid, _ = pool.submit(refusing.where, 2).result(timeout=120)
        assert doubled == 4 and pid != os.getpid()
    with InterpreterPoolExecutor(1, fallback=None) as pool:
        assert pool.routes() == {}
        with pytest.raises(ImportError):
            pool.submit(refusing.where, 1).result(timeout=120)


def test_another_function_of_a_module_that_refused_goes_to_the_processes_untried(refusing):
    # The first refusal names refusing_tasks (whose import failed on mg_single_phase): a
    # call of another of its functions is routed as it is submitted, never refused again.
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            assert pool.submit(refusing.where, 1).result(timeout=120)[1] != os.getpid()
        with pytest.warns(FallbackWarning, match="refusing_tasks.shout runs in a process worker"):
            shouted = pool.submit(refusing.shout, "hi")
        assert pool.routes()["refusing_tasks.shout"] == (
            "process: the extension module mg_single_phase refuses an own-GIL interpreter "
            "(it refused an earlier task)"
        )
        assert shouted.result(timeout=120) == 2
        assert pool.submit(helpers.add, 1, 2).result(timeout=30) == 3  # other modules: unaffected


def test_calls_queued_before_the_first_refusal_go_to_the_process_side_unrefused(refusing, fault_point):
    # One worker: the first call is refused, and its function is routed before the
    # worker takes the next one, so the four calls waiting behind it are sent to the
    # process side directly, without each being loaded and refused in the interpreter.
    refusals = []
    with InterpreterPoolExecutor(1) as pool:
        fault_point("router.refused", lambda table, fn, module: refusals.append(module))
        with pytest.warns(FallbackWarning):
            futures = [pool.submit(refusing.where, x) for x in range(5)]
            results = [f.result(timeout=120) for f in futures]
    assert [value for value, _, _ in results] == [0, 2, 4, 6, 8]
    assert all(pid != os.getpid() for _, pid, _ in results)
    assert refusals == ["mg_single_phase"]  # only the first call was refused


def test_a_call_whose_argument_refused_runs_in_a_process_but_the_function_is_not_routed(refusing):
    # One call with an argument whose class needs a refusing module sent every later call
    # of the function to processes ("builtins.sum runs in a process worker from now on"),
    # though the function itself loads fine (issue 29, item 6).
    import types

    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning, match="a call of tests.helpers.value_and_pid ran in a process worker.*argument"):
            value, pid = pool.submit(helpers.value_and_pid, refusing.Box(2)).result(timeout=120)
        assert value == 2 and pid != os.getpid()
        assert pool.routes() == {}
        value, pid = pool.submit(helpers.value_and_pid, types.SimpleNamespace(value=3)).result(timeout=60)
        assert value == 3 and pid == os.getpid()  # in an interpreter
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once per function
            value, pid = pool.submit(helpers.value_and_pid, refusing.Box(4)).result(timeout=120)
        assert value == 4 and pid != os.getpid()
