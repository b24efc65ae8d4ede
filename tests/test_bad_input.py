"""Bad input to the shared objects and their waits (issue 30, section 1): each case was
a crash, a hang or silent corruption, and is now a clear error or correct behaviour.

A case that hung the whole process before its fix runs in a subprocess with a time
limit.  Nothing waits on the clock: a waker waits until the waiter is inside the
native wait (a profile hook sees the call start, and the waiter then lets go of the GIL).
"""

from __future__ import annotations

import math
import pickle
import threading

import pytest

from manygil import _native
from manygil._timeouts import TIMEOUT_MAX, check_timeout
from manygil.shared import SharedArray, SharedBuffer, SharedValue
from manygil.sync import Barrier, BoundedSemaphore, BrokenBarrierError, Condition, Event, Lock, RLock, Semaphore

from .test_failure_paths import run_script

# ------------------------------------------------------------------ timeouts

# For each waiting primitive: how to make one, how a thread waits on it with timeout T
# (its result is printed), and how another thread then wakes that waiter.
WAITS = {
    "Lock": ("o = Lock(); o.acquire()", "o.acquire(timeout=T)", "o.release()"),
    "RLock": ("o = RLock(); o.acquire()", "o.acquire(timeout=T)", "o.release()"),
    "Semaphore": ("o = Semaphore(0)", "o.acquire(timeout=T)", "o.release()"),
    "Event": ("o = Event()", "o.wait(T)", "o.set()"),
    "Condition": ("o = Condition()", "o.acquire() and o.wait(T)", "o.acquire(); o.notify(); o.release()"),
    "Barrier": ("o = Barrier(2)", "o.wait(T)", "o.wait(10)"),
    "Queue": ("o = create_queue()", "o.get(timeout=T)", "o.put(1)"),
}

NATIVE_WAITS = {"acquire", "sync_acquire", "sync_wait_nonzero", "cond_wait", "barrier_wait", "chan_get"}


@pytest.mark.parametrize("kind", sorted(WAITS))
def test_an_infinite_or_huge_timeout_waits_until_woken(kind):
    """inf and 2**63 s overflowed the native deadline: the waiter spun holding the
    object's mutex, and the waker then blocked on it with its GIL held (the process hung)."""
    make, wait, wake = WAITS[kind]
    script = f"""
        import sys, threading
        from manygil.interpreters import create_queue
        from manygil.sync import {kind if kind != "Queue" else "Lock"}
        for T in (float("inf"), 2.0 ** 63, 1e300):
            {make}
            in_native_wait, results = threading.Event(), []

            def seen(frame, event, arg):
                if event == "c_call" and getattr(arg, "__name__", "") in {NATIVE_WAITS!r}:
                    in_native_wait.set()

            def waiter():
                sys.setprofile(seen)
                try:
                    results.append({wait})
                finally:
                    sys.setprofile(None)

            t = threading.Thread(target=waiter)
            t.start()
            assert in_native_wait.wait(30)
            {wake}
            t.join(30)
            assert not t.is_alive(), "the waiter was not woken"
            print(T, results)
    """
    out = run_script(script, timeout=40)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and all(line.endswith(("[True]", "[0]", "[1]")) for line in lines), out.stdout


def _waits_in_process(kind: str, timeout: object) -> object:
    """One wait with ``timeout`` on a primitive that is ready, so that a wait that
    ignores a bad timeout returns at once instead of hanging (Condition has no such
    state: it is left to the subprocess test)."""
    if kind == "Lock":
        return Lock().acquire(timeout=timeout)
    if kind == "RLock":
        return RLock().acquire(timeout=timeout)
    if kind == "Semaphore":
        return Semaphore(1).acquire(timeout=timeout)
    if kind == "Event":
        event = Event()
        event.set()
        return event.wait(timeout)  # type: ignore[arg-type]
    if kind == "Barrier":
        return Barrier(1).wait(timeout)  # type: ignore[arg-type]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["Barrier", "Event", "Lock", "RLock", "Semaphore"])
def test_a_nan_timeout_is_a_value_error(kind):
    with pytest.raises(ValueError, match="timeout must be a number of seconds, got nan"):
        _waits_in_process(kind, math.nan)


@pytest.mark.parametrize("kind", ["Barrier", "Event", "Lock", "RLock", "Semaphore"])
def test_a_timeout_that_is_not_a_number_is_a_type_error(kind):
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None, got '1'"):
        _waits_in_process(kind, "1")


def test_a_nan_timeout_on_a_condition_or_barrier_is_a_value_error():
    """Condition.wait(nan) waited forever: it runs in a subprocess."""
    out = run_script(
        """
        import math
        from manygil.sync import Barrier, Condition
        c = Condition()
        with c:
            for call in (lambda: c.wait(math.nan), lambda: c.wait_for(lambda: False, math.nan)):
                try:
                    call()
                except ValueError as e:
                    print(e)
        try:
            Barrier(2, timeout=math.nan)
        except ValueError as e:
            print(e)
        """,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "timeout must be a number of seconds, got nan; pass None to wait forever"
    ] * 3, out.stdout


