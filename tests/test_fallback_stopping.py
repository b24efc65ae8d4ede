"""Stopping process tasks (issue 14): cancel, time limits, Ctrl-C, and the pool's
shutdown with and without waiting, on the process side and on both sides at once."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from manygil import FallbackWarning, InterpreterPoolExecutor
from manygil.sync import Event, Lock

from . import helpers
from .fifos import _fifos, _wait_started


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


def test_a_time_limit_stops_a_process_task_stuck_in_c(refusing, tmp_path, fault_point):
    # The time limit waits until the task is in C: a slow start of its process would
    # otherwise stop it before (and nothing would open the FIFO this test waits on).
    started, release = _fifos(tmp_path)
    in_c = threading.Event()
    fault_point("process.expiring", lambda task: in_c.wait(60))
    with InterpreterPoolExecutor(1) as pool:
        with pytest.warns(FallbackWarning):
            stuck = pool.with_timeout(2).submit(refusing.block, started, release)
            _wait_started(started)
            in_c.set()
            with pytest.raises(TimeoutError, match="block exceeded its time limit of 2 s"):
                stuck.result(timeout=120)
        assert pool.submit(refusing.where, 2).result(timeout=120)[0] == 4


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


def test_ctrl_c_finds_a_process_task_that_is_being_started(refusing, tmp_path, fault_point):
    # Between the queue and the table of running tasks the pump has released the lock,
    # and the process may already run the task: Ctrl-C missed it there, and shutdown
    # waited for it forever (seen on a loaded machine).  Here it stops in that gap.
    started, release = _fifos(tmp_path)
    in_gap, cancelled = threading.Event(), threading.Event()

    def pause(task, books, slot):
        if task.label.endswith("block"):
            task.future.add_done_callback(lambda _: cancelled.set())
            in_gap.set()
            if not cancelled.wait(20):
                raise AssertionError("Ctrl-C did not cancel the task being started")

    fault_point("process.task_starting", pause)
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


def test_ctrl_c_stops_a_process_task_run_alone_at_the_program_end():
    # Review found it: _Starter.run_alone (CPython 3.12 at the program's end, where no
    # thread can start) took Ctrl-C for the task's outcome, and went on to the next task:
    # one Ctrl-C per task.  Now the task is cancelled, its process ended, and Ctrl-C goes on.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import multiprocessing, signal, sys, threading, time
            sys.path.insert(0, "tests")
            import helpers
            from manygil import InterpreterFuture
            from manygil._process_side import ProcessSide, _dump_call, _ProcessTask

            signal.signal(signal.SIGINT, signal.default_int_handler)
            side = ProcessSide(1, None, (), None)
            future = InterpreterFuture()  # what a pool's task has: cancel() stops it running
            future.set_running_or_notify_cancel()
            task = _ProcessTask(side, future, _dump_call(helpers.block_in_c_for, (60,), {}, []), None, "block")

            def ctrl_c_once_it_runs():
                while not multiprocessing.active_children():
                    time.sleep(0.01)  # a poll for the child: no timing is assumed
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

            threading.Thread(target=ctrl_c_once_it_runs, daemon=True).start()
            try:
                side.starter.run_alone(task)
            except KeyboardInterrupt:
                print("interrupted", future.cancelled(), multiprocessing.active_children())
        """)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "interrupted True []\n", proc.stdout + proc.stderr


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


def test_a_process_shut_down_as_it_starts_is_counted_once(refusing, fault_point):
    # shutdown() shuts a starting process's pool down; the warm-up's submit then fails.
    # That failure must not read as "no process can start" (which fails every later
    # process task at once, e.g. one an interpreter refuses as the pool shuts down), nor
    # count the slot off twice (one process more than max_workers could start after).
    at_gate, gate = threading.Event(), threading.Event()

    def wait_before_starting(books, slot):
        at_gate.set()
        assert gate.wait(60)

    fault_point("process.slot_starting", wait_before_starting)
    pool = InterpreterPoolExecutor(1)
    with pytest.warns(FallbackWarning):
        queued = pool.submit(refusing.where, 1)
        assert at_gate.wait(60)
    side = pool._router.other
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    side.books.warmer.join(60)
    assert side.books.cannot_start is None and side.books.slots == 0
    pool.shutdown(wait=True)


