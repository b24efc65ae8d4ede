"""Tasks that cannot run in an own-GIL interpreter run elsewhere (issue 14).

Real refusals only: ``mg_single_phase`` (a single-phase-init module built by the tests)
and numpy, which refuse an interpreter with its own GIL on every CPython version."""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from manygil import FallbackWarning, InterpreterPoolExecutor
from manygil.shared import SharedValue
from manygil.sync import Event, Lock

from . import helpers

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture
def refusing(single_phase_dir, monkeypatch):
    """The module ``refusing_tasks``, whose top imports a refusing extension."""
    monkeypatch.syspath_prepend(single_phase_dir)
    monkeypatch.syspath_prepend(FIXTURES)
    import refusing_tasks

    yield refusing_tasks
    assert not multiprocessing.active_children()  # the process side was shut down


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
        assert pool._fallback is not None and pool._fallback.pool is None
    assert not multiprocessing.active_children()


def test_a_script_importing_numpy_at_its_top_keeps_its_pure_functions_in_interpreters():
    pytest.importorskip("numpy")
    pytest.importorskip("psutil")
    out = subprocess.run(
        [sys.executable, os.path.join(FIXTURES, "numpy_script.py")],
        capture_output=True, text=True, timeout=300, cwd=FIXTURES,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if importlib.util.find_spec("pyarrow") is not None:
        assert lines.pop(6) == "with_pyarrow 4 process"
    assert lines == [
        # Calls queued by reference before the first refusal are resent by value, never
        # routed away (a bug: the second refused pure call sent pure to the processes).
        "burst [('pure', 'interpreter'), ('with_numpy', 'process')] ['__main__.with_numpy']",
        "pure 328350 interpreter",
        "with_numpy 4950 process",
        "pure 2646700 interpreter",
        "with_numpy 19900 process",
        "with_psutil 7 process",
        "chunked 480200",
        "routes ['__main__.with_numpy', '__main__.with_psutil']",
    ]
    assert "python -m manygil check numpy" in out.stderr and "python -m manygil check psutil" in out.stderr


def test_a_later_pool_does_not_import_a_script_that_a_module_refused(tmp_path):
    pytest.importorskip("numpy")
    pytest.importorskip("cloudpickle")
    script = tmp_path / "numpy_at_the_top.py"
    script.write_text(textwrap.dedent("""
        print("top level", flush=True)
        if True:  # not imported before the script by a worker: it runs the script's top
            import numpy as np
        from manygil import InterpreterPoolExecutor

        def pure(x):
            return x + 1

        if __name__ == "__main__":
            for _ in range(2):
                with InterpreterPoolExecutor(2) as pool:
                    print(list(pool.map(pure, range(4))), flush=True)
                print("pool closed", flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("[1, 2, 3, 4]") == 2
    # The first pool's workers tried the script (they print its first line, then numpy
    # refuses); the second pool's send pure by value from the start.
    assert "top level" in lines[1:lines.index("pool closed")]
    assert "top level" not in lines[lines.index("pool closed"):]


def test_a_later_pool_does_not_keep_the_route_of_a_redefined_interactive_function():
    pytest.importorskip("numpy")
    pytest.importorskip("cloudpickle")
    code = (
        "import warnings\n"
        "import numpy as np\n"
        "from manygil import FallbackWarning, InterpreterPoolExecutor\n"
        "warnings.simplefilter('ignore', FallbackWarning)\n"
        "def total(n): return int(np.arange(n).sum())\n"
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    pool.submit(total, 4).result(60)\n"
        "    print(sorted(pool.routes()))\n"
        "def total(n): return n * 2\n"  # redefined, as in a notebook: pure now
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    print(sorted(pool.routes()), pool.submit(total, 4).result(60), sorted(pool.routes()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['__main__.total']", "[] 8 []"]


def test_functions_of_an_interactive_session_that_need_numpy_run_in_a_process():
    pytest.importorskip("numpy")
    pytest.importorskip("cloudpickle")
    code = (
        "import os, warnings\n"
        "import numpy as np\n"
        "from manygil import FallbackWarning, InterpreterPoolExecutor\n"
        "warnings.simplefilter('ignore', FallbackWarning)\n"
        "def total(n): return int(np.arange(n).sum()), os.getpid()\n"
        "def twice(n): return n * 2, os.getpid()\n"
        "with InterpreterPoolExecutor(2) as pool:\n"
        "    (a, pa), (b, pb) = pool.submit(total, 10).result(60), pool.submit(twice, 4).result(60)\n"
        "    chunks = [v for v, _ in pool.map(total, [3, 4, 5], chunksize=2)]\n"
        "    print(a, pa != os.getpid(), b, pb == os.getpid(), chunks)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "45 True 8 True [3, 6, 10]"


def _fifos(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    os.mkfifo(release)
    return str(started), str(release)


def _wait_started(started):
    with open(started) as f:  # blocks until the task opened it: it runs
        assert f.read() == "started"


def test_cancel_stops_a_running_process_task_and_loses_nothing_else(refusing, tmp_path):
    started, release = _fifos(tmp_path)
    with InterpreterPoolExecutor(2) as pool:
        with pytest.warns(FallbackWarning):
            assert pool.submit(refusing.where, 1).result(timeout=120)[0] == 2  # routed now
        stuck = pool.submit(refusing.block, started, release)
        _wait_started(started)
        others = [pool.submit(refusing.where, x) for x in range(4)]
        assert stuck.cancel() and stuck.cancelled()
        assert [f.result(timeout=120)[0] for f in others] == [0, 2, 4, 6]
        assert pool.submit(refusing.where, 5).result(timeout=120)[0] == 10


def test_a_time_limit_stops_a_process_task_stuck_in_c(refusing, tmp_path):
    started, release = _fifos(tmp_path)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            stuck = pool.with_timeout(2).submit(refusing.block, started, release)
            _wait_started(started)
            with pytest.raises(TimeoutError, match="block exceeded its time limit of 2 s"):
                stuck.result(timeout=120)
        assert pool.submit(refusing.where, 2).result(timeout=120)[0] == 4


def test_process_tasks_print_to_the_callers_streams(refusing, capsys):
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            assert pool.submit(refusing.shout, "hello").result(timeout=120) == 5
        with pytest.raises(ValueError, match="fail") as info:
            pool.submit(refusing.shout, "fail").result(timeout=120)
        cause = info.value.__cause__  # as for a task in an interpreter
        assert type(cause).__name__ == "ExecutionFailed" and cause.excinfo.msg == "fail"
        assert "in shout" in cause.excinfo.errdisplay
    out, err = capsys.readouterr()
    assert out.splitlines() == ["hello", "fail"] and err.splitlines()[:2] == ["HELLO", "FAIL"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process workers map a memfd: Linux")
def test_shared_buffers_reach_a_process_worker_and_come_back(refusing):
    from manygil.shared import SharedArray, SharedBuffer

    buf, arr = SharedBuffer(8), SharedArray(5, "q")
    with InterpreterPoolExecutor(1) as pool:
        pool.route(refusing.fill)
        back_buf, back_arr, (seen, values, pid) = pool.submit(refusing.fill, buf, arr, 3).result(timeout=120)
        assert pid != os.getpid()
        # The process wrote into this process's memory, and read it back there.
        assert seen == b"\x03\x03\x03\x03ok" == buf.read(0, 6)
        assert values == [0, 3, 6, 9, 12] == arr.tolist()
        # Sent back, they are the same buffers, not copies.
        assert type(back_buf) is SharedBuffer and back_buf.id == buf.id
        back_arr[4] = 99
        assert arr[4] == 99 and back_arr.buffer.id == arr.buffer.id
        # A read-only view stays read-only there.
        pool.route(refusing.write_to)
        with pytest.raises(TypeError, match="read-only|readonly"):
            pool.submit(refusing.write_to, buf.readonly_view()).result(timeout=120)
        # A temporary buffer lives until the task is done with it.
        assert pool.submit(refusing.fill, SharedBuffer(8), SharedArray(2, "q"), 1).result(timeout=120)[2][0] == b"\x01" * 4 + b"ok"


def test_other_shared_objects_cannot_reach_a_process_worker(refusing):
    from manygil import interpreters
    from manygil.shared import SharedValue

    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            pool.submit(refusing.where, 1).result(timeout=120)
        with pytest.raises(interpreters.NotShareableError, match="SharedValue cannot reach a process worker"):
            pool.submit(refusing.where, SharedValue(8))
        pool.route(refusing.make_buffer)
        with pytest.raises(interpreters.NotShareableError, match="made in a process worker cannot leave it"):
            pool.submit(refusing.make_buffer).result(timeout=120)


def test_a_failing_initializer_fails_the_process_tasks_without_retrying_forever(refusing, tmp_path):
    runs = tmp_path / "runs"
    with InterpreterPoolExecutor(1, initializer=helpers.append_then_fail, initargs=(str(runs),)) as pool:
        pool.route(refusing.where)
        futures = [pool.submit(refusing.where, x) for x in range(5)]
        for future in futures:
            with pytest.raises(Exception, match="could start|terminated abruptly"):
                future.result(timeout=120)
    assert runs.read_text() == "ran\n"  # one process tried; the others were not started


def test_a_process_that_dies_in_a_task_fails_that_task_alone(refusing):
    from concurrent.futures.process import BrokenProcessPool

    with InterpreterPoolExecutor(2) as pool:
        pool.route(refusing.crash)
        pool.route(refusing.where)
        crashed = pool.submit(refusing.crash)
        with pytest.raises(BrokenProcessPool):
            crashed.result(timeout=120)
        assert [pool.submit(refusing.where, x).result(timeout=120)[0] for x in range(3)] == [0, 2, 4]


def test_shared_objects_in_initargs_cannot_reach_the_process_side(refusing):
    from concurrent.futures.process import BrokenProcessPool

    from manygil.shared import SharedBuffer, SharedValue

    objects = (SharedBuffer(8), SharedValue(1))
    with InterpreterPoolExecutor(1, initializer=helpers.init_worker, initargs=(objects,)) as pool:
        assert pool.submit(helpers.add, 1, 2).result(timeout=60) == 3  # interpreters: fine
        pool.route(refusing.where)
        with pytest.raises(BrokenProcessPool) as info:
            pool.submit(refusing.where, 1).result(timeout=120)
    assert "SharedValue in this pool's initargs cannot reach a process worker" in str(info.value)


def test_initializer_and_max_tasks_per_worker_on_both_sides(refusing):
    with InterpreterPoolExecutor(1, initializer=helpers.remember, initargs=("x",), max_tasks_per_worker=1) as pool:
        with pytest.warns(FallbackWarning):
            runs = [pool.submit(refusing.remembered).result(timeout=120) for _ in range(3)]
        assert [value for value, _ in runs] == ["x", "x", "x"]
        assert len({pid for _, pid in runs}) == 3  # a fresh process per task
        assert pool.submit(helpers.add, 1, 1).result(timeout=30) == 2


def test_shutdown_waits_for_tasks_in_flight_on_both_sides(refusing):
    pool = InterpreterPoolExecutor(2)
    with pytest.warns(FallbackWarning):
        pool.submit(refusing.where, 0).result(timeout=120)
    futures = [pool.submit(refusing.where, x) for x in range(6)] + [pool.submit(helpers.add, x, x) for x in range(6)]
    pool.shutdown(wait=True)
    assert [f.result(timeout=0)[0] for f in futures[:6]] == [2 * x for x in range(6)]
    assert [f.result(timeout=0) for f in futures[6:]] == [2 * x for x in range(6)]
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(refusing.where, 1)


def test_shutdown_with_wait_after_one_without_waits_for_the_processes(refusing, tmp_path):
    # A ProcessPoolExecutor shut down without waiting forgets its manager thread, so
    # its shutdown(wait=True) later returns at once: the pool waits for it itself (a
    # process outlived shutdown(wait=True) when the last task's slot was retired
    # without waiting just before, a rare race that CI caught once on 3.12).
    pool = InterpreterPoolExecutor(1)
    with pytest.warns(FallbackWarning):
        assert pool.submit(refusing.where, 1).result(timeout=120)[0] == 2
    # Its process now takes a second to exit: shutdown(wait=True) must wait for that.
    assert pool.submit(refusing.slow_to_exit, 3).result(timeout=120) == 3
    pool.shutdown(wait=False)  # its idle slot is shut down without waiting
    pool.shutdown(wait=True)
    assert not multiprocessing.active_children()

    # The slot of the last task retires without waiting as the task ends, just before
    # shutdown(wait=True) collects it.
    started, release = _fifos(tmp_path)
    pool = InterpreterPoolExecutor(1)
    pool.route(refusing.slow_to_exit, "process")
    pool.route(refusing.block, "process")
    assert pool.submit(refusing.slow_to_exit, 4).result(timeout=120) == 4
    blocked = pool.submit(refusing.block, started, release)
    _wait_started(started)
    pool.shutdown(wait=False)
    with open(release, "w") as f:
        f.write("go")
    pool.shutdown(wait=True)
    assert not multiprocessing.active_children()
    assert blocked.result(timeout=0) == "go"


def test_await_run_and_cancelling_the_await_on_the_process_side(refusing, tmp_path):
    import asyncio

    started, release = _fifos(tmp_path)

    async def main(pool):
        assert (await pool.run(refusing.where, 4))[0] == 8
        task = asyncio.ensure_future(pool.run(refusing.block, started, release))
        await asyncio.get_running_loop().run_in_executor(None, _wait_started, started)
        task.cancel()  # stops the task in its process
        with pytest.raises(asyncio.CancelledError):
            await task

    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            pool.submit(refusing.where, 1).result(timeout=120)
        asyncio.run(main(pool))
        assert pool.submit(refusing.where, 3).result(timeout=120)[0] == 6


def test_leaving_the_block_by_keyboard_interrupt_stops_process_tasks_too(refusing, tmp_path):
    started, release = _fifos(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with InterpreterPoolExecutor(1) as pool:
            with pytest.warns(FallbackWarning):
                pool.submit(refusing.where, 1).result(timeout=120)
            stuck = pool.submit(refusing.block, started, release)
            _wait_started(started)
            waiting = pool.submit(refusing.where, 2)  # behind it: the process side has 1 worker
            raise KeyboardInterrupt  # as Ctrl-C would, while a process task runs
    assert stuck.cancelled() and waiting.cancelled()


def test_ctrl_c_finds_a_process_task_that_is_being_started(refusing, tmp_path, monkeypatch):
    # Between the queue and the table of running tasks the pump has released the lock,
    # and the process may already run the task: Ctrl-C missed it there, and shutdown
    # waited for it forever (seen on a loaded machine).  Here it stops in that gap.
    from manygil import _fallback

    started, release = _fifos(tmp_path)
    in_gap, cancelled = threading.Event(), threading.Event()
    original = _fallback._ProcessTask.start

    def start_after_a_pause(task, side, slot):
        if task.label.endswith("block"):
            task.future.add_done_callback(lambda _: cancelled.set())
            in_gap.set()
            if not cancelled.wait(20):
                raise AssertionError("Ctrl-C did not cancel the task being started")
        original(task, side, slot)

    monkeypatch.setattr(_fallback._ProcessTask, "start", start_after_a_pause)
    submitted = []
    with pytest.raises(KeyboardInterrupt):
        with InterpreterPoolExecutor(1) as pool:
            with pytest.warns(FallbackWarning):
                pool.submit(refusing.where, 1).result(timeout=120)
            # The pump runs in the submitting thread: another one, which stops in the gap.
            thread = threading.Thread(target=lambda: submitted.append(pool.submit(refusing.block, started, release)))
            thread.start()
            assert in_gap.wait(60)
            raise KeyboardInterrupt
    thread.join(60)
    assert submitted[0].cancelled()


def test_shutdown_without_waiting_ends_each_process_once_its_task_is_done(refusing, tmp_path):
    started, release = _fifos(tmp_path)
    pool = InterpreterPoolExecutor(2)
    with pytest.warns(FallbackWarning):
        pool.submit(refusing.where, 1).result(timeout=120)
    running = pool.submit(refusing.block, started, release)
    _wait_started(started)
    pool.shutdown(wait=False)
    with open(release, "w") as f:
        f.write("released")
    assert running.result(timeout=60) == "released"
    # As a ProcessPoolExecutor's: its process ends now, not when this process exits.
    deadline = time.monotonic() + 60
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not multiprocessing.active_children()
    pool.shutdown(wait=True)


def test_shutdown_without_waiting_still_runs_process_tasks_that_waited_for_a_seat(refusing):
    # The idle process was shut down at once, and the task waited for it forever.
    pool = InterpreterPoolExecutor(1)  # one seat: the interpreter's task holds it
    with pytest.warns(FallbackWarning):
        pool.submit(refusing.where, 1).result(timeout=120)  # a process is up, idle now
    inside, release = Event(), Event()
    holding = pool.submit(helpers.acquire_and_hold, Lock(), inside, release)
    assert inside.wait(60)
    queued = pool.submit(refusing.where, 2)
    pool.shutdown(wait=False)
    release.set()
    assert holding.result(timeout=60) is True
    assert queued.result(timeout=60)[0] == 4
    pool.shutdown(wait=True)


def test_interpreter_tasks_run_on_while_the_process_side_starts(refusing, monkeypatch):
    # Starting the first process takes 100-300 ms; it was started by the thread that
    # found the refusal, an interpreter worker's, whose next tasks waited for it.
    from manygil import _fallback

    gate = threading.Event()
    original = _fallback.Fallback._new_slot

    def new_slot_when_let_through(self):
        if not gate.wait(60):
            raise AssertionError("the gate was never opened")
        return original(self)

    monkeypatch.setattr(_fallback.Fallback, "_new_slot", new_slot_when_let_through)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            routed = pool.submit(refusing.where, 1)
            assert pool.submit(helpers.add, 1, 2).result(timeout=20) == 3  # the process is not up
        gate.set()
        assert routed.result(timeout=120)[0] == 2


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


def test_a_script_function_that_uses_a_module_that_refused_goes_by_its_globals(single_phase_dir, tmp_path):
    # By value, a function of the script sends only the globals it uses: one that uses
    # the refusing module (itself, or through another function of the script) goes to
    # the processes untried, a pure one stays in the interpreters.
    pytest.importorskip("cloudpickle")
    script = tmp_path / "single_phase_at_the_top.py"
    script.write_text(textwrap.dedent("""
        import os, sys, warnings
        import mg_single_phase
        from manygil import FallbackWarning, InterpreterPoolExecutor

        def pure(x):
            return x + 1, os.getpid()

        def uses_it(x):
            return mg_single_phase.__name__, x, os.getpid()

        def through_another(x):
            return uses_it(x)

        if __name__ == "__main__":
            warnings.simplefilter("ignore", FallbackWarning)
            with InterpreterPoolExecutor(1) as pool:
                value, pid = pool.submit(pure, 1).result(120)  # the script refuses the worker
                print(value, pid == os.getpid())
                for fn in (uses_it, through_another):
                    name, value, pid = pool.submit(fn, 2).result(120)
                    print(fn.__name__, name, value, pid != os.getpid(), pool.routes()["__main__." + fn.__name__])
                value, pid = pool.submit(pure, 5).result(120)
                print(value, pid == os.getpid(), sorted(pool.routes()))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([single_phase_dir, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    why = "process: the extension module mg_single_phase refuses an own-GIL interpreter (it refused an earlier task)"
    assert out.stdout.splitlines() == [
        "2 True",
        f"uses_it mg_single_phase 2 True {why}",
        f"through_another mg_single_phase 2 True {why}",
        "6 True ['__main__.through_another', '__main__.uses_it']",
    ]


def test_a_worker_meets_the_refusal_of_a_scripts_import_before_the_rest_of_the_script(single_phase_dir, tmp_path):
    # A worker imports the script's top-level imports that load extension modules
    # first: mg_single_phase refuses before the script's code and other imports run
    # there (each worker printed both lines before, then met the refusal).
    pytest.importorskip("cloudpickle")
    (tmp_path / "noisy.py").write_text('print("noisy imported", flush=True)\n')
    script = tmp_path / "refused_late.py"
    script.write_text(textwrap.dedent("""
        print("script runs", flush=True)
        import noisy
        import mg_single_phase
        from manygil import InterpreterPoolExecutor

        def pure(x):
            return x + 1

        if __name__ == "__main__":
            with InterpreterPoolExecutor(2) as pool:
                print(list(pool.map(pure, range(4))), flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([single_phase_dir, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["script runs", "noisy imported", "[1, 2, 3, 4]"]


def test_a_notebook_function_that_uses_a_module_that_refused_goes_untried(single_phase_dir):
    # Functions of an interactive session always go by value: what they use decides.
    pytest.importorskip("cloudpickle")
    code = (
        "import os, warnings\n"
        "import mg_single_phase\n"
        "from manygil import FallbackWarning, InterpreterPoolExecutor\n"
        "warnings.simplefilter('ignore', FallbackWarning)\n"
        "def first(n): return mg_single_phase.__name__, os.getpid()\n"
        "def second(n): return first(n)\n"
        "def pure(n): return n * 2, os.getpid()\n"
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    print(pool.submit(first, 1).result(120)[1] != os.getpid())\n"
        "    print(pool.submit(second, 1).result(120)[1] != os.getpid(), pool.routes()['__main__.second'])\n"
        "    print(pool.submit(pure, 1).result(120) == (2, os.getpid()))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([single_phase_dir, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "True",
        "True process: the extension module mg_single_phase refuses an own-GIL interpreter (it refused an earlier task)",
        "True",
    ]


def test_a_process_shut_down_as_it_starts_is_counted_once(refusing, monkeypatch):
    # shutdown() shuts a starting process's pool down; the warm-up's submit then fails.
    # That failure must not read as "no process can start" (which fails every later
    # process task at once, e.g. one an interpreter refuses as the pool shuts down), nor
    # count the slot off twice (one process more than max_workers could start after).
    from manygil import _fallback

    at_gate, gate = threading.Event(), threading.Event()
    original = _fallback.Fallback._new_slot

    def new_slot_that_waits_before_starting(self):
        slot = original(self)
        submit = slot.pool.submit

        def submit_after_the_gate(fn, *args, **kwargs):
            if fn is _fallback._ready:
                at_gate.set()
                assert gate.wait(60)
            return submit(fn, *args, **kwargs)

        slot.pool.submit = submit_after_the_gate
        return slot

    monkeypatch.setattr(_fallback.Fallback, "_new_slot", new_slot_that_waits_before_starting)
    pool = InterpreterPoolExecutor(1)
    with pytest.warns(FallbackWarning):
        queued = pool.submit(refusing.where, 1)
        assert at_gate.wait(60)
    side = pool._fallback
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    side.warmer.join(60)
    assert side.cannot_start is None and side.slots == 0
    pool.shutdown(wait=True)


def test_a_script_without_a_main_guard_is_told_so_by_the_process_worker_too(tmp_path):
    # On 3.14 the forkserver imports __main__ itself, and the guard error ends it: the
    # task fails when its process cannot start (it hung in shutdown, waiting for it).
    pytest.importorskip("numpy")
    script = tmp_path / "no_guard_numpy.py"
    script.write_text(
        "import numpy as np\n"
        "from manygil import InterpreterPoolExecutor\n\n"
        "def total(n):\n    return int(np.arange(n).sum())\n\n"
        "with InterpreterPoolExecutor(2) as pool:\n    print(list(pool.map(total, range(8))))\n"
    )  # several tasks: a process that died broke its slot, and reusing it hung (3.13)
    out = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert "while a process worker imported your main script" in out.stderr
    assert 'no `if __name__ == "__main__":` guard' in out.stderr
    # Once a process could not start, the other tasks fail without starting more: the
    # message comes at most once per worker, not once per task.
    assert out.stderr.count("while a process worker imported your main script") <= 2
    assert "no process worker of this pool could start" in out.stderr


def test_a_task_refused_while_the_pool_shuts_down_still_runs(refusing):
    pool = InterpreterPoolExecutor(1)
    with pytest.warns(FallbackWarning):
        future = pool.submit(refusing.where, 4)  # not routed yet: refused, then rerouted
        pool.shutdown(wait=False)
        assert future.result(timeout=120)[0] == 8
    pool.shutdown(wait=True)


def test_calls_queued_before_the_first_refusal_go_to_the_process_side_unrefused(refusing):
    # One worker: the first call is refused, and its function is routed before the
    # worker takes the next one, so the four calls waiting behind it are sent to the
    # process side directly, without each being loaded and refused in the interpreter.
    refusals = []
    with InterpreterPoolExecutor(1) as pool:
        real = pool._fallback.refused
        pool._fallback.refused = lambda fn, module: refusals.append(module) or real(fn, module)
        with pytest.warns(FallbackWarning):
            futures = [pool.submit(refusing.where, x) for x in range(5)]
            results = [f.result(timeout=120) for f in futures]
    assert [value for value, _, _ in results] == [0, 2, 4, 6, 8]
    assert all(pid != os.getpid() for _, pid, _ in results)
    assert refusals == ["mg_single_phase"]  # only the first call was refused


def test_max_workers_bounds_both_sides_together_and_they_share_it(refusing, tmp_path):
    """Two seats for interpreter and process tasks together.  A process task waits for
    an interpreter task to end; when both kinds have tasks waiting each keeps its fair
    share (one seat of two) instead of handing it over after every task.  Each task
    counts the tasks running as it starts."""
    for name in ("i1", "i2", "i3", "i4", "p1", "p2"):
        os.mkfifo(tmp_path / f"started-{name}")
        os.mkfifo(tmp_path / f"release-{name}")

    def started(name):
        with open(tmp_path / f"started-{name}") as f:
            assert f.read() == "started"

    def release(name):
        with open(tmp_path / f"release-{name}", "w") as f:
            f.write("go")

    folder = str(tmp_path)
    with InterpreterPoolExecutor(2) as pool:
        pool.route(refusing.ledger_task)  # a process from the first call on
        pool.route(refusing.where)
        assert pool.submit(refusing.where, 1).result(timeout=120)[0] == 2  # a process is ready
        futures = {name: pool.submit(helpers.ledger_task, folder, name) for name in ("i1", "i2")}
        started("i1")
        started("i2")
        futures |= {name: pool.submit(refusing.ledger_task, folder, name) for name in ("p1", "p2")}
        futures |= {name: pool.submit(helpers.ledger_task, folder, name) for name in ("i3", "i4")}
        # i1's seat goes to p1 (the interpreters held both); then each kind keeps one.
        for ends, starts in (("i1", "p1"), ("i2", "i3"), ("p1", "p2"), ("i3", "i4")):
            release(ends)
            started(starts)
            assert futures[ends].result(timeout=60) <= 2
        release("p2")
        release("i4")
        seen = {name: future.result(timeout=60) for name, future in futures.items()}
    assert max(seen.values()) == 2, seen  # never three at once
    assert seen["p1"] == seen["p2"] == 2  # each process task started beside a running task


def test_shutdown_stops_a_worker_that_waited_for_a_seat_when_another_retires(tmp_path):
    # Found by the fault injection (seed 3114417556): two interpreter workers wait for a
    # seat the process side holds; at shutdown one of them runs the last task and retires
    # (max_tasks_per_worker); the other must be stopped too, or shutdown waits forever.
    import threading

    gate = tmp_path / "go"
    pool = InterpreterPoolExecutor(2, max_tasks_per_worker=1)
    try:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]  # two interpreter workers, renewed
        pool.route(helpers.in_process_wait_for_path, "process")
        held = [pool.submit(helpers.in_process_wait_for_path, str(gate)) for _ in range(2)]
        seats = pool._fallback.seats
        while seats.held["process"] < 2:  # both seats taken by the process tasks
            assert not any(f.done() for f in held), [f.exception() for f in held]
            threading.Event().wait(0.01)
        last = pool.submit(abs, -3)  # waits for a seat, with the workers idle
        stopper = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
        stopper.start()
        while not pool._state.shutting_down:
            threading.Event().wait(0.01)
        gate.touch()
        assert [f.result(timeout=60) for f in held] == [str(gate)] * 2
        assert last.result(timeout=60) == 3
        stopper.join(timeout=60)
        assert not stopper.is_alive(), "shutdown(wait=True) never returned"
    finally:
        gate.touch()
        pool.shutdown(wait=True)


def _ledger_fifos(folder, *names):
    for name in names:
        os.mkfifo(folder / f"started-{name}")
        os.mkfifo(folder / f"release-{name}")


def _ledger_started(folder, name):
    with open(folder / f"started-{name}") as f:
        assert f.read() == "started"


def _ledger_release(folder, name):
    with open(folder / f"release-{name}", "w") as f:
        f.write("go")


@contextlib.contextmanager
def _cancelled_on_failure(futures):
    """A failing test cancels its tasks (a process task stuck on a FIFO is terminated),
    so that the pool's shutdown does not wait for them."""
    try:
        yield
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _one_behind_the_other(pool, refusing, folder, futures):
    """Ledger task a running in a process, and b queued behind it in that process."""
    _ledger_fifos(folder, "a", "b")
    pool.route(refusing.ledger_task)
    pool.route(refusing.where)
    a = pool.submit(refusing.ledger_task, str(folder), "a")
    futures.append(a)
    _ledger_started(folder, "a")
    b = pool.submit(refusing.ledger_task, str(folder), "b")
    futures.append(b)
    with pool._fallback.lock:
        assert [task.future for task in a._fallback.slot.tasks] == [a, b]
    return a, b


def test_a_process_has_its_next_task_queued_behind_the_running_one(refusing, tmp_path):
    # So that the process starts it as soon as the running one ends, without a trip
    # through this process (about half a millisecond per task otherwise).
    futures = []
    with InterpreterPoolExecutor(1) as pool, _cancelled_on_failure(futures):
        a, b = _one_behind_the_other(pool, refusing, tmp_path, futures)
        c = pool.submit(refusing.where, 3)
        futures.append(c)
        with pool._fallback.lock:
            assert [task.future for task in pool._fallback.pending] == [c]  # one behind each running task
        _ledger_release(tmp_path, "a")
        _ledger_started(tmp_path, "b")
        _ledger_release(tmp_path, "b")
        assert (a.result(timeout=60), b.result(timeout=60), c.result(timeout=60)[0]) == (1, 1, 6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("start-")) == ["start-a", "start-b"]


@pytest.mark.parametrize("how", ["cancel", "time limit"])
def test_stopping_a_process_task_does_not_lose_the_one_queued_behind_it(refusing, tmp_path, how):
    # Its process is terminated: the task behind it had not started (the gate), so it
    # runs on another process, once.
    _ledger_fifos(tmp_path, "b")
    started, release = _fifos(tmp_path)
    futures = []
    with InterpreterPoolExecutor(1) as pool, _cancelled_on_failure(futures):
        pool.route(refusing.block)
        pool.route(refusing.ledger_task)
        limited = pool.with_timeout(1) if how == "time limit" else pool
        a = limited.submit(refusing.block, started, release)
        futures.append(a)
        _wait_started(started)
        b = pool.submit(refusing.ledger_task, str(tmp_path), "b")  # behind a
        futures.append(b)
        with pool._fallback.lock:
            assert [task.future for task in a._fallback.slot.tasks] == [a, b]
        if how == "cancel":
            assert a.cancel()
        else:
            with pytest.raises(TimeoutError, match="exceeded its time limit"):
                a.result(timeout=60)
        _ledger_started(tmp_path, "b")
        _ledger_release(tmp_path, "b")
        assert b.result(timeout=60) == 1
        assert pool.submit(refusing.where, 2).result(timeout=60)[0] == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("start-")] == ["start-b"]


def test_cancelling_a_task_queued_behind_a_running_one_never_runs_it(refusing, tmp_path):
    futures = []
    with InterpreterPoolExecutor(1) as pool, _cancelled_on_failure(futures):
        a, b = _one_behind_the_other(pool, refusing, tmp_path, futures)
        assert b.cancel() and b.cancelled()
        _ledger_release(tmp_path, "a")
        assert a.result(timeout=60) == 1
        pids = {pool.submit(refusing.where, x).result(timeout=60)[1] for x in range(3)}
        assert len(pids) == 1  # its process was not terminated: only told to skip b
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("start-")] == ["start-a"]


def test_stopping_a_task_whose_process_moved_on_leaves_the_next_one_running(refusing, tmp_path, monkeypatch):
    # a has returned and its process runs b, but a's result is still on its way here
    # (held below): cancelling a now must not terminate the process, which runs b.
    from manygil import _fallback

    _ledger_fifos(tmp_path, "a")
    started, release = _fifos(tmp_path)
    hold, holding = threading.Event(), threading.Event()
    original = _fallback._ProcessTask._done

    def held(task, inner):
        if task.label.endswith("ledger_task") and not holding.is_set():
            holding.set()
            assert hold.wait(60)
        original(task, inner)

    futures = []
    with InterpreterPoolExecutor(1) as pool, _cancelled_on_failure(futures):
        pool.route(refusing.ledger_task)
        pool.route(refusing.block)
        monkeypatch.setattr(_fallback._ProcessTask, "_done", held)
        a = pool.submit(refusing.ledger_task, str(tmp_path), "a")
        futures.append(a)
        _ledger_started(tmp_path, "a")
        b = pool.submit(refusing.block, started, release)
        futures.append(b)
        # b is in its process's queue (held, a's result would stop the pool's thread that
        # puts it there): a ProcessPoolExecutor marks it running then.
        deadline = time.monotonic() + 60
        while not b._fallback.inner.running() and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        try:
            _ledger_release(tmp_path, "a")
            _wait_started(started)  # b runs: a is done in its process
            assert holding.wait(60) and not a.done()  # a's result arrived, and waits here
            assert a.cancel()
        finally:
            hold.set()
        with open(release, "w") as f:
            f.write("released")
        assert b.result(timeout=60) == "released"


def test_a_process_that_died_while_idle_is_replaced_for_the_next_task(refusing):
    # Killed from outside (the OOM killer, a user's kill): the next task found its slot
    # broken, was failed, and "no process worker could start" failed every later one.
    import signal

    with InterpreterPoolExecutor(1) as pool:
        pool.route(refusing.where)
        _, first_pid, _ = pool.submit(refusing.where, 1).result(timeout=120)
        side = pool._fallback
        with side.lock:
            (slot,) = side.idle
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not slot.pool._broken and time.monotonic() < deadline:  # its pool noticed
            threading.Event().wait(0.01)
        assert slot.pool._broken
        results = [pool.submit(refusing.where, x).result(timeout=120) for x in range(3)]
        assert [value for value, _, _ in results] == [0, 2, 4]
        assert first_pid not in {pid for _, pid, _ in results}



def test_a_task_queued_behind_a_long_one_moves_to_a_process_that_came_free(refusing, tmp_path):
    # Queued behind a in a's process, b would wait for a however long it runs; once a
    # seat and a process are free it runs there instead (a ProcessPoolExecutor's queue
    # is shared by its processes).
    _ledger_fifos(tmp_path, "b")
    started, release = _fifos(tmp_path)
    inside, release_x = Event(), Event()
    futures = []
    with InterpreterPoolExecutor(2) as pool, _cancelled_on_failure(futures):
        pool.route(refusing.block)
        pool.route(refusing.ledger_task)
        a = pool.submit(refusing.block, started, release)
        futures.append(a)
        _wait_started(started)
        x = pool.submit(helpers.acquire_and_hold, Lock(), inside, release_x)  # the other seat
        futures.append(x)
        assert inside.wait(60)
        b = pool.submit(refusing.ledger_task, str(tmp_path), "b")
        futures.append(b)
        with pool._fallback.lock:
            assert [task.future for task in a._fallback.slot.tasks] == [a, b]  # behind a
        release_x.set()  # a seat comes free
        assert x.result(timeout=60) is True
        _ledger_started(tmp_path, "b")  # b runs while a still blocks
        _ledger_release(tmp_path, "b")
        assert b.result(timeout=60) == 1
        assert not a.done()
        with open(release, "w") as f:
            f.write("released")
        assert a.result(timeout=60) == "released"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("start-")] == ["start-b"]


# ------------------------------------------------------------ the seats both sides share


def test_a_seat_given_back_wakes_the_side_that_found_none():
    # The policy, without threads: a side whose take() failed is reported by the other
    # side's next give(), under the seats' one lock (issue 30, section 2.1).
    from manygil._fallback import Seats

    seats = Seats(1)
    assert seats.take("interp")
    assert seats.give("interp") is False  # nobody asked
    assert seats.take("interp")
    assert not seats.take("process")  # the process side found no seat...
    assert seats.give("interp") is True  # ...so this give must wake it
    assert seats.take("process")
    assert not seats.take("interp")
    assert seats.give("process") is True
    assert seats.take("interp")
    assert seats.give("interp") is False  # its take succeeded since: nobody waits


def test_a_seat_freed_while_a_process_task_queues_itself_is_not_lost(monkeypatch):
    # The lost wake-up found by reading: the process side's pump found no seat and, before
    # it queued its task, the interpreter side gave its seat back and looked at the queue
    # (without the process side's lock): empty, so nobody was woken, and the task waited
    # beside a free seat (a caller in result() forever).  The window is forced open here.
    from manygil import interpreters as I
    from manygil._fallback import Fallback

    checked = threading.Event()
    real_waiting, real_poke, real_behind = Fallback.waiting, Fallback.poke, Fallback._behind
    q = I.create_queue()

    def waiting(self):
        result = real_waiting(self)
        checked.set()  # the interpreter side has decided whether to wake this side
        return result

    def poke(self):
        checked.set()
        real_poke(self)

    def behind(self, task):  # the pump, its take() failed, the lock held, not queued yet
        if forcing:
            forcing.clear()
            q.put("go")  # the interpreter task ends: its worker gives its seat back
            assert checked.wait(60)
        return real_behind(self, task)

    forcing = []
    monkeypatch.setattr(Fallback, "waiting", waiting)
    monkeypatch.setattr(Fallback, "poke", poke)
    monkeypatch.setattr(Fallback, "_behind", behind)
    with InterpreterPoolExecutor(1) as pool:
        pool.route(helpers.add)
        assert pool.submit(helpers.add, 0, 1).result(timeout=120) == 1  # its process is up, idle
        started = Event()
        blocker = pool.submit(helpers.started_then_wait_on, started, q)
        assert started.wait(60)  # it holds the only seat
        forcing.append(True)
        checked.clear()
        assert pool.submit(helpers.add, 2, 3).result(timeout=30) == 5  # hung before
        assert blocker.result(timeout=60) == "go"


def test_a_seat_freed_while_an_interpreter_task_queues_itself_is_not_lost(monkeypatch, tmp_path):
    # The mirror case: the interpreter side found no seat (a process task held it) and,
    # before it queued its task, the process side gave the seat back and looked (without
    # the pool's lock) for waiting tasks: none yet, so nobody was woken.
    from manygil._pool import _PoolState

    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    os.mkfifo(started)
    os.mkfifo(release)
    checked = threading.Event()
    forcing: list[bool] = []
    real_seat, real_waiting, real_kick = _PoolState._seat, _PoolState.waiting, _PoolState.kick

    def seat(self, worker):  # the pool's lock held
        seated = real_seat(self, worker)
        if not seated and forcing:
            forcing.clear()
            os.close(os.open(release, os.O_WRONLY))  # the process task ends: its seat comes back
            assert checked.wait(60)
        return seated

    def waiting(self):
        result = real_waiting(self)
        checked.set()  # the process side has decided whether to wake this side
        return result

    def kick(self):
        checked.set()
        real_kick(self)

    monkeypatch.setattr(_PoolState, "_seat", seat)
    monkeypatch.setattr(_PoolState, "waiting", waiting)
    monkeypatch.setattr(_PoolState, "kick", kick)
    with InterpreterPoolExecutor(1) as pool:
        assert pool.submit(helpers.cpu, 10).result(timeout=60) == helpers.cpu(10)  # a worker, idle
        pool.route(helpers.fifo_handshake)
        held = pool.submit(helpers.fifo_handshake, started, release)
        with open(started) as f:
            assert f.read() == "started"  # the process task runs, on the only seat
        forcing.append(True)
        checked.clear()
        assert pool.submit(helpers.cpu, 20).result(timeout=30) == helpers.cpu(20)  # hung before
        assert held.result(timeout=60) == ""


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


def test_ctrl_c_stops_a_process_task_run_alone_at_the_program_end():
    # Review found it: _run_alone (CPython 3.12 at the program's end, where no thread can
    # start) took Ctrl-C for the task's outcome, and went on to the next task: one Ctrl-C
    # per task.  Now the task is cancelled, its process ended, and Ctrl-C goes on.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import multiprocessing, signal, sys, threading, time
            sys.path.insert(0, "tests")
            import helpers
            from manygil import InterpreterFuture
            from manygil._fallback import Fallback, _dump_call, _ProcessTask

            signal.signal(signal.SIGINT, signal.default_int_handler)
            side = Fallback("process", 1, None, (), None)
            future = InterpreterFuture()  # what a pool's task has: cancel() stops it running
            future.set_running_or_notify_cancel()
            task = _ProcessTask(future, _dump_call(helpers.block_in_c_for, (60,), {}, []), None, "block")

            def ctrl_c_once_it_runs():
                while not multiprocessing.active_children():
                    time.sleep(0.01)  # a poll for the child: no timing is assumed
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

            threading.Thread(target=ctrl_c_once_it_runs, daemon=True).start()
            try:
                side._run_alone(task)
            except KeyboardInterrupt:
                print("interrupted", future.cancelled(), multiprocessing.active_children())
        """)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "interrupted True []\n", proc.stdout + proc.stderr
