"""The pool's time limits, both sides' (``_deadlines.Deadlines``): the service alone, with
callbacks instead of sides (issue 25)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from manygil._deadlines import Deadlines, Lease

pytestmark = pytest.mark.timeout(60)

NOW = time.monotonic() - 60  # past: due at once
LATER = NOW + 1e12  # never, within a test
LOGGER = "concurrent.futures"  # manygil's log messages go where concurrent.futures' do


def _alive() -> bool:
    return True


def _made() -> tuple[Deadlines, Lease]:
    """Deadlines with one side's lease on them."""
    deadlines = Deadlines("t-")
    return deadlines, deadlines.lease()


def test_deadlines_act_in_the_order_of_their_times():
    deadlines, lease = _made()
    seen: list[str] = []
    done = threading.Event()
    with deadlines.lock:  # all three are in the heap before the thread looks
        deadlines.add(NOW + 2, lambda: seen.append("b"), _alive)
        deadlines.add(NOW + 3, lambda: (seen.append("c"), done.set()), _alive)
        deadlines.add(NOW + 1, lambda: seen.append("a"), _alive)
    assert done.wait(30)
    assert seen == ["a", "b", "c"]
    lease.release_if(True)
    deadlines.join()


def test_a_deadline_acts_with_no_lock_held():
    deadlines, lease = _made()
    acting, taken = threading.Event(), threading.Event()

    def act() -> None:
        acting.set()
        taken.wait(30)

    deadlines.add(NOW, act, _alive)
    assert acting.wait(30)
    got = []

    def take() -> None:  # on another thread: the lock is re-entrant
        if deadlines.lock.acquire(timeout=30):
            got.append(True)
            deadlines.lock.release()

    other = threading.Thread(target=take)
    other.start()
    other.join()
    taken.set()
    assert got == [True]  # the watchdog, in act(), holds no lock
    lease.release_if(True)
    deadlines.join()


def test_a_deadline_whose_task_ended_does_not_act():
    deadlines, lease = _made()
    seen: list[str] = []
    done = threading.Event()
    deadlines.add(NOW, lambda: seen.append("ended"), lambda: False)
    deadlines.add(NOW + 1, done.set, _alive)
    assert done.wait(30)
    assert seen == []
    lease.release_if(True)
    deadlines.join()


def test_the_watchdog_ends_once_every_side_released_and_no_live_deadline_is_left():
    deadlines = Deadlines("t-")
    interp, process = deadlines.lease(), deadlines.lease()
    running = True
    asked = threading.Event()

    def live() -> bool:
        asked.set()
        return running

    deadlines.add(LATER, lambda: None, live)
    thread = deadlines.thread
    assert thread is not None
    interp.release_if(False)  # not done yet: no release
    interp.release_if(True)
    interp.release_if(True)  # once only
    deadlines.join()  # the other side holds its lease: returns at once
    process.release_if(True)  # every side did: it asks whether the deadline still matters
    assert asked.wait(30)
    assert thread.is_alive()  # the task runs: its deadline keeps the watchdog
    running = False  # the task ended
    interp.release_if(True)  # the side says so (released: only a wake-up)
    thread.join(60)
    assert not thread.is_alive() and deadlines.thread is None


def test_a_lease_taken_again_keeps_the_watchdog():
    deadlines, lease = _made()
    deadlines.start()
    first = deadlines.thread
    lease.release_if(True)
    lease.renew()  # a task came after the release (sent again by value)
    done = threading.Event()
    deadlines.add(NOW, done.set, _alive)
    assert done.wait(30)
    assert deadlines.thread is first  # the same thread: it never ended
    lease.release_if(True)
    deadlines.join()
    assert first is not None and not first.is_alive()


def test_a_deadline_added_after_the_end_starts_another_watchdog():
    deadlines, lease = _made()
    deadlines.start()
    first = deadlines.thread
    lease.release_if(True)
    deadlines.join()
    assert first is not None and not first.is_alive()
    done = threading.Event()
    deadlines.add(NOW, done.set, _alive)  # a task that started after shutdown(wait=False)
    assert done.wait(30)
    assert (deadlines.thread or deadlines.ended) not in (None, first)
    deadlines.join()


def test_a_failing_deadline_is_logged_and_the_others_still_act(caplog):
    deadlines, lease = _made()
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("a bug")

    def broken_check() -> bool:
        raise RuntimeError("another bug")

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        deadlines.start()
        with deadlines.lock:  # both in the heap before the watchdog looks
            deadlines.heap += [(NOW, -2, broken, _alive), (NOW, -1, broken, broken_check)]
        deadlines.add(NOW + 1, done.set, _alive)
        assert done.wait(30)
        lease.release_if(True)
        deadlines.join()
    said = [r.getMessage() for r in caplog.records]
    assert any("a time limit failed to act" in m for m in said), said
    assert any("a time limit's check failed" in m for m in said), said


def test_a_watchdog_that_cannot_start_is_said_once(monkeypatch, caplog):
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    deadlines, lease = _made()
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        deadlines.add(time.monotonic() + 60, lambda: None, _alive)
        deadlines.add(time.monotonic() + 60, lambda: None, _alive)
    said = [r for r in caplog.records if "watchdog cannot start" in r.getMessage()]
    assert len(said) == 1
    with pytest.raises(RuntimeError):
        deadlines.start()


def test_an_act_may_wait_for_the_watchdog_it_runs_on():
    # A future's callback, run by a time limit, may shut its pool down with wait=True.
    deadlines, lease = _made()
    done = threading.Event()

    def act() -> None:
        lease.release_if(True)
        deadlines.join()  # its own thread: not waited for
        done.set()

    deadlines.add(NOW, act, _alive)
    assert done.wait(30)
    deadlines.join()
    assert deadlines.thread is None


def test_a_pool_shut_down_without_waiting_leaves_no_watchdog():
    from manygil import InterpreterPoolExecutor

    pool = InterpreterPoolExecutor(1, task_timeout=3600, fallback=None)
    assert pool.submit(abs, -1).result(timeout=60) == 1
    deadlines = pool._side.deadlines
    watchdog = deadlines.thread
    assert watchdog is not None
    pool.shutdown(wait=False)  # its worker leaves on its own: then the watchdog ends
    watchdog.join(60)
    assert not watchdog.is_alive()
    pool.shutdown(wait=True)


def test_many_threads_wake_the_watchdog_at_once():
    # Wakers race while the watchdog sleeps: a lock handed over to it (CPython hands a
    # lock to a waiter parked for over 1 ms) must not be released by a second waker:
    # CPython's debug build asserts on that, where this was found.
    deadlines, lease = _made()
    deadlines.start()
    errors: list[BaseException] = []
    rounds = 40
    go = threading.Barrier(4)

    def wake_at_once() -> None:
        try:
            for _ in range(rounds):
                go.wait(30)
                deadlines.add(LATER, lambda: None, lambda: False)
                go.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wake_at_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(rounds):
        time.sleep(0.002)  # not a wait for an outcome: the watchdog parks long enough
        go.wait(30)
        go.wait(30)
    for thread in threads:
        thread.join(60)
    done = threading.Event()
    deadlines.add(NOW, done.set, _alive)
    assert done.wait(30)  # still awake to its deadlines
    lease.release_if(True)
    deadlines.join()
    assert errors == [] and deadlines.thread is None