def test_negative_timeouts_behave_as_threading():
    with pytest.raises(ValueError, match="non-negative"):
        Lock().acquire(timeout=-2)
    with pytest.raises(ValueError, match="non-negative"):
        RLock().acquire(timeout=-0.5)
    assert Semaphore(0).acquire(timeout=-5) is False  # threading: do not wait
    assert Event().wait(-1) is False
    c = Condition()
    with c:
        assert c.wait(-1) is False


def test_check_timeout():
    assert check_timeout(None) is None
    assert check_timeout(math.inf) is None
    assert check_timeout(TIMEOUT_MAX * 2) is None
    assert check_timeout(10**400) is None
    assert check_timeout(2) == 2.0 and type(check_timeout(2)) is float
    assert check_timeout(-3, negative_is_zero=True) == 0.0
    with pytest.raises(ValueError, match="grace must be a non-negative number, got -3"):
        check_timeout(-3, "grace")
    with pytest.raises(ValueError, match="nan"):
        check_timeout(-math.nan, negative_is_zero=True)
    with pytest.raises(TypeError, match="got True"):
        check_timeout(True)
    with pytest.raises(TypeError, match="got b'1'"):
        check_timeout(b"1")


def test_a_nan_timeout_on_a_queue_is_a_value_error():
    """It waited forever; the queue here is ready, so that a timeout ignored returns."""
    from manygil.interpreters import create_queue

    q = create_queue()
    with pytest.raises(ValueError, match="got nan"):
        q.put(1, timeout=math.nan)
    q.put(1)
    with pytest.raises(ValueError, match="got nan"):
        q.get(timeout=math.nan)
    assert q.get(timeout=math.inf) == 1


# ------------------------------------------------------------------ 64-bit counters

INT64_MAX = 2**63 - 1


def test_a_bounded_semaphore_released_past_2_63_refuses_instead_of_wrapping():
    sem = BoundedSemaphore(2)
    sem.acquire()
    with pytest.raises(ValueError, match="released too many times"):
        sem.release(INT64_MAX)
    assert sem.value == 1  # unchanged, and not wrapped to a negative count
    assert sem.acquire(timeout=0)


def test_a_semaphore_count_past_2_63_is_an_overflow_error():
    sem = Semaphore(1)
    with pytest.raises(OverflowError, match=r"semaphore .*2\*\*63 - 1"):
        sem.release(INT64_MAX)
    assert sem.value == 1
    with pytest.raises(OverflowError, match=r"semaphore .*2\*\*63 - 1"):
        sem.release(2**64)
    with pytest.raises(OverflowError, match=r"semaphore .*2\*\*63 - 1"):
        Semaphore(2**63)


def test_a_shared_value_past_64_bits_is_an_overflow_error():
    value = SharedValue(INT64_MAX)
    with pytest.raises(OverflowError, match=r"cannot add 1 to <SharedValue 9223372036854775807>: .*-2\*\*63 to 2\*\*63 - 1"):
        value.add(1)
    assert value.value == INT64_MAX
    low = SharedValue(-(2**63))
    with pytest.raises(OverflowError, match="cannot add -1"):
        low.add(-1)
    with pytest.raises(OverflowError, match=r"a SharedValue holds .*2\*\*63 - 1.*got 9223372036854775808"):
        SharedValue(2**63)
    with pytest.raises(OverflowError, match="got 9223372036854775808"):
        value.value = 2**63
    with pytest.raises(OverflowError, match="got 9223372036854775808"):
        value.compare_and_set(0, 2**63)
    with pytest.raises(OverflowError, match="cannot add"):
        value.add(2**70)
    assert value.value == INT64_MAX
    assert value.compare_and_set(2**64, 0) is False  # it cannot hold that value


# ------------------------------------------------------------------ smaller cases


@pytest.mark.parametrize("shape", [0, (0,), (2, 0), (0, 3)])
def test_a_shared_array_with_a_zero_in_its_shape_is_empty(shape):
    a = SharedArray(shape, "d")
    dims = (shape,) if isinstance(shape, int) else shape
    assert a.shape == dims and a.nbytes == 0 and len(a) == dims[0]
    assert a.tolist() == ([[]] * dims[0] if len(dims) == 2 else [])
    back = pickle.loads(pickle.dumps(a))
    assert back.shape == dims and back.buffer.id == a.buffer.id


def test_an_empty_slice_of_a_shared_array_is_an_empty_array():
    a = SharedArray(5, "q")
    assert a[3:3].tolist() == [] and len(a[4:2]) == 0
    a[2:2] = []


