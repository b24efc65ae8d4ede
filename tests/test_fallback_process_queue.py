"""A process worker's queue (issue 14): each process has its next task queued behind the
running one, and stopping, cancelling or moving that task loses nothing and runs nothing
twice.  Tasks report their start through FIFOs (``ledger_task``)."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from manygil import InterpreterPoolExecutor
from manygil.sync import Event, Lock

from . import helpers
from .fifos import _fifos, _wait_started


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
    with pool._router.other.books.lock:
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
        with pool._router.other.books.lock:
            assert [task.future for task in pool._router.other.books.pending] == [c]  # one behind each running task
        _ledger_release(tmp_path, "a")
        _ledger_started(tmp_path, "b")
        _ledger_release(tmp_path, "b")
        assert (a.result(timeout=60), b.result(timeout=60), c.result(timeout=60)[0]) == (1, 1, 6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("start-")) == ["start-a", "start-b"]


@pytest.mark.parametrize("how", ["cancel", "time limit"])
def test_stopping_a_process_task_does_not_lose_the_one_queued_behind_it(refusing, tmp_path, how, fault_point):
    # Its process is terminated: the task behind it had not started (the gate), so it
    # runs on another process, once.  The time limit waits until b is queued behind a
    # (a slow start of a's process, or of this thread, would end a sooner).
    _ledger_fifos(tmp_path, "b")
    started, release = _fifos(tmp_path)
    queued = threading.Event()
    fault_point("process.expiring", lambda task: queued.wait(60))
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
        with pool._router.other.books.lock:
            assert [task.future for task in a._fallback.slot.tasks] == [a, b]
        queued.set()
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


def test_stopping_a_task_whose_process_moved_on_leaves_the_next_one_running(refusing, tmp_path, fault_point):
    # a has returned and its process runs b, but a's result is still on its way here
    # (held below): cancelling a now must not terminate the process, which runs b.
    _ledger_fifos(tmp_path, "a")
    started, release = _fifos(tmp_path)
    hold, holding = threading.Event(), threading.Event()

    def held(task, inner):
        if task.label.endswith("ledger_task") and not holding.is_set():
            holding.set()
            assert hold.wait(60)

    futures = []
    with InterpreterPoolExecutor(1) as pool, _cancelled_on_failure(futures):
        pool.route(refusing.ledger_task)
        pool.route(refusing.block)
        fault_point("process.task_done", held)
        a = pool.submit(refusing.ledger_task, str(tmp_path), "a")
        futures.append(a)
        _ledger_started(tmp_path, "a")
        b = pool.submit(refusing.block, started, release)
        futures.append(b)
        # b is in its process's queue (held, a's result would stop the pool's thread that
        # puts it there): a ProcessPoolExecutor marks it running then.
        deadline = time.monotonic() + 60
        def b_running():
            task = b._fallback  # None once b is settled (it would have failed early)
            return task is not None and task.inner is not None and task.inner.running()

        while not b_running() and time.monotonic() < deadline:
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
        with pool._router.other.books.lock:
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
