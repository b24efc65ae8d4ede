"""Module-level functions that tests send to other interpreters (no pytest import here)."""

from __future__ import annotations

import os
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


def ctrl_c_once_waiting(condition):
    """Once the main thread waits on ``condition``, press Ctrl-C on this thread rather
    than on the main one: the main thread is not woken by the signal (as when one lands
    just as it starts to block), and sees it only when it next runs bytecode."""
    import signal
    import threading
    import time

    while not condition._waiters:
        time.sleep(0.001)  # a poll for the main thread's wait: no timing is assumed
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)


def spin_in_a_weakref_callback(started):
    """Set the manygil Event ``started`` from inside a weakref callback, then loop there
    until interrupted (an interrupt raised in a callback is not raised to the task), then
    loop in the task itself."""
    import weakref

    class Thing:
        pass

    def callback(_):
        started.set()
        while True:
            pass

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing  # runs the callback
    while ref is not None:
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


def raise_needs_two_args():
    raise NeedsTwoArgs(1, 2)


class BadReduceError(Exception):
    """Its own __reduce__ rebuilds it with no arguments, which its __init__ refuses."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")

    def __reduce__(self):
        return (type(self), ())


def raise_unrebuildable():
    raise BadReduceError(1, 2)


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


def fill_slice(arr, start, stop, value):
    for i in range(start, stop):
        arr[i] = value
    return stop - start


def locked_increments(buf, lock, n):
    """Read-modify-write a counter in shared memory n times under a cross-interpreter lock."""
    import struct

    for _ in range(n):
        with lock:
            (v,) = struct.unpack_from("q", buf, 0)
            struct.pack_into("q", buf, 0, v + 1)
    return n


def value_increments(value, n):
    for _ in range(n):
        value.add(1)
    return n


def wait_event(event, timeout):
    return event.wait(timeout)


def set_event_at(event, stamp_value):
    import time

    stamp_value.value = time.perf_counter_ns()
    event.set()


def acquire_and_hold(lock, started, release):
    with lock:
        started.set()
        release.wait(10)
    return True


def sem_worker(sem, inside, peak, n):
    for _ in range(n):
        with sem:
            now = inside.add(1)
            while True:
                seen = peak.value
                if now <= seen or peak.compare_and_set(seen, now):
                    break
            inside.add(-1)
    return n


def barrier_wait(barrier, timeout=10):
    return barrier.wait(timeout)


def cond_waiter(cond, flag, timeout):
    with cond:
        return cond.wait_for(lambda: flag.value == 1, timeout)


def make_buffer(n, fill):
    from manygil.shared import SharedBuffer

    buf = SharedBuffer(n)
    buf[:] = bytes([fill]) * n
    return buf


def busy_alpha(event, running=None):
    """A pure-Python loop with a name to find in a traceback dump; it sets ``running``
    once in its frame."""
    if running is not None:
        running.set()
    n = 0
    while not event.is_set():
        n += 1
    return n


def busy_beta(event, running=None):
    if running is not None:
        running.set()
    n = 0
    while not event.is_set():
        n += 1
    return n


def chatty(n, tag="line"):
    import sys

    for i in range(n):
        print(f"{tag} {i}")
    print(f"{tag} to stderr", file=sys.stderr)
    return n


def logs(name, message):
    import logging

    logging.getLogger(name).warning("%s from a worker", message)
    logging.getLogger(name).debug("debug is below the level")
    return True


def warns():
    import warnings

    warnings.warn("careful from a worker", UserWarning, stacklevel=1)
    return True


def collatz_steps(n):
    """A CPU-heavy pure-Python scalar function for UDF tests and benchmarks."""
    steps = 0
    n = abs(int(n)) + 1
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def shout(s):
    return s.upper() + "!"


def half(x):
    return x / 2


def is_even(x):
    return x % 2 == 0


def none_aware(x):
    return -1 if x is None else x * 10


def fails_on_seven(x):
    if x % 7 == 0:
        raise ValueError(f"seven divides {x}")
    return x


def negate(b):
    return not b


def interpreter_id_of(_item):
    from manygil import interpreters

    return interpreters.get_current().id


def call_in_a_new_interpreter(x):
    """Runs in a pool worker: make another interpreter and call into it."""
    from manygil import interpreters

    inner = interpreters.create()
    try:
        return inner.call(add, x, 1)
    finally:
        inner.close()


def returns_a_buffer_even_if_interrupted(started):
    """Catch the interrupt of cancel() and return a shared buffer regardless."""
    try:
        started.put("running")
        spin()
    except BaseException:  # noqa: BLE001 - on purpose: the interrupt of cancel() is caught
        return make_buffer(1 << 20, 1)


class Bomb:
    """Pickles fine; loading it raises raise_base(kind) (SystemExit, KeyboardInterrupt...)."""

    def __init__(self, kind):
        self.kind = kind

    def __reduce__(self):
        return (raise_base, (self.kind,))


def make_bomb(kind):
    return Bomb(kind)


def signal_then_wait(started, q, timeout=30):
    """Say (on a queue) that the task runs, then wait in C for an item."""
    started.put("running")
    return q.get(timeout=timeout)


def spin_named_for_the_dump():
    """Loop in pure Python forever, ignoring interrupts (a name to find in a dump)."""
    while True:
        try:
            spin()
        except BaseException:  # noqa: BLE001 - on purpose: every interrupt is ignored
            pass



def block_in_c(fd):
    """Block in C, deaf to interrupts (on 3.15 even native waits take them), until a
    byte arrives on the pipe ``fd``: a task "stuck in C" that the test can release."""
    import os

    return os.read(fd, 1)


def block_in_c_for(seconds):
    """Block in C, deaf to interrupts, for ``seconds``."""
    import select

    select.select([], [], [], seconds)


def put_into(q, value):
    q.put(value)
    return True


def same(value):
    return value


class _FreedAfter:
    """A result that crosses as the string "sent"; freeing it (in the worker) waits for
    ``gate``, then sets ``freed``."""

    def __init__(self, gate, freed):
        self.gate, self.freed = gate, freed

    def __reduce__(self):
        return str, ("sent",)

    def __del__(self):
        self.gate.wait(60)
        self.freed.set()


def freed_after(gate, freed):
    """A result whose freeing in the worker waits for ``gate``, then sets ``freed``."""
    return _FreedAfter(gate, freed)


def keep_lent(seconds):
    """An initializer: the worker keeps the object of its last large result ``seconds``
    while idle (``_worker._LENT_KEPT``), instead of copying it out after 50 ms."""
    from manygil import _worker

    _worker._LENT_KEPT = seconds


def same_after(q, value):
    q.get(timeout=30)
    return value


def hold_gil_until(flag, spinning, limit=200_000_000):
    """Spin in pure Python, never letting this interpreter's GIL go (a 1000 s switch
    interval), until ``flag`` is set; False if it gave up after ``limit`` rounds."""
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        spinning.value = 1
        n = 0
        while not flag.value:
            n += 1
            if n > limit:
                return False
        return True
    finally:
        sys.setswitchinterval(old)


def set_when(flag, spinning):
    """Wait (spinning in Python) until the other task spins, then set its flag."""
    while not spinning.value:
        pass
    flag.value = 1
    return True


class FalsyError(Exception):
    def __bool__(self):
        return False


def raise_falsy():
    raise FalsyError("false, and still an error")


def close_interpreter(interp_id):
    from manygil import interpreters

    interpreters.Interpreter(interp_id).close()


def current_pid():
    import os

    return os.getpid()


def count_then_import(counter, module):
    """Do some work (count a run), then import ``module``: a refusal mid-task."""
    import importlib

    if counter is not None:
        counter.add(1)
    importlib.import_module(module)
    return "imported"


def remember(value):
    """An initializer: keep ``value`` in this worker."""
    global REMEMBERED
    REMEMBERED = value


def make_generator(n):
    return (i for i in range(n))


def ledger_task(folder, name):
    """Count the ledger tasks running as this one starts (itself included), say so
    through the FIFO started-NAME, then wait in C until release-NAME is written."""
    open(os.path.join(folder, f"start-{name}"), "w").close()
    names = os.listdir(folder)
    running = sum(n.startswith("start-") for n in names) - sum(n.startswith("end-") for n in names)
    with open(os.path.join(folder, f"started-{name}"), "w") as f:
        f.write("started")
    with open(os.path.join(folder, f"release-{name}")) as f:
        f.read()
    open(os.path.join(folder, f"end-{name}"), "w").close()
    return running


def append_then_fail(path):
    """An initializer that leaves a line in ``path``, then fails."""
    with open(path, "a") as f:
        f.write("ran\n")
    raise RuntimeError("this initializer fails")


# The fault injection routes these to the process side (pool.route): same work as
# add/boom, under names of their own.
def in_process_add(a, b=0):
    return a + b


def in_process_boom(message="boom"):
    raise ValueError(message)


def in_process_sleep(seconds):
    time.sleep(seconds)  # in C: only terminating the process stops it early
    return seconds


def in_process_wait_for_path(path, timeout=60):
    """Wait (polling: a process has no other shared gate here) until ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return path