def test_a_task_refused_while_the_pool_shuts_down_still_runs(refusing):
    pool = InterpreterPoolExecutor(1)
    with pytest.warns(FallbackWarning):
        future = pool.submit(refusing.where, 4)  # not routed yet: refused, then rerouted
        pool.shutdown(wait=False)
        assert future.result(timeout=120)[0] == 8
    pool.shutdown(wait=True)


@pytest.mark.timeout(120)
def test_the_executors_finalizer_can_run_on_a_thread_that_holds_the_process_side_lock(refusing):
    # A garbage collection runs the executor's finalizer on whatever thread allocates, and
    # the process side's threads allocate while they hold its lock (a task put back, a
    # dispatcher thread started): its shutdown there must not wait for that lock forever.
    from manygil import _pool

    pool = InterpreterPoolExecutor(1)
    pool.route(refusing.where)
    assert pool.submit(refusing.where, 1).result(timeout=120)[0] == 2
    side = pool._router.other
    queued = pool.submit(refusing.where, 2)
    with side.books.lock:
        _pool._shut_down(pool._side, pool._router)  # what the executor's finalizer runs
    assert queued.result(timeout=120)[0] == 4  # submitted before: it still runs
    pool.shutdown(wait=True)
    assert side.books.slots == 0 and not side.books.idle
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(refusing.where, 3)


@pytest.mark.timeout(120)
def test_the_executors_finalizer_gives_no_seat_back(refusing):
    # Run on a thread that holds the seats' lock (not re-entrant), the finalizer's shutdown
    # does not take it: it retires the idle interpreter workers, which hold no seat (a
    # worker gives its seat back before it goes idle), and the process side's
    # shutdown(wait=False) gives none.  (A collection runs it on a thread of its own.)
    from manygil import _pool

    pool = InterpreterPoolExecutor(1)
    pool.route(refusing.where)
    assert pool.submit(helpers.add, 1).result(timeout=60) == 1
    assert pool.submit(refusing.where, 1).result(timeout=120)[0] == 2
    seats = pool._router.other.books.seats
    with seats.lock:
        held = dict(seats.held)
        _pool._shut_down(pool._side, pool._router)  # what the executor's finalizer runs
    pool.shutdown(wait=True)
    assert held == seats.held == {"interp": 0, "process": 0}


@pytest.mark.timeout(120)
def test_a_garbage_collection_that_drops_the_pool_under_the_process_side_lock_does_not_deadlock(fault_point):
    # Found by review: a collection runs the executor's finalizer on the thread that
    # allocated, which may hold the process side's lock.  Run there, the finalizer's
    # shutdown took the interpreter side's lock next: the reverse of the lock order, while
    # an interpreter worker that gave its seat back held that lock and waited for the
    # process side's.  Forced here: this thread holds the process side's lock, a worker
    # waits for it holding its side's, and the collection drops the pool.
    import gc

    from manygil import interpreters as I

    at_give = threading.Event()

    def given(seats, side, woke):
        if side == "interp" and woke:
            at_give.set()  # the worker holds its side's lock, and goes for this side's

    fault_point("seats.given", given)
    pool = InterpreterPoolExecutor(1)
    pool.route(helpers.add)
    assert pool.submit(helpers.add, 0, 1).result(timeout=120) == 1  # its process is up, idle
    q = I.create_queue()
    started = Event()
    blocker = pool.submit(helpers.started_then_wait_on, started, q)
    assert started.wait(60)  # it holds the only seat
    queued = pool.submit(helpers.add, 2, 3)  # waits for that seat
    side, router = pool._side, pool._router
    books = router.other.books
    pool.cycle = pool  # only a collection can drop it
    gc.disable()
    try:
        del pool
        with books.lock:
            q.put("go")  # the interpreter task ends: its worker gives its seat back
            assert at_give.wait(60)
            gc.collect()  # the executor's finalizer, on this thread
    finally:
        gc.enable()
    assert blocker.result(timeout=60) == "go"
    assert queued.result(timeout=60) == 5
    side.shutdown(True, False)
    router.shutdown(True, False)
    assert side.schedule.shutting_down and books.closed
