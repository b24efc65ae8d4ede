"""What a task routed to a process worker meets there (issue 14): its streams, shared
objects, the pool's initializer, and processes that fail to start or die."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from manygil import FallbackWarning, InterpreterPoolExecutor

from . import helpers


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


def test_a_process_that_died_while_idle_is_replaced_for_the_next_task(refusing):
    # Killed from outside (the OOM killer, a user's kill): the next task found its slot
    # broken, was failed, and "no process worker could start" failed every later one.
    import signal

    with InterpreterPoolExecutor(1) as pool:
        pool.route(refusing.where)
        _, first_pid, _ = pool.submit(refusing.where, 1).result(timeout=120)
        side = pool._router.other
        with side.books.lock:
            (slot,) = side.books.idle
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not slot.pool._broken and time.monotonic() < deadline:  # its pool noticed
            threading.Event().wait(0.01)
        assert slot.pool._broken
        results = [pool.submit(refusing.where, x).result(timeout=120) for x in range(3)]
        assert [value for value, _, _ in results] == [0, 2, 4]
        assert first_pid not in {pid for _, pid, _ in results}


def test_interpreter_tasks_run_on_while_the_process_side_starts(refusing, fault_point):
    # Starting the first process takes 100-300 ms; it was started by the thread that
    # found the refusal, an interpreter worker's, whose next tasks waited for it.
    gate = threading.Event()

    def when_let_through(starter):
        if not gate.wait(60):
            raise AssertionError("the gate was never opened")

    fault_point("process.slot_making", when_let_through)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            routed = pool.submit(refusing.where, 1)
            assert pool.submit(helpers.add, 1, 2).result(timeout=20) == 3  # the process is not up
        gate.set()
        assert routed.result(timeout=120)[0] == 2


def test_a_done_process_task_keeps_nothing_of_its_pool():
    # Found by review: a process task's future keeps its task (for cancel()), which knows
    # its side: a future the caller kept after the task ended kept the whole process side
    # (its processes' pools, the initializer's arguments).  Once settled, it keeps neither;
    # and the side, shut down and dropped, goes with no garbage collection.
    import gc
    import weakref

    gc.disable()
    try:
        pool = InterpreterPoolExecutor(1)
        pool.route(helpers.add)
        done = [pool.submit(helpers.add, 1, 2)]
        assert done[0].result(timeout=120) == 3
        cancelled = pool.submit(helpers.add, 3, 4)  # may be running: cancel() stops it
        cancelled.cancel()
        done.append(cancelled)
        pool.shutdown(wait=True)
        side = weakref.ref(pool._router.other)
        del pool
        assert all(future._fallback is None for future in done)
        assert side() is None
    finally:
        gc.enable()


@pytest.mark.timeout(120)
def test_a_process_workers_executor_is_held_until_its_manager_thread_ends():
    # gh-125451, which CPython 3.12.1 and 3.13.0 have: a ProcessPoolExecutor collected on
    # a thread that holds its _shutdown_lock runs a weakref callback there that takes the
    # lock again, and hangs.  Its manager thread holds that lock as it marks the executor
    # broken, so a process side freed at that moment hung the program's end (the fault
    # injection found it on 3.12).  Here this thread holds the lock as the last reference
    # goes: the executor must still be held, until its manager thread has ended.
    import gc
    import weakref

    from manygil import _process_side

    side = _process_side.ProcessSide(1, None, (), None)
    slot = side.starter.new_slot()
    assert slot.submit(_process_side._ready).result(timeout=120) is None  # its process is up
    executor, lock = weakref.ref(slot.pool), slot.pool._shutdown_lock
    slot.shut(wait=False)
    manager = slot.manager
    gc.disable()
    try:
        with lock:
            del slot
            held = executor() is not None  # (collected here, 3.12.1 and 3.13.0 hung)
        assert held
        manager.join(60)
        other = side.starter.new_slot()  # the next one held lets go of those whose thread ended
        assert other.submit(_process_side._ready).result(timeout=120) is None
        other.shut(wait=True)
        assert executor() is None
    finally:
        gc.enable()