def nested_pool():
    """Create a pool inside a task (issue 23): it must fail at once, with the fix."""
    from manygil import InterpreterPoolExecutor

    with InterpreterPoolExecutor(1) as inner:
        return inner.submit(add, 1, 2).result()


def read_fifo(path):
    """Block in C (the open() of the FIFO ``path``, deaf to interrupts) until a writer
    opens it; return what it wrote."""
    with open(path) as f:
        return f.read()


def swallow_interrupt_and_return(value, started, release):
    """Loop until interrupted, swallow the interrupt, wait in C until the FIFO
    ``release`` is opened (the pool abandons the worker meanwhile), and return ``value``
    late, once the pool has given up on the task and its worker."""
    try:
        started.set()
        while True:
            pass
    except BaseException:  # noqa: BLE001 - on purpose: the interrupt is swallowed
        read_fifo(release)
        return value


def make_deep(depth):
    """A list nested ``depth`` levels deep: too deep for pickle (the copier sends it)."""
    x = []
    for _ in range(depth):
        x = [x]
    return x


def make_deep_objects(depth):
    """Objects of a module-level class nested ``depth`` levels deep: too deep for pickle,
    and not built-ins that the copier could send instead."""
    x = None
    for _ in range(depth):
        x = Holder(x)
    return x


