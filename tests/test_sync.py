from __future__ import annotations

import threading
import time

import pytest

from manygil import InterpreterPoolExecutor
from manygil.shared import SharedValue
from manygil.sync import Barrier, BoundedSemaphore, BrokenBarrierError, Condition, Event, Lock, RLock, Semaphore

from . import helpers


@pytest.fixture
def pool():
    with InterpreterPoolExecutor(4) as p:
        yield p


def test_lock_api_and_timeouts():
    lock = Lock()
    assert lock.acquire() and lock.locked()
    assert not lock.acquire(blocking=False)
    start = time.monotonic()
    assert not lock.acquire(timeout=0.1)
    assert time.monotonic() - start >= 0.09
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)
    with lock:
        assert lock.locked()


def test_lock_held_in_another_interpreter_blocks_here(pool):
    lock, started, release = Lock(), Event(), Event()
    future = pool.submit(helpers.acquire_and_hold, lock, started, release)
    assert started.wait(30)
    assert lock.locked()
    assert not lock.acquire(timeout=0.05)
    release.set()
    assert future.result(timeout=30)
    assert lock.acquire(timeout=10)
    lock.release()


def test_rlock_reentrancy_and_ownership():
    rlock = RLock()
    with rlock:
        with rlock:
            assert rlock._is_owned()
    assert not rlock._is_owned()
    with pytest.raises(RuntimeError, match="un-acquired"):
        rlock.release()
    rlock.acquire()
    errors = []
    t = threading.Thread(target=lambda: errors.append(rlock.acquire(timeout=0.05)))
    t.start()
    t.join()
    assert errors == [False]
    rlock.release()


def test_semaphore_limits_concurrency_across_interpreters(pool):
    sem = Semaphore(2)
    inside, peak = SharedValue(0), SharedValue(0)
    futures = [pool.submit(helpers.sem_worker, sem, inside, peak, 300) for _ in range(4)]
    assert sum(f.result(timeout=60) for f in futures) == 1200
    assert 1 <= peak.value <= 2
    assert sem.value == 2
    assert not Semaphore(0).acquire(timeout=0.05)
    with pytest.raises(ValueError):
        Semaphore(-1)


def test_bounded_semaphore_refuses_extra_release():
    sem = BoundedSemaphore(1)
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()


def test_event_wakes_a_waiter_in_another_interpreter(pool):
    event = Event()
    future = pool.submit(helpers.wait_event, event, 30)
    time.sleep(0.05)
    assert not future.done()
    event.set()
    assert future.result(timeout=30) is True
    event.clear()
    assert not event.is_set()
    assert pool.submit(helpers.wait_event, event, 0.05).result(timeout=30) is False


def test_condition_notify_across_interpreters(pool):
    cond = Condition()
    flag = SharedValue(0)
    futures = [pool.submit(helpers.cond_waiter, cond, flag, 30) for _ in range(2)]
    time.sleep(0.1)
    with cond:
        flag.value = 1
        cond.notify_all()
    assert [f.result(timeout=30) for f in futures] == [True, True]
    with cond:
        assert cond.wait(0.05) is False
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0.01)
    with pytest.raises(TypeError, match="threading lock cannot be shared"):
        Condition(threading.Lock())  # type: ignore[arg-type]
    plain = Condition(Lock())
    with plain:
        assert plain.wait_for(lambda: True, 0.01)


def test_barrier_across_interpreters(pool):
    barrier = Barrier(3)
    futures = [pool.submit(helpers.barrier_wait, barrier, 30) for _ in range(2)]
    index = barrier.wait(30)
    indexes = sorted([index] + [f.result(timeout=30) for f in futures])
    assert indexes == [0, 1, 2]
    assert not barrier.broken and barrier.parties == 3


def test_barrier_timeout_breaks_it_and_reset_repairs_it():
    barrier = Barrier(2)
    with pytest.raises(BrokenBarrierError):
        barrier.wait(0.05)
    assert barrier.broken
    with pytest.raises(BrokenBarrierError):
        barrier.wait(1)
    barrier.reset()
    assert not barrier.broken
    t = threading.Thread(target=barrier.wait, args=(10,))
    t.start()
    assert barrier.wait(10) in (0, 1)
    t.join()
    barrier.abort()
    with pytest.raises(BrokenBarrierError):
        barrier.wait(1)