def test_an_empty_shared_array_in_numpy_keeps_its_shape():
    pytest.importorskip("numpy")
    assert SharedArray((2, 0), "float64").numpy().shape == (2, 0)


@pytest.mark.parametrize("buffer", [bytearray(24), memoryview(bytearray(24)), b"x" * 24])
def test_a_shared_array_over_memory_that_is_not_shared_is_refused(buffer):
    with pytest.raises(TypeError, match=r"SharedArray needs a SharedBuffer, got .*SharedBuffer.from_bytes"):
        SharedArray(3, "d", buffer=buffer)


def test_a_barrier_that_timed_out_has_no_waiter_left():
    barrier = Barrier(2)
    with pytest.raises(BrokenBarrierError):
        barrier.wait(0.01)
    assert barrier.broken and barrier.n_waiting == 0
    barrier.reset()
    assert barrier.n_waiting == 0


def test_notify_without_the_lock_says_notify():
    for cond in (Condition(), Condition(Lock())):
        with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
            cond.notify()
        with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
            cond.notify_all()
        with pytest.raises(RuntimeError, match="cannot wait on un-acquired lock"):
            cond.wait(0)


def test_a_shared_buffer_larger_than_the_machine_is_a_memory_error():
    """It was made lazily, and the process was killed when it was used."""
    with pytest.raises(MemoryError, match="cannot make a SharedBuffer of 70368744177664 bytes"):
        SharedBuffer(2**46)
    with pytest.raises(MemoryError, match="bytes"):
        SharedBuffer(2**63 - 1)
    assert len(SharedBuffer(2**30)) == 2**30  # large, untouched, fine


# ------------------------------------------------------------------ pickles and references

# Each kind of shared object, made in a script (``o``), and a use that fails once its
# native entry is freed.
SHARED = {
    "SharedBuffer": ("from manygil.shared import SharedBuffer; o = SharedBuffer(1 << 20)", "o[0] = 1; assert o[0] == 1"),
    "SharedValue": ("from manygil.shared import SharedValue; o = SharedValue(5)", "assert o.add(1) > 5"),
    "Lock": ("from manygil.sync import Lock; o = Lock()", "assert o.acquire(timeout=5); o.release()"),
    "Semaphore": ("from manygil.sync import Semaphore; o = Semaphore(1)", "assert o.acquire(timeout=5); o.release()"),
    "RLock": ("from manygil.sync import RLock; o = RLock()", "assert o.acquire(timeout=5); o.release()"),
    "Event": ("from manygil.sync import Event; o = Event()", "o.set(); assert o.wait(5)"),
    "Condition": ("from manygil.sync import Condition; o = Condition()", "o.acquire(); o.notify(); o.release()"),
    "Barrier": ("from manygil.sync import Barrier; o = Barrier(1)", "assert o.wait(5) == 0"),
    "Queue": ("from manygil.interpreters import create_queue; o = create_queue()", "o.put(1); assert o.get(timeout=5) == 1"),
}


@pytest.mark.parametrize("kind", sorted(SHARED))
def test_a_pickle_loaded_many_times_leaves_the_object_alive(kind):
    """Each load adopted the one reference the pickle carried: the second load took the
    original's, and dropping the loads freed the object under it (a SharedBuffer's
    memory was unmapped: SIGSEGV at the next write)."""
    make, use = SHARED[kind]
    out = run_script(
        f"""
        import gc, pickle
        from manygil import _native
        {make}
        ids = getattr(o, "_ids", None) or (o.id,)

        def use(o):
            {use}

        p = pickle.dumps(o)
        loads = [pickle.loads(p) for _ in range(3)]
        for other in loads:
            use(other)
        del loads, other
        gc.collect()
        use(o)
        print([_native.refcount(i) for i in ids])
        """,
        timeout=40,
    )
    assert out.returncode == 0, out.stderr
    assert set(eval(out.stdout)) == {1}, out.stdout  # the original's reference, no other


def test_a_pickle_never_loaded_keeps_nothing_alive():
    """20 dumps of a 1 MiB buffer kept 20 blocks forever (the fixture checks the count)."""
    from manygil import _native

    before = _native.live()
    dumps = [pickle.dumps(SharedBuffer(1 << 20)) for _ in range(20)]
    dumps += [pickle.dumps(o) for o in (Lock(), RLock(), Event(), SharedValue(1))]
    assert _native.live() == before


def test_a_pickle_loaded_after_its_object_is_gone_is_a_clear_error():
    for make in (lambda: SharedBuffer(8), Lock, RLock, Event, lambda: SharedValue(1)):
        p = pickle.dumps(make())
        with pytest.raises(LookupError, match=r"cannot load a \w+: the object it was pickled from .* is gone"):
            pickle.loads(p)


