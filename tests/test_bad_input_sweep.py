"""Every parameter of the public API against a set of hostile values (issue 30).

Each call either works or raises a clean error (``TypeError``, ``ValueError``,
``OverflowError``, ``MemoryError``, ``LookupError``, or ``TimeoutError`` where a timeout
of zero or less asks for one, with a message); nothing crashes,
hangs or corrupts.  The sweep runs in a child process with a time limit, so that a crash
or a hang fails the test with the case that caused it, printed before it ran.  Every call
that could wait is made where it returns at once when it works (a free lock, a set
event, a queue that holds an item), so a valid value costs no time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP = r'''
import math, sys
from manygil import InterpreterPoolExecutor, interpreters
from manygil.shared import SharedArray, SharedBuffer, SharedValue
from manygil.sync import Barrier, BoundedSemaphore, Event, Lock, RLock, Semaphore

HOSTILE = [None, True, False, 0, 1, -1, 7, 2**31, 2**63 - 1, 2**63, 2**64, -2**63, 2**1000,
           1.5, -0.0, 0.25, math.nan, math.inf, -math.inf, 1e300, "1", b"1", [], (2,), object()]
# TimeoutError: future.result() with a timeout of 0 or less, as concurrent.futures does
CLEAN = (TypeError, ValueError, OverflowError, MemoryError, LookupError, TimeoutError)

lock, rlock, sem, event = Lock(), RLock(), Semaphore(1), Event()
event.set()
queue = interpreters.create_queue()
pool = InterpreterPoolExecutor(1)


def acquire_release(obj, **kw):
    if obj.acquire(**kw):
        obj.release()


def queue_round(v):
    queue.put(1, timeout=v)
    return queue.get(timeout=v)


CASES = {
    "Lock.acquire(timeout=v)": lambda v: acquire_release(lock, timeout=v),
    "Lock.acquire(False, v)": lambda v: acquire_release(lock, blocking=False, timeout=v),
    "RLock.acquire(timeout=v)": lambda v: acquire_release(rlock, timeout=v),
    "Semaphore(v)": lambda v: Semaphore(v),
    "BoundedSemaphore(v)": lambda v: BoundedSemaphore(v),
    "Semaphore.acquire(timeout=v)": lambda v: acquire_release(sem, timeout=v),
    "Semaphore.release(v)": lambda v: Semaphore(0).release(v),
    "Event.wait(v)": lambda v: event.wait(v),
    "Barrier(v)": lambda v: Barrier(v),
    "Barrier(2, timeout=v)": lambda v: Barrier(2, timeout=v),
    "SharedBuffer(v)": lambda v: SharedBuffer(v),
    "SharedArray('d', v)": lambda v: SharedArray("d", v),
    "SharedArray(v, 3)": lambda v: SharedArray(v, 3),
    "SharedValue(v)": lambda v: SharedValue(v),
    "SharedValue().add(v)": lambda v: SharedValue(0).add(v),
    "create_queue(v)": lambda v: interpreters.create_queue(v),
    "Queue.put/get(timeout=v)": queue_round,
    "InterpreterPoolExecutor(v)": lambda v: InterpreterPoolExecutor(v).shutdown(),
    "InterpreterPoolExecutor(task_timeout=v)": lambda v: InterpreterPoolExecutor(1, task_timeout=v).shutdown(),
    "InterpreterPoolExecutor(grace_period=v)": lambda v: InterpreterPoolExecutor(1, grace_period=v).shutdown(),
    "InterpreterPoolExecutor(exit_timeout=v)": lambda v: InterpreterPoolExecutor(1, exit_timeout=v).shutdown(),
    "InterpreterPoolExecutor(max_tasks_per_worker=v)":
        lambda v: InterpreterPoolExecutor(1, max_tasks_per_worker=v).shutdown(),
    "pool.with_timeout(v)": lambda v: pool.with_timeout(v),
    "future.result(timeout=v)": lambda v: pool.submit(abs, -3).result(timeout=v),
    "pool.map(chunksize=v)": lambda v: list(pool.map(abs, [-1, -2], chunksize=v)),
}

ran = 0
for name, case in CASES.items():
    for value in HOSTILE:
        print(f"{name} with v={value!r:.40}", file=sys.stderr, flush=True)
        try:
            case(value)
        except CLEAN as exc:
            # (concurrent.futures' own TimeoutError has no message)
            assert str(exc) or isinstance(exc, TimeoutError), f"{name} with v={value!r}: {type(exc).__name__} with no message"
        ran += 1
pool.shutdown()
print("ran", ran)
'''


def test_every_parameter_takes_hostile_values_without_a_crash_or_a_hang():
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SWEEP)],
        cwd=ROOT, capture_output=True, text=True, timeout=50,
        env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src")),
    )
    last = proc.stderr.strip().splitlines()[-12:]
    assert proc.returncode == 0, "\n".join(last)
    assert proc.stdout.split() == ["ran", str(25 * 25)], proc.stdout
