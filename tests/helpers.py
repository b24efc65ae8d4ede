"""Module-level functions that tests send to other interpreters (no pytest import here)."""

from __future__ import annotations

import time


def add(a, b=0):
    return a + b


def boom(message="boom"):
    raise ValueError(message)


def cpu(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def timed_cpu(n):
    """Run a CPU loop; return (thread CPU seconds, wall start, wall end)."""
    start = time.monotonic()
    t0 = time.thread_time()
    cpu(n)
    return time.thread_time() - t0, start, time.monotonic()


def wait_on(q, timeout=10):
    return q.get(timeout=timeout)


def echo_queue(inq, outq, count):
    for _ in range(count):
        outq.put(inq.get(timeout=10))
    return count


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable objects refuse to be pickled")


def make_unpicklable():
    return Unpicklable()


def spin():
    """Loop in pure Python until interrupted."""
    while True:
        pass


def current_interpreter_id():
    from manygil import interpreters

    return interpreters.get_current().id


def raise_base(kind):
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    raise MemoryError("pretend")


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def raise_unrebuildable():
    raise NeedsTwoArgs(1, 2)


_initialized = []


def init_worker(value):
    _initialized.append(value)


def read_init():
    return list(_initialized)


def failing_init():
    raise RuntimeError("initializer exploded")


def mixed(i):
    if i % 1000 == 999:
        spin()
    if i % 7 == 0:
        raise ValueError(i)
    return i * 2


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value