def test_a_pickle_loads_in_another_interpreter_while_its_object_lives():
    """Loaded twice there, the buffer was freed under this interpreter (SIGSEGV)."""
    out = run_script(
        """
        import pickle
        from manygil import interpreters
        from manygil.shared import SharedBuffer

        def write_from_pickle(p):  # sent by value
            import pickle

            other = pickle.loads(p)
            other[0] += 1

        buf = SharedBuffer(16)
        p = pickle.dumps(buf)
        interp = interpreters.create()
        try:
            for _ in range(3):
                interp.call(write_from_pickle, p)  # each load takes its own reference
        finally:
            interp.close()
        buf[1] = 1
        print(buf[0])
        """,
        timeout=40,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3"], out.stdout


def test_a_deep_copy_is_the_same_object():
    import copy

    buf = SharedBuffer(4)
    copy.deepcopy(buf)[0] = 9
    value = SharedValue(1)
    copy.deepcopy(value).add(1)
    assert buf[0] == 9 and value.value == 2


@pytest.mark.parametrize("kind", ["Lock", "Semaphore"])
def test_a_waiter_holds_its_own_reference(kind):
    """``lock.__init__()`` again (or a handle freed) while a thread waited freed the
    native mutex under the waiter."""
    make = "o = Lock(); o.acquire()" if kind == "Lock" else "o = Semaphore(0)"
    out = run_script(
        f"""
        import sys, threading
        from manygil import _native
        from manygil.sync import {kind}
        {make}
        old = o.id
        in_native_wait, results = threading.Event(), []

        def seen(frame, event, arg):
            if event == "c_call" and getattr(arg, "__name__", "") == "acquire":
                in_native_wait.set()

        def waiter():
            sys.setprofile(seen)
            results.append(o.acquire(timeout=30))

        t = threading.Thread(target=waiter, daemon=True)
        t.start()
        assert in_native_wait.wait(30)
        o.__init__()  # the handle lets go of the entry the waiter waits on
        print(_native.refcount(old))
        _native.sync_release(old, 1)
        t.join(30)
        print(results)
        """,
        timeout=40,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "[True]"], out.stdout


# ------------------------------------------------------------------ more bad arguments


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: SharedBuffer(2**64), MemoryError, "cannot make a SharedBuffer of 18446744073709551616 bytes"),
        (lambda: SharedArray((2**40, 2**40)), MemoryError, "cannot make a SharedBuffer of 9671406556917033397649408 bytes"),
        (lambda: SharedArray(True), ValueError, "shape must be non-negative ints, got True"),
        (lambda: SharedArray(2.0), ValueError, "shape must be non-negative ints, got 2.0"),
        (lambda: SharedValue(0).add(1.5), TypeError, "a SharedValue holds an integer, got 1.5"),
        (lambda: SharedValue("5"), TypeError, "a SharedValue holds an integer, got '5'"),
        (lambda: setattr(SharedValue(0), "value", 2.5), TypeError, "a SharedValue holds an integer, got 2.5"),
        (lambda: Barrier(2.5), TypeError, "parties must be an int, got 2.5"),
        (lambda: Barrier(2**63), ValueError, "parties must be at most 2\\*\\*63 - 1"),
    ],
    ids=["buffer-2**64", "array-2**80", "shape-bool", "shape-float", "add-float", "value-str", "set-float",
         "parties-float", "parties-2**63"],
)
def test_bad_arguments_are_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_notify_with_a_negative_count_wakes_no_one_as_in_threading():
    cond, holding, out = Condition(), threading.Event(), []

    def waiter():
        with cond:
            holding.set()
            out.append(cond.wait(30))

    t = threading.Thread(target=waiter)
    t.start()
    assert holding.wait(30)
    with cond:  # taken once the waiter waits (it is counted as one before it lets go)
        cond.notify(-1)
        assert _native.sync_get(cond._ids[0])[0] == 0  # no notification pending
        cond.notify()
    t.join(30)
    assert out == [True]


def test_a_timeout_whose_float_reinitializes_the_lock_is_not_a_use_after_free():
    # Review found it: acquire() read the lock's entry, then the timeout's __float__ (user
    # code) called __init__ again, which freed that entry: the wait then locked freed
    # memory (SIGSEGV with MALLOC_PERTURB_).  The entry is read after the arguments now.
    import subprocess
    import sys
    import textwrap

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            from manygil import sync
            lock = sync.Lock()
            lock.acquire()  # held: no fast path

            class Timeout:
                def __float__(self):
                    sync.Lock.__init__(lock)  # the handle lets go of its only entry
                    return 0.05

            print(lock.acquire(True, Timeout()))
        """)],
        capture_output=True, text=True, timeout=60, env=dict(__import__("os").environ, MALLOC_PERTURB_="165"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n"  # a new, free lock