def started_then_wait_on(started, q, timeout=60):
    """Set the manygil Event ``started``, then wait for an item on the queue ``q``."""
    started.set()
    return q.get(timeout=timeout)


def fifo_handshake(started, release):
    """Say so through the FIFO ``started``, then wait in C until the FIFO ``release`` is
    opened for writing (a task that the test holds, in a process worker too)."""
    with open(started, "w") as f:
        f.write("started")
    with open(release) as f:
        return f.read()



def value_and_pid(obj):
    """``obj.value`` and the pid that read it."""
    return obj.value, os.getpid()


def echo(value):
    """Return what it got: a value's trip there and back."""
    return value


def depth_of(value):
    """How deep a list nests in its first item (no recursion: 100,000 levels)."""
    depth = 0
    while isinstance(value, list) and value:
        value = value[0]
        depth += 1
    return depth


class Holder:
    """An object of a module-level class that holds a value (a leaf of a copy)."""

    def __init__(self, data):
        self.data = data

    def __eq__(self, other):
        return type(other) is Holder and other.data == self.data


class MyList(list):
    """A subclass of a built-in type: pickled, not copied."""


def loaded_in_thread():
    """Runs where a ``LoadMarker`` is unpickled: the id of the thread that loads it."""
    import threading

    return threading.get_ident()


class LoadMarker:
    """Comes back as the id of the thread of the caller's process that loaded it."""

    def __reduce__(self):
        return (loaded_in_thread, ())


def make_load_marker(_=None):
    return LoadMarker()


def refuse_to_load():
    raise LookupError("this result does not load here")


class LoadFails:
    """Pickles in a worker; loading it raises LookupError."""

    def __reduce__(self):
        return (refuse_to_load, ())


def make_load_fails(_=None):
    return LoadFails()


def loaded_modules():
    """The names of the modules the calling interpreter has imported."""
    import sys

    return sorted(sys.modules)
