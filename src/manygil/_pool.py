"""The machinery of :class:`manygil.InterpreterPoolExecutor`.

One task's trip (nothing polls; every wait is a condition variable or a channel)::

    caller thread              main interpreter                     worker k's thread
    submit(fn, *a) ─ pickle ─► Future ─► worker k idle? ─ chan_put(inbox k) ─► serve(): fn(*a)
                                        └► else pending deque                   │
                                                                  call_home(result)
    Future.set_result ◄──── _deliver (main interpreter, same thread) ◄───────────┘
                            └─► returns the next pending task, or None: wait on the inbox

* A worker is a thread of the main interpreter that owns one interpreter and stays
  inside it, in ``_worker.serve``, for its whole life.
* After each task it switches back to the main interpreter on the same OS thread
  (``_native.call_home``, about 1 µs) to resolve the future and take the next pending
  task, so a busy pool hands over work with no thread wake-up at all.
* A time limit or ``cancel()`` of a running task sends the task id on the worker's
  control channel; a helper thread inside the worker's interpreter raises
  ``TaskInterrupted`` in the task.  The future ends at once; a worker that has not
  answered within ``grace_period`` is abandoned and replaced.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import pickle
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, LOGGER, PENDING, RUNNING
from typing import Any, TextIO

from . import _backend, _copy, _exit, _native, _output, _tracebacks, _worker
from ._exceptions import BrokenInterpreterPool, ExecutionFailed, RemoteError
from ._futures import settle
from ._fallback import Fallback
from ._handles import collect, out_of_band, release_pins
from ._interpreters import bootstrap
from ._router import FALLBACKS, Router, learn_refusal, route_key
from ._seats import Seats
from ._timeouts import TIMEOUT_MAX, check_timeout
from ._transport import describe, dumps, dumps_by_value, has_cloudpickle, main_hint, under_main_guard
from ._waits import main_wait

__all__ = ("InterpreterFuture", "InterpreterPoolExecutor")

_STOP = bytes(12)  # a task record with id 0
_EVENT = bytes(8)  # the task id of a worker's events (READY, INIT_FAILED)
_SERVE = "_mg_worker.serve(_mg_inbox, _mg_results, _mg_control, _mg_started, _mg_index, _mg_init, _mg_explain)\n"
_MAX_BATCH = 64
_CALLER_SPIN = 50e-6  # InterpreterFuture.result() polls this long before it sleeps...
_SHORT_TASK = 200e-6  # ...when the pool's tasks take less than this (its moving average)

_pools: weakref.WeakSet[_PoolState] = weakref.WeakSet()
_global_shutdown = False
_global_lock = threading.Lock()


def _python_exit() -> None:
    global _global_shutdown
    with _global_lock:
        _global_shutdown = True
    states = list(_pools)
    interrupted = False
    try:
        if isinstance(getattr(sys, "last_exc", None), KeyboardInterrupt):
            # The script ended by Ctrl-C, its traceback just printed: say why it waits.
            count = sum(s.in_flight() + (s.router.in_flight() if s.router else 0) for s in states)
            if count:
                sys.stderr.write(
                    f"manygil: waiting for the {count} task{'s' if count > 1 else ''} left in the pools "
                    "before exiting, as concurrent.futures does; Ctrl-C again cancels them\n"
                )
                sys.stderr.flush()
        for state in states:
            state.shutdown(wait=True, cancel_futures=False)
        # The process sides last: an interpreter may hand one a task (a refusal) until
        # its own tasks are done.  Their tasks run too, as a ProcessPoolExecutor's do.
        for state in states:
            if state.router is not None:
                state.router.shutdown(wait=True, cancel_futures=False)
    except KeyboardInterrupt:
        # Ctrl-C while the program's end waits for the tasks: stop them all, as leaving
        # a with block by Ctrl-C does (finalizing with a task running aborted the process).
        interrupted = True
        for state in states:
            state.cancel_all()
        for state in states:
            state.shutdown(wait=True, cancel_futures=True)
            if state.router is not None:
                state.router.shutdown(wait=True, cancel_futures=True)
    # A worker abandoned in C still runs inside its interpreter, and CPython cannot
    # finalize an interpreter with a running thread (3.13 waits forever, 3.12 aborts).
    stuck = _wait_for_abandoned(states)
    if stuck:
        _exit_without_finalizing(stuck)
    if interrupted:
        # Said in one line, not raised: raised here, it is only printed ("Exception
        # ignored on threading shutdown" and a traceback); the exit status is CPython's.
        sys.stderr.write("manygil: Ctrl-C at the program's end: the pools' tasks were cancelled\n")
        sys.stderr.flush()


def _wait_for_abandoned(states: list[_PoolState]) -> list[str]:
    """Wait for the workers abandoned in C (main thread, at the program's end), as Python
    waits at exit for work in flight: each pool's grace period once more, then, saying so
    on ``sys.stderr``, up to its ``exit_timeout`` in all; what still runs then, or at once
    on Ctrl-C."""
    try:
        waiting = [(s, w) for s in states for w in s.join_abandoned(min(s.grace, s.exit_timeout))]
        for state, worker in waiting:
            sys.stderr.write(
                f"manygil: the program's end waits up to {state.exit_timeout:g} s for {worker.name}, "
                f"abandoned in {worker.abandoned_in}() after its time limit or cancel(), to return; "
                "Ctrl-C to exit now\n"
            )
        sys.stderr.flush()
        stuck = [w for s in states for w in s.join_abandoned(max(0.0, s.exit_timeout - s.grace))]
    except KeyboardInterrupt:
        stuck = [w for s in states for w in s.join_abandoned(0.0)]
    return [f"{w.name} is still stuck in {w.abandoned_in}(), abandoned after its time limit or cancel()" for w in stuck]


def _exit_without_finalizing(stuck: list[str]) -> None:
    import atexit

    sys.stderr.write(
        "manygil: exiting with status 1 without finalizing the interpreter: "
        + "; ".join(stuck)
        + ". CPython cannot finalize an interpreter while one of its threads still runs; "
        "atexit handlers ran and the standard streams were flushed. Give such tasks a way "
        "to return (a timeout on the blocking call) to exit normally.\n"
    )
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing left to save
            pass
    os._exit(1)


# Like ThreadPoolExecutor: finish the work in flight before non-daemon threads are
# joined at interpreter exit (atexit handlers would run too late).
_exit.register(_python_exit)


class InterpreterFuture(Future):  # type: ignore[type-arg]
    """A ``Future`` whose ``cancel()`` also stops a task that is already running.

    Cancelling a running task raises an exception inside its interpreter; the future
    is cancelled at once, whether or not the task notices.
    """

    _state_ref: weakref.ref[_PoolState] | None = None
    _tid: int = 0
    _fallback: Future | None = None  # type: ignore[type-arg]  # the task runs in the fallback pool
    # A thread will ask for the result: result() was called before the task finished, or
    # the future is map()'s.  Its result is then loaded by that thread (see _Encoded, _Lent).
    _awaited = False

    def result(self, timeout: float | None = None) -> Any:
        """The task's result (as ``Future.result``).  When the pool's tasks are short,
        it first polls for up to 50 µs before it sleeps: waking a sleeping thread costs
        more than that on many machines."""
        if timeout is not None:
            timeout = check_timeout(timeout, negative_is_zero=True)  # NaN: ValueError; inf: None
        if self._state in (PENDING, RUNNING):
            self._awaited = True  # a large bytes result is read by the thread that asks (see _Lent)
        if self._state in (PENDING, RUNNING) and self._fallback is None and (timeout is None or timeout > 0):
            state = self._state_ref() if self._state_ref is not None else None
            if state is not None and state.task_time is not None and state.task_time < _SHORT_TASK:
                start = time.monotonic()
                spin = _CALLER_SPIN if timeout is None else min(_CALLER_SPIN, timeout)
                while self._state in (PENDING, RUNNING) and (left := spin - (time.monotonic() - start)) > 0:
                    seen = _native.home_calls()  # a worker delivers its results in call_home()
                    if self._state not in (PENDING, RUNNING):
                        break
                    _native.await_home_call(seen, left)
                if timeout is not None:
                    timeout = max(0.0, timeout - (time.monotonic() - start))
        if timeout is None or timeout > 0:
            end = None if timeout is None else time.monotonic() + timeout
            with self._condition:
                while self._state in (PENDING, RUNNING):
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    main_wait(self._condition, remaining)
            if end is not None:
                timeout = max(0.0, end - time.monotonic())
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (as ``Future.exception``), its ``timeout`` checked as
        ``result()`` checks it; a result that does not load is the exception."""
        if timeout is not None:
            timeout = check_timeout(timeout, negative_is_zero=True)
        exc = super().exception(timeout)
        if exc is None and type(self._result) is _Encoded:
            with self._condition:
                try:
                    self._Future__get_result()
                except BaseException as error:  # noqa: BLE001 - returned, as Future does
                    return error
        return exc

    def _Future__get_result(self) -> Any:
        # 3.12/3.13's Future tests "if self._exception:", so an exception whose
        # __bool__ is false came back as a result of None (gh-132063).
        if self._exception is not None:
            try:
                raise self._exception
            finally:
                self = None  # type: ignore[assignment]  # no cycle through the frame
        held = self._result
        if isinstance(held, (_Lent, _Encoded)):  # called with self._condition held
            try:
                self._result = held.load()
            except BaseException as exc:  # it does not load here: the task's error
                self._result, self._exception = None, exc
                raise
        return self._result

    def cancel(self) -> bool:
        """Cancel the task, even while it runs; ``False`` only once it has finished."""
        with self._condition:
            if self._state != RUNNING:
                return super().cancel()
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        if self._fallback is not None:
            self._fallback.cancel()  # not started there yet: it never will
            return True
        state = self._state_ref() if self._state_ref is not None else None
        if state is not None:
            state.interrupt(self._tid)
        return True


class _Item:
    """A submitted task.  It owns its payload's pins (see ``_handles``): they are
    released when the item is dropped, which happens only once no worker can load the
    payload any more (its result arrived, its worker is gone, or it never started)."""

    __slots__ = (
        "by_value", "by_value_error", "call", "fn", "future", "keep", "payload", "pins", "started", "timeout",
        "worker",
    )

    def __init__(
        self,
        future: InterpreterFuture,
        payload: bytes,
        pins: tuple[int, ...],
        timeout: float | None,
        fn: object,
        call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None,
        by_value: bool = False,
        keep: list[object] | None = None,
    ) -> None:
        self.by_value = by_value  # its function of __main__ travels by value
        self.future = future
        self.payload = payload
        self.pins = pins
        self.keep = keep  # large bytes arguments that the payload borrows (_handles._OutOfBand)
        self.timeout = timeout
        self.worker: _WorkerHandle | None = None
        self.fn = fn  # the user's function (for a chunk of map(), the mapped one)
        self.call = call  # what was submitted, kept to run it in the fallback pool
        self.started = False
        self.by_value_error: BaseException | None = None  # why a resend by value failed

    def drop(self, release_pins: Callable[[tuple[int, ...]], None] = release_pins) -> None:
        """Release the payload's pins now (no worker will load it)."""
        pins, self.pins = self.pins, ()
        release_pins(pins)
        self.keep = None

    __del__ = drop

    @property
    def label(self) -> str:
        return str(getattr(self.fn, "__qualname__", None) or repr(self.fn))


class _WorkerHandle:
    __slots__ = (
        "abandoned_in", "control", "done", "gone", "inbox", "index", "interp_id", "results", "seated",
        "sent_at", "started", "state", "thread", "tids",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.inbox = _native.chan_create(0)
        self.results = _native.chan_create(0)
        self.control = _native.chan_create(0)
        self.started = _native.sync_create(0, -1)
        self.thread: threading.Thread | None = None
        self.tids: deque[int] = deque()  # handed to the worker, results not collected yet
        self.done = 0
        self.sent_at = 0.0  # when its current batch was handed over
        self.interp_id = -1
        self.state = "starting"  # starting | idle | busy | renewing | retiring | abandoned
        self.seated = False  # holds one of the seats it shares with the process side
        self.abandoned_in = ""  # the task it was abandoned in, for the program's end
        # Set as its thread ends: what the program's end waits on for an abandoned worker
        # (on 3.12 a Thread.join() that Ctrl-C interrupts marks a running thread stopped).
        self.gone = threading.Event()

    @property
    def name(self) -> str:
        return self.thread.name if self.thread is not None else f"worker {self.index}"

    def wake(self, batch: bytes) -> None:
        """Hand a batch (or the stop message) to a worker that waits on its inbox."""
        _native.chan_put(self.inbox, batch, 0, None)

    def collect(self) -> list[bytes]:
        """The result records the worker has produced and nobody has taken yet."""
        out = []
        get = _native.chan_get
        while (item := get(self.results, 0)) is not None:
            out.append(item[1])
        return out

    def running_now(self) -> int:
        """The id of the task the worker is running now, or 0."""
        return max(0, int(_native.sync_get(self.started)[0]))

    def last_started(self) -> int:
        """The id of the last task the worker started (running or finished)."""
        return abs(int(_native.sync_get(self.started)[0]))

    def release(self) -> None:
        for obj in (self.inbox, self.results, self.control, self.started):
            _native.release(obj)


def _rebuild_exception(status: int, payload: bytes | memoryview) -> BaseException:
    """The task's own exception, chained to an ``ExecutionFailed`` with its traceback in
    the worker (as 3.14's pool does); else a RemoteError."""
    if status == _worker.REFUSED:
        payload = payload[2 + int.from_bytes(payload[:2], "little") :]  # the module's name
    if status in (_worker.RAISED, _worker.REFUSED):
        n = int.from_bytes(payload[:4], "little")
        info = pickle.loads(payload[4 : 4 + n])
        try:
            exc = pickle.loads(payload[4 + n :])
        except Exception:  # noqa: BLE001 - it pickled there but does not unpickle here
            exc = None
        if not isinstance(exc, BaseException):
            exc = RemoteError(info)
    else:
        info = pickle.loads(payload)
        exc = RemoteError(info)
    exc.__cause__ = ExecutionFailed(info)
    return exc  # type: ignore[no-any-return]


def _payload(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool = False
) -> tuple[bytes, tuple[int, ...], list[object] | None]:
    """A task's pickle, its pins, and what the item must keep alive while a worker may
    load it: large buffers go out of band, and a large ``bytes`` is borrowed, so that it
    is copied once, by the worker.  ``by_value``: functions of the caller's ``__main__``
    go by value with cloudpickle, with only the globals they use, so the worker need not
    import the whole script."""
    keep: list[object] = []
    if kwargs:
        values = tuple(kwargs.values())
        if (moved := out_of_band(values, keep)) is not values:
            kwargs = dict(zip(kwargs, moved))
    call = (fn, out_of_band(args, keep), kwargs)
    if by_value:  # only asked for with cloudpickle installed (Fallback.by_value)
        payload, pins = collect(dumps_by_value, call)
    else:
        _, payload, pins = dumps(call)  # a tuple: a copy or a pickle (_copy.loads)
    return payload, pins, keep or None


def _preloads_main() -> bool:
    """Whether a new pool's workers import the caller's script as they start: when it is
    a ``.py`` file or a module run with ``-m`` (not an installed command such as
    ``pytest``, nor a package's ``__main__``, whose functions are not tasks), and not on
    3.12, where a keyword call of some C functions made first in an own-GIL interpreter
    (a script's imports may make one) makes the process abort at exit (see
    ``_transport``)."""
    if sys.version_info < (3, 13) or _backend.get_current()[0] != _backend.get_main()[0]:
        return False
    name, file = main_hint()
    if name:
        return not name.endswith(".__main__")
    return file.endswith(".py")


def _refusal(payload: bytes | memoryview) -> tuple[str, bool]:
    """The module named by a REFUSED payload, and whether importing the caller's script
    (not the task's own needs) was refused; the modules whose import it failed are
    learned (``learn_refusal``)."""
    text = bytes(payload[2 : 2 + int.from_bytes(payload[:2], "little")]).decode()
    return _refused_module(text.removeprefix("script:")), text.startswith("script:")


def _refused_module(text: str) -> str:
    """The refusing module of a ``_worker.refusal()`` text, after learning its chain."""
    module, _, chain = text.partition("|")
    learn_refusal(module, chain.split())
    return module


class _Lent:
    """A large ``bytes`` result that its worker lends: read (copied once) by the first
    ``result()``, in the caller's thread.  Its memory then comes from that thread's heap,
    where the caller frees its results, not from the worker thread's, where results
    freed by the caller and the worker's own large values would take turns and small
    allocations between them would split the memory freed (fresh pages faulted in for
    every other 16 MiB result on CPython 3.14 with glibc 2.43).  If the worker lets go
    of it first, the block takes a copy of its own (``_native.block_disown``)."""

    __slots__ = ("block",)

    def __init__(self, block: int) -> None:
        _native.retain(block)
        self.block = block

    def load(self) -> bytes:
        block, self.block = self.block, 0
        try:
            return _native.block_bytes(block)  # type: ignore[return-value]
        finally:
            _native.release(block)

    def __del__(self, release: Callable[[int], None] = _native.release) -> None:
        if self.block:
            release(self.block)


class _Encoded:
    """A result still in its bytes (a copy or a pickle, ``_copy.loads``), loaded by the
    thread that asks for it: a caller waiting in ``result()``, or the consumer of a
    ``map``.  The worker that delivered it goes back to work at once, instead of loading
    it in the main interpreter first (where loads are one at a time, under its GIL)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data

    def load(self) -> Any:
        data, self.data = self.data, b""
        return _copy.loads(data)


def _resolve(item: _Item | None, record: bytes, router: Router[_Item] | None = None) -> None:
    """Settle a task's future from its result record (``_worker.pack`` after the task
    id); the record's pins are released whether or not it is loaded.  A task that the
    worker could not load because a module refused its interpreter goes to ``router``."""
    status, payload, pins = _worker.unpack(record, 8)
    try:
        if item is None or item.future.done():
            return  # timed out or cancelled while it ran: nobody wants the result
        future = item.future
        try:
            if status == _worker.REFUSED:
                module, script = _refusal(payload)
                if router is not None and router.take_refused(item, module, script):
                    return  # sent again by value, or run on the other side
                exc = _rebuild_exception(status, payload)
                exc.add_note(
                    f"manygil: the extension module {module} refuses to load in an interpreter "
                    f"with its own GIL, so this task did not run; InterpreterPoolExecutor("
                    f"fallback=\"process\") (the default) runs such tasks in a process worker"
                )
                if item.by_value_error is not None:
                    error = item.by_value_error
                    exc.add_note(
                        f"manygil: {item.label} could not be sent by value either (to run it without "
                        f"importing the script): {type(error).__name__}: {error}"
                    )
                future.set_exception(exc)
            elif status == _worker.OK:
                # Read by the thread that will ask (see _Lent, _Encoded), else here and now.
                if record[8] & _worker.LENT and pins and future._awaited:
                    future.set_result(_Lent(pins[0]))
                elif future._awaited and not pins:
                    future.set_result(_Encoded(payload))
                else:
                    future.set_result(_copy.loads(payload))
            elif status == _worker.INTERRUPTED:
                future.set_exception(CancelledError(f"task {item.label} was interrupted"))
            else:
                future.set_exception(_rebuild_exception(status, payload))
        except BaseException as exc:  # noqa: BLE001 - the result does not load here (even SystemExit)
            settle(future, exc=exc)
    finally:
        release_pins(pins)


def _bug(when: str, exc: BaseException) -> str:
    """Why a pool broke when manygil's own code failed ``when``."""
    return (
        f"manygil failed {when} ({type(exc).__name__}: {exc}); "
        "this is a bug in manygil, please report it with this traceback"
    )


class _PoolState:
    """Everything the pool's threads share; the executor is a thin facade over it.

    All fields are guarded by ``lock``.  Worker threads run ``_deliver`` (through
    ``call_home``) after each task; the watchdog thread runs time limits.
    """

    def __init__(
        self,
        max_workers: int,
        init: bytes,
        init_pins: tuple[int, ...],
        max_tasks_per_worker: int | None,
        own_gil: bool,
        grace_period: float,
        exit_timeout: float,
        name: str,
        dump_on_timeout: object = False,
        forward_output: bool = True,
    ) -> None:
        self.dump_on_timeout = dump_on_timeout
        self.forward_output = forward_output
        self.max_workers = max_workers
        self.init = init
        self.init_pins = init_pins  # every worker loads init; released with the pool state
        self.max_tasks = max_tasks_per_worker
        self.own_gil = own_gil
        self.grace = grace_period
        self.exit_timeout = exit_timeout
        self.name = name
        # Re-entrant: the executor's finalizer calls shutdown(wait=False), and a garbage
        # collection can run it on any thread at any allocation, including one that holds
        # this lock (a deadlock at exit on 3.12, found by the fault injection).
        self.lock = threading.RLock()
        self.pending: deque[tuple[int, _Item]] = deque()
        self.idle: list[_WorkerHandle] = []
        self.workers: dict[int, _WorkerHandle] = {}
        self.running: dict[int, _Item] = {}
        self.tids = itertools.count(1)
        self.indexes = itertools.count(0)
        self.shutting_down = False
        self.broken: str | None = None
        self.broken_cause: BaseException | None = None
        self.router: Router[_Item] | None = None  # where refused tasks go (set by the executor)
        self.seats: Seats | None = None  # shared with the process side (set by the executor)
        self.watchdog: threading.Thread | None = None
        self.leaving = 0  # workers in self.workers that are retiring or abandoned
        # Deliveries whose refused tasks are on their way back by value (_deliver): the
        # idle workers stay for them while the pool shuts down.
        self.resending = 0
        self.task_time: float | None = None  # running average of one task's time, seconds
        self.deadlines: list[tuple[float, int, int]] = []
        self.watch = threading.Condition(self.lock)  # the watchdog waits on it
        self.changed = threading.Condition(self.lock)  # a worker exited or was abandoned
        self.exited: list[threading.Thread] = []
        self.preload = False  # workers import the caller's script while no task waits
        self.warm = 0  # workers that warm_up() starts once the first is up with no task
        _pools.add(self)

    def drop_init(self, release_pins: Callable[[tuple[int, ...]], None] = release_pins) -> None:
        """Release the initargs' pins: no worker will start again (lock held or unshared)."""
        pins, self.init_pins = self.init_pins, ()
        release_pins(pins)

    # Worker threads hold the state while they run: none can load init any more.
    __del__ = drop_init

    # ------------------------------------------------------------ submitting

    def resubmit(self, item: _Item) -> None:
        """Send a refused task again, its function by value (see ``Router.by_value``);
        a worker's thread, in ``call_home``."""
        assert item.call is not None
        payload, pins, keep = _payload(*item.call, by_value=True)
        again = _Item(item.future, payload, pins, item.timeout, item.fn, item.call, by_value=True, keep=keep)
        again.started = True  # its future is running already
        try:
            self.submit(again, resend=True)
        except BaseException:
            again.drop()
            raise

    def submit(self, item: _Item, resend: bool = False) -> None:
        """Queue ``item`` or start it on an idle worker (caller's thread, or a worker's in
        ``call_home`` for a ``resend``: a task submitted before the pool began to shut
        down, sent again by value, which still runs then, as it would have)."""
        with self.lock:
            if self.broken is not None:
                raise BrokenInterpreterPool(self.broken) from self.broken_cause
            if self.shutting_down and not resend:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown and not resend:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            tid = next(self.tids)
            item.future._tid = tid
            failed: list[InterpreterFuture] = []
            worker = self.idle.pop() if self.idle else None
            if worker is not None and not self._seat(worker):
                self.idle.append(worker)  # the process side holds every seat
                worker = None
                self.pending.append((tid, item))
            elif worker is not None:
                task = self._start(worker, tid, item)  # a fresh future is not cancelled
                if not task:  # but its function was routed to the fallback meanwhile
                    self._unseat(worker)
                    self.idle.append(worker)
                    worker = None
            else:
                self.pending.append((tid, item))
                if self._active() < len(self.pending) + len(self.running):
                    failed = self._maybe_start_worker()
        if worker is not None:
            worker.wake(task)  # outside the lock: the woken worker may need it at once
        self._flush()
        self._fail(failed)

    def _start(self, worker: _WorkerHandle, tid: int, item: _Item) -> bytes:
        """Mark an item running on a worker (lock held); its task record, or b"" if it
        was cancelled or handed to the router: its function is routed to the other side
        now, or goes by value now (the router's ``flush`` sends it on once the lock is free)."""
        if item.started:
            if item.future.done():  # handed back by an abandoned worker, then cancelled
                return b""
        elif not item.future.set_running_or_notify_cancel():
            return b""
        item.started = True
        if self.router is not None and item.call is not None:
            if self.router.routed(item.fn):
                # Routed while it waited (an earlier call was refused): no need to try it here.
                self.router.divert(item)
                return b""
            if not item.by_value and self.router.script_refused and getattr(item.fn, "__module__", None) == "__main__":
                # Queued before the script was found not to import here: by value instead.
                self.router.resend_by_value(item)
                return b""
        if not worker.tids:
            worker.sent_at = time.monotonic()
        worker.tids.append(tid)
        worker.state = "busy"
        item.worker = worker
        self.running[tid] = item
        if item.timeout is not None:
            self._add_deadline(time.monotonic() + item.timeout, tid, 0)
        return tid.to_bytes(8, "little") + len(item.payload).to_bytes(4, "little") + item.payload

    def _route_refused(self, done: list[tuple[_Item | None, bytes]]) -> bool:
        """Tell the router of the tasks just refused (lock held), so that it routes their
        functions before this worker takes its next batch; whether some may come back by
        value (``_resolve``), which a worker must stay for."""
        if self.router is None:
            return False
        refused = [
            (item, *_refusal(_worker.unpack(record, 8)[1]))
            for item, record in done
            if record[8] & ~_worker.PINNED == _worker.REFUSED and item is not None and item.call is not None
        ]
        return bool(refused) and self.router.learn(refused)

    # ------------------------------------------------------------ what the router asks

    def withdraw(self, pred: Callable[[_Item], bool]) -> list[_Item]:
        """Take the queued tasks for which ``pred`` holds out of the queue, their futures
        running, for the router to send to the other side (any thread; takes the lock,
        which the caller may hold)."""
        out: list[_Item] = []
        with self.lock:
            keep: deque[tuple[int, _Item]] = deque()
            for tid, item in self.pending:
                if item.call is not None and pred(item):
                    if item.started or item.future.set_running_or_notify_cancel():
                        item.started = True
                        out.append(item)
                else:
                    keep.append((tid, item))
            self.pending = keep
        return out

    def requeue_by_value(self, item: _Item) -> None:
        """Queue again, first, a task whose function went by reference and now goes by
        value (its future runs already); the router's thread, without the lock, since
        this pickles its arguments."""
        assert item.call is not None
        try:
            payload, pins, keep = _payload(*item.call, by_value=True)
        except BaseException as exc:  # noqa: BLE001 - it does not pickle by value
            settle(item.future, exc=exc)
            return
        item.drop()
        item.payload, item.pins, item.keep, item.by_value = payload, pins, keep, True
        with self.lock:  # at the front, as it was
            broken = self.broken is not None
            if not broken:
                tid = next(self.tids)
                item.future._tid = tid
                self.pending.appendleft((tid, item))
        if broken:
            self._fail([item.future])
        else:
            self.seat_freed()  # the worker whose batch it left went idle

    def _flush(self) -> None:
        """Let the router send on what this side handed it: outside the lock."""
        if self.router is not None:
            self.router.flush()

    def _next_for(self, worker: _WorkerHandle, stay: bool = False) -> bytes | None:
        """The next batch for a free worker (lock held): task records, the stop message,
        or None when it should wait on its inbox (``stay``: also when the pool shuts
        down, for a task on its way back).

        Tasks travel alone until they are known to be short (under 0.5 ms on average);
        then batches follow guided self-scheduling: at most 1/(2 * workers) of what is
        pending and about 5 ms of work, so fast tasks travel in bulk and the tail stays
        balanced.  A task with a time limit always travels alone, so its clock starts
        when it starts.
        """
        if self.pending and not self._seat(worker):
            if self.broken is None:  # tasks wait here for a seat the process side holds
                worker.state = "idle"
                self.idle.append(worker)
                return None
        elif self.pending:
            limit = 1
            if self.task_time is not None and self.task_time < 0.0005:
                limit = len(self.pending) // (2 * max(1, self._active()))
                limit = max(1, min(limit, _MAX_BATCH, int(0.005 / max(self.task_time, 1e-6))))
            if self.max_tasks is not None:
                limit = max(1, min(limit, self.max_tasks - worker.done))
            batch: list[bytes] = []
            while self.pending and len(batch) < limit:
                tid, item = self.pending[0]
                if item.timeout is not None and batch:
                    break
                self.pending.popleft()
                record = self._start(worker, tid, item)
                if record:
                    batch.append(record)
                    if item.timeout is not None:
                        break
            if batch:
                return b"".join(batch)
        self._unseat(worker)
        if self.broken is not None or (self.shutting_down and not stay):
            self._leave(worker, "retiring")
            self._retire_idle()
            return _STOP
        worker.state = "idle"
        self.idle.append(worker)
        return None

    def _retire_idle(self) -> None:
        """Stop the idle workers once the pool shuts down and no task is left (lock held):
        workers that waited for a seat have nothing left either."""
        if self.broken is None and (not self.shutting_down or self.resending):
            return
        if not self.pending:
            for other in self.idle:
                self._leave(other, "retiring")
                other.wake(_STOP)
            self.idle.clear()

    def _seat(self, worker: _WorkerHandle) -> bool:
        """Whether ``worker`` may take a batch now (lock held): it holds a seat, or gets
        one.  A worker whose task ends while process tasks wait for a seat hands its
        seat over if this side holds more than its fair share (see ``Seats``)."""
        seats = self.seats
        if seats is None:
            return True
        if worker.seated:
            if not seats.others_wait("interp"):
                return True
            self._unseat(worker)
            return False
        worker.seated = seats.take("interp")
        return worker.seated

    def _unseat(self, worker: _WorkerHandle) -> None:
        """``worker`` leaves its seat (lock held): to the process side if its tasks wait
        for one, else to an idle worker of this pool whose tasks wait for one."""
        if not worker.seated:
            return
        worker.seated = False
        assert self.seats is not None
        if self.seats.give("interp"):
            pass  # the process side's tasks take it
        elif self.pending and self.idle and self.broken is None:
            other = self.idle.pop()
            batch = self._next_for(other)  # takes the seat; no deeper: it empties pending or runs
            if batch is not None:
                other.wake(batch)

    def wants_seat(self) -> bool:
        """Tasks wait here for a seat (read without the lock: a hint)."""
        return bool(self.pending) and bool(self.idle)

    def seat_freed(self) -> None:
        """A seat was freed (by the process side, see ``Seats``), or tasks were queued
        again with no worker woken for them: hand waiting tasks to idle workers."""
        wakes: list[tuple[_WorkerHandle, bytes]] = []
        with self.lock:
            while self.pending and self.idle and self.broken is None:
                worker = self.idle.pop()
                batch = self._next_for(worker)
                if batch is None:
                    break  # no seat: it went back to idle
                wakes.append((worker, batch))
        for worker, batch in wakes:
            worker.wake(batch)
        self._flush()

    def _active(self) -> int:
        """Workers that take tasks (starting, idle or busy)."""
        return len(self.workers) - self.leaving

    def _leave(self, worker: _WorkerHandle, state: str) -> None:
        """A worker stops taking tasks: it retires, or is abandoned (lock held)."""
        self._unseat(worker)
        if worker.state not in ("retiring", "abandoned"):
            self.leaving += 1
        worker.state = state

    def _maybe_start_worker(self) -> list[InterpreterFuture]:
        """Start a worker if the pool has room (lock held); the futures that must fail
        because no thread can start (only at exit on 3.12, which starts no threads
        once it finalizes) and no other worker is left to run them."""
        if self._active() >= self.max_workers:
            return []
        worker = _WorkerHandle(next(self.indexes))
        self.workers[worker.index] = worker
        # Daemon, so that an abandoned worker stuck in C cannot block interpreter exit;
        # _python_exit and shutdown(wait=True) join every worker that is not abandoned.
        thread = threading.Thread(
            target=self._run_worker, args=(worker,), name=f"{self.name}worker-{worker.index}", daemon=True
        )
        worker.thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            del self.workers[worker.index]
            worker.release()
            if self._active():
                return []  # the other workers take the pending tasks
            return self._break(
                f"no worker is left and none can start now ({exc}): CPython 3.12 starts no thread "
                "once the program ends; call pool.shutdown() (or use a with block) before the script ends",
                exc,
            )
        # The watchdog starts with the first worker, since a time limit may come when no
        # thread can start (3.12 at exit); after it, which meanwhile creates its
        # interpreter (a pool's first result comes 0.3 ms sooner).
        try:
            self._start_watchdog()
        except RuntimeError as exc:  # the same exit, between the two starts
            LOGGER.warning("manygil: the pool's watchdog cannot start (%s): its time limits cannot stop tasks", exc)
        return []

    def warm_up(self, workers: int, preload: bool = True) -> None:
        """Start ``workers`` workers, each importing the caller's script (``preload``)
        while no task waits for it, so that the first calls of the script's functions do
        not pay for that import.  One starts now, the others once it is up if no task
        waits then (see ``_worker_event``): a task submitted at once gets the cores to
        itself, and its result comes 1 ms sooner (of 10.7 ms, 3.15, 2 cores; interpreters
        that start together slow each other down); tasks submitted start more workers,
        as always."""
        with self.lock:
            self.preload = preload
            self.warm = workers
            self._maybe_start_worker()

    def _start_watchdog(self) -> None:
        if self.watchdog is None:
            self.watchdog = threading.Thread(target=self._watch, name=f"{self.name}watchdog", daemon=True)
            self.watchdog.start()

    # ------------------------------------------------------------ worker threads

    def _run_worker(self, worker: _WorkerHandle) -> None:
        """A worker thread: one interpreter after another (``max_tasks_per_worker``
        renews it on the same thread: 3.12 cannot start threads at exit), then gone."""
        while True:
            error = self._run_interpreter(worker)
            with self.lock:
                renew = worker.state == "renewing" and not error and self.broken is None
                if renew and self.shutting_down and not self.pending:
                    renew = False
                    self._leave(worker, "retiring")
                    self._retire_idle()  # it ran the last task: the others wait for nothing
                if renew:
                    worker.state = "starting"
                    worker.done = 0
                    _native.sync_set(worker.started, 0)
            if not renew:
                break
        try:
            self._worker_exited(worker, error)
        except BaseException as exc:  # noqa: BLE001 - a bug: said loudly, never a hung shutdown
            self._exit_failed(worker, exc)
        finally:
            worker.release()
            worker.gone.set()

    def _count_out(self, worker: _WorkerHandle) -> None:
        """Remove a worker whose thread is ending from the pool's count (lock held)."""
        del self.workers[worker.index]
        if worker.thread is not None:
            self.exited.append(worker.thread)  # for shutdown(wait=True) to join
        if worker.state in ("retiring", "abandoned"):
            self.leaving -= 1  # it was counted among the workers that leave

    def _lost(self, worker: _WorkerHandle) -> list[InterpreterFuture]:
        """The futures of the tasks that a stopped worker still held, taken out of
        ``running`` (lock held): they fail, nothing will deliver their results."""
        return [self.running.pop(tid).future for tid in worker.tids if tid in self.running]

    def _exit_failed(self, worker: _WorkerHandle, exc: BaseException) -> None:
        """manygil itself failed while a worker stopped (a bug): the pool breaks with that
        error as the cause, and the worker is counted out so that shutdown() returns."""
        reason = _bug("while a worker stopped", exc)
        LOGGER.error("%s", reason, exc_info=exc)
        with self.lock:
            if self.workers.get(worker.index) is worker:
                self._count_out(worker)
            failed = self._break(reason, exc) + self._lost(worker)
            self.watch.notify_all()
            self.changed.notify_all()
        self._fail(failed)

    def _run_interpreter(self, worker: _WorkerHandle) -> str:
        """Create the worker's interpreter, serve in it, destroy it; what went wrong."""
        error = ""
        interp_id = None
        try:
            interp_id = _backend.create(self.own_gil)
            worker.interp_id = interp_id
            bootstrap(interp_id, self.forward_output)
            _tracebacks.register(interp_id, worker.control, f"{self.name}worker-{worker.index}")
            shared = {
                "_mg_inbox": worker.inbox,
                "_mg_results": worker.results,
                "_mg_control": worker.control,
                "_mg_started": worker.started,
                "_mg_index": worker.index,
                "_mg_init": self.init,
                # A refusal's traceback is shown only without a fallback side to run the task.
                "_mg_explain": int(self.router is None or self.router.kind is None),
            }
            _native.push_home(lambda data: self._home(worker, data))
            try:
                failed = _backend.run(interp_id, _SERVE, shared)
            finally:
                _native.pop_home()
            if failed is not None:
                error = "%s: %s" % failed
        except BaseException as exc:  # noqa: BLE001 - reported through _worker_exited
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if interp_id is not None:
                _tracebacks.unregister(interp_id)
                try:
                    _backend.destroy(interp_id)
                except Exception as exc:  # noqa: BLE001 - said as why the worker stopped
                    error = error or f"cannot close interpreter {interp_id}: {exc}"
        return error

    def _take(self, worker: _WorkerHandle, records: list[bytes]) -> list[tuple[_Item | None, bytes]]:
        """Match result records with their items (lock held); give each to ``_resolve``
        (without the lock), which also releases what an orphan record holds."""
        done = []
        for record in records:
            tid = int.from_bytes(record[:8], "little")
            item = self.running.pop(tid, None)
            if worker.tids and worker.tids[0] == tid:
                worker.tids.popleft()
            elif tid in worker.tids:
                worker.tids.remove(tid)
            worker.done += 1
            done.append((item, record))
        return done

    def _home(self, worker: _WorkerHandle, data: bytes) -> bytes | None:
        """What a worker's ``call_home`` runs: ``_deliver``.  Should manygil itself fail
        there (a bug), the pool breaks with that error as the cause and this worker stops:
        the tasks already handed to the workers still finish, the queued ones fail with
        ``BrokenInterpreterPool``, and nothing waits forever for a result that was lost."""
        try:
            return self._deliver(worker, data)
        except BaseException as exc:  # noqa: BLE001 - a bug: said loudly, never a hang
            reason = _bug("while handling a worker's results", exc)
            with self.lock:
                failed = self._break(reason, exc)
                self._leave(worker, "retiring")
            self._fail(failed)
            return _STOP

    def _deliver(self, worker: _WorkerHandle, last: bytes) -> bytes | None:
        """Runs in the main interpreter on a worker's thread: take the results of its
        batch (the last one is the argument), give it the next batch."""
        if last[:8] == _EVENT:
            return self._worker_event(worker, last[8:])
        records = worker.collect() if len(worker.tids) > 1 else []
        records.append(last)
        done: list[tuple[_Item | None, bytes]] = []
        stay = False
        try:
            with self.lock:
                done = self._take(worker, records)
                if worker.sent_at:
                    per_task = (time.monotonic() - worker.sent_at) / len(records)
                    self.task_time = per_task if self.task_time is None else 0.8 * self.task_time + 0.2 * per_task
                worker.sent_at = 0.0
                if worker.state == "abandoned":
                    batch: bytes | None = _STOP
                elif self.max_tasks is not None and worker.done >= self.max_tasks:
                    worker.state = "renewing"  # a fresh interpreter on the same thread
                    self._unseat(worker)
                    batch = _STOP
                else:
                    # A task sent again by value comes back to the queue in _resolve
                    # below: the idle workers stay for it even if the pool shuts down
                    # (at exit on 3.12 none could start to run it).
                    stay = self._route_refused(done)
                    self.resending += stay
                    batch = self._next_for(worker, stay)
            self._flush()
        finally:  # the results taken are settled, even if manygil failed above (see _home)
            try:
                for item, record in done:
                    _resolve(item, record, self.router)
            finally:
                if stay:
                    with self.lock:
                        self.resending -= 1
                        self._retire_idle()  # what was to come back is queued, or is not coming
        return batch

    def _worker_event(self, worker: _WorkerHandle, event: bytes) -> bytes | None:
        if event[0] == _worker.OUTPUT:
            _output.handle_event(event[1:])
            return None
        if event[0] in (_worker.READY, _worker.PRELOADED):
            with self.lock:
                if self.warm and not self.pending and self.broken is None and not self.shutting_down:
                    for _ in range(self.warm - self._active()):
                        self._maybe_start_worker()  # fails no future: this worker is up
                self.warm = 0
                if event[0] == _worker.PRELOADED:
                    if len(event) > 1:  # a module refused the script
                        _refused_module(event[1:].decode())
                        if self.router is not None:
                            self.router.refuse_script()  # its functions go by value
                elif self.preload and not self.pending and not self.shutting_down and self.broken is None:
                    return _worker.PRELOAD  # nothing to do yet: import the caller's script meanwhile
                batch = self._next_for(worker)
            self._flush()
            return batch
        # INIT_FAILED: the worker returns by itself; the pool is broken.
        status, payload, pins = _worker.unpack(event, 1)
        try:
            cause = _rebuild_exception(status, payload)
        finally:
            release_pins(pins)
        # Logged as the standard library's pools log it (logger "concurrent.futures").
        info = getattr(cause.__cause__, "excinfo", None)
        LOGGER.critical("Exception in initializer:\n%s", info.errdisplay if info else cause)
        with self.lock:
            self._leave(worker, "retiring")
            failed = self._break("a worker's initializer raised; the pool is broken", cause)
        self._fail(failed)
        return None

    def _break(self, reason: str, cause: BaseException) -> list[InterpreterFuture]:
        """Mark the pool broken (lock held); the futures that must fail."""
        if self.broken is None:
            self.broken = reason
            self.broken_cause = cause
        for other in self.idle:
            self._leave(other, "retiring")
            other.wake(_STOP)
        self.idle.clear()
        futures = [item.future for _, item in self.pending]
        self.pending.clear()
        return futures

    def _fail(self, futures: list[InterpreterFuture]) -> None:
        for future in futures:
            err = BrokenInterpreterPool(self.broken or "the worker running this task stopped")
            err.__cause__ = self.broken_cause
            settle(future, exc=err)

    def _worker_exited(self, worker: _WorkerHandle, error: str) -> None:
        records = worker.collect()
        with self.lock:
            done = self._take(worker, records)
            self._unseat(worker)
            self._count_out(worker)
            if worker in self.idle:
                self.idle.remove(worker)
            failed = self._lost(worker)
            if failed and self.broken is None:  # else the cause of the breakage stays
                self.broken_cause = RuntimeError(error or "the worker stopped")
            if worker.state == "starting" and error:
                # The interpreter could not even start: trying again would loop.
                failed += self._break(f"a worker interpreter could not start: {error}", RuntimeError(error))
            elif self.pending and self.broken is None:
                # Also while shutting down: pending tasks still run unless cancelled.
                failed += self._maybe_start_worker()
            self._retire_idle()
            if self.shutting_down and not self.workers:
                self.drop_init()  # no worker will start again
            self.watch.notify_all()
            self.changed.notify_all()
        self._flush()
        for item, record in done:
            _resolve(item, record, self.router)
        self._fail(failed)

    # ------------------------------------------------------------ time limits

    def _add_deadline(self, when: float, tid: int, stage: int) -> None:
        heapq.heappush(self.deadlines, (when, tid, stage))
        self.watch.notify()  # the watchdog started with the first worker

    def _watch(self) -> None:
        """The watchdog thread: ends tasks past their time limit, then abandons the
        workers of those that ignore the interrupt.  What a deadline sets off runs
        without the pool's lock (futures' callbacks, stack dumps): the lock is left by
        its ``with``, never released by hand, which would leave it held when entered twice."""
        while True:
            with self.lock:
                then = self._due()
            if then is None:
                return
            then()

    def _due(self) -> Callable[[], None] | None:
        """Wait for the next deadline and act on it (lock held); what to run next without
        the lock, or None once the pool stops."""
        while True:
            if self.shutting_down and not self._active():
                return None
            now = time.monotonic()
            if not self.deadlines:
                self.watch.wait()
                continue
            when, tid, stage = self.deadlines[0]
            if when > now:
                self.watch.wait(when - now)
                continue
            heapq.heappop(self.deadlines)
            item = self.running.get(tid)
            if item is None:
                continue
            then = self._expire(tid, item) if stage == 0 else self._abandon(tid, item)
            if then is not None:
                return then

    def _expire(self, tid: int, item: _Item) -> Callable[[], None] | None:
        """``item`` passed its time limit (lock held): what ends its future and interrupts
        it, to run without the lock (``set_exception`` runs callbacks, and the stacks
        take a moment); or None when its future is done already (it is interrupted now)."""
        future = item.future
        if future.done():
            self._interrupt_locked(tid)
            return None
        message = f"task {item.label} exceeded its time limit of {item.timeout:g} s"
        worker = item.worker

        def then() -> None:
            if self.dump_on_timeout and worker is not None:
                stacks = _tracebacks.format_tracebacks(interp_ids=[worker.interp_id])
                stream = self.dump_on_timeout if hasattr(self.dump_on_timeout, "write") else sys.stderr
                stream.write(f"manygil: {message}; its interpreter's stacks:\n{stacks}")
            settle(future, exc=TimeoutError(message))
            with self.lock:
                self._interrupt_locked(tid)

        return then

    def interrupt(self, tid: int) -> None:
        """Stop a running task in its interpreter (its future is already resolved)."""
        with self.lock:
            self._interrupt_locked(tid)

    def _interrupt_locked(self, tid: int) -> None:
        item = self.running.get(tid)
        if item is None or item.worker is None:
            return
        _native.chan_put(item.worker.control, tid.to_bytes(8, "little"), 0, None)
        self._add_deadline(time.monotonic() + self.grace, tid, 1)

    def _abandon(self, tid: int, item: _Item) -> Callable[[], None] | None:
        """The task ignored its interrupt (stuck in C): leave its worker, start another
        (lock held); what settles the futures this touched, to run without the lock.

        Results the worker already produced are collected; tasks of its batch that had
        not started are revoked there and handed to other workers under new ids.
        """
        worker = item.worker
        if worker is None or worker.state == "abandoned":
            return None
        if worker.running_now() != tid:
            return None  # not started yet, or already done: the interrupt will be seen
        self._leave(worker, "abandoned")
        worker.abandoned_in = item.label
        done = self._take(worker, worker.collect())
        for old in [t for t in worker.tids if t != tid]:
            moved = self.running.pop(old, None)
            worker.tids.remove(old)
            _native.chan_put(worker.control, old.to_bytes(8, "little"), 0, None)
            if moved is not None and not moved.future.done():
                new = next(self.tids)
                moved.future._tid = new
                self.pending.appendleft((new, moved))
        failed = []
        if self.pending and self.broken is None:
            failed = self._maybe_start_worker()  # also while shutting down: pending tasks still run
        self.watch.notify_all()
        self.changed.notify_all()
        if not (done or failed or (self.router is not None and self.router.holds())):
            return None

        def then() -> None:
            self._flush()
            for finished, record in done:
                _resolve(finished, record, self.router)
            self._fail(failed)

        return then

    # ------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: list[InterpreterFuture] = []
        with self.lock:
            self.shutting_down = True
            if cancel_futures:
                cancelled = [item.future for _, item in self.pending]
                self.pending.clear()
                for worker in self.workers.values():
                    # Tasks handed over in a batch but not started yet are revoked too.
                    last = worker.last_started()
                    cancelled += [self.running[t].future for t in worker.tids if t > last and t in self.running]
            self._retire_idle()
            # Busy and starting workers get the stop message when they next ask for work.
            self.watch.notify_all()
        self._flush()
        for future in cancelled:
            future.cancel()
        if wait:
            # Until no worker is left but abandoned ones: a worker that retires
            # (max_tasks_per_worker) or is abandoned may start a replacement meanwhile.
            me = threading.current_thread()
            with self.lock:
                while any(w.state != "abandoned" and w.thread is not me for w in self.workers.values()):
                    main_wait(self.changed)
                threads = [self.watchdog, *self.exited]
                self.exited.clear()
            for thread in threads:
                if thread is not None and thread is not me:
                    thread.join()  # each has left its loop: this is only its last steps

    def in_flight(self) -> int:
        """How many tasks are pending or running (any thread)."""
        with self.lock:
            return len(self.pending) + len(self.running)

    def join_abandoned(self, timeout: float) -> list[_WorkerHandle]:
        """Wait up to ``timeout`` for abandoned workers to come back from C; those that
        still run (main thread; Ctrl-C raises ``KeyboardInterrupt`` here)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            left = [w for w in self.workers.values() if w.state == "abandoned"]
        stuck = []
        for worker in left:
            while not worker.gone.is_set() and (rest := deadline - time.monotonic()) > 0:
                worker.gone.wait(min(rest, 0.1))  # a Ctrl-C is seen within 0.1 s
            if not worker.gone.is_set():
                stuck.append(worker)
        return stuck

    def cancel_all(self) -> None:
        """Cancel every task, pending or running, the fallback side's too (Ctrl-C while
        a ``with`` block or the program's end waits)."""
        with self.lock:
            futures = [item.future for _, item in self.pending] + [item.future for item in self.running.values()]
        for future in futures:
            future.cancel()
        if self.router is not None:
            self.router.cancel_all()


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class InterpreterPoolExecutor(ThreadPoolExecutor):
    """A ``concurrent.futures`` executor that runs tasks in interpreters with their own GIL.

    Args:
        max_workers: how many tasks run at once, in interpreters and process workers
            together; default ``os.cpu_count()``.
        initializer: called in each worker interpreter before its first task.
        initargs: arguments for ``initializer``.
        max_tasks_per_worker: replace a worker's interpreter after this many tasks.
        task_timeout: a time limit in seconds for every task (see also ``with_timeout``).
        shared_gil: run the workers under the main GIL, for extension modules that
            refuse to load in an interpreter with its own GIL (no parallel speed-up).
        grace_period: seconds a task has to stop after its time limit or ``cancel()``
            before its worker is abandoned and replaced.
        exit_timeout: at the program's end, how long to wait for a worker abandoned in a
            C call to return (Python waits at exit for work in flight; CPython cannot
            finalize an interpreter whose thread runs): then, or on Ctrl-C, the process
            exits with status 1 without finalizing.  Default ``$MANYGIL_EXIT_TIMEOUT``,
            else 30 s.
        thread_name_prefix: prefix for the names of the pool's threads.
        dump_on_timeout: when a task hits its time limit, write its interpreter's
            stacks (see ``manygil.dump_tracebacks``) to ``sys.stderr``, or to this file.
        forward_output: send what tasks print to the caller's ``sys.stdout`` and
            ``sys.stderr``, and their logging records to the caller's handlers (on by
            default); off, workers write straight to the process's file descriptors.
        fallback: where a task goes that cannot run in an own-GIL interpreter because
            loading its function or arguments imports an extension module that refuses
            one (numpy, for one): ``"process"`` (default) runs it in a process worker,
            ``"shared-gil"`` in an interpreter that shares the main GIL, ``None`` raises
            the ImportError.  Later calls of that function go there directly; see
            ``routes()`` and ``route()``.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_worker`` is not positive, a time
            argument is not a number of seconds, or ``fallback`` is not one of the above.
        TypeError: ``initializer`` is not callable.
        RuntimeError: created inside an interpreter other than the main one, or while
            tracemalloc traces on CPython 3.14 (or, without ``shared_gil``, on 3.12).
    """

    # A ThreadPoolExecutor by type only, as the standard library's InterpreterPoolExecutor
    # is one: asyncio's loop.set_default_executor() accepts nothing else.  None of its
    # threads or queue are used: __init__, submit, map and shutdown are this pool's own.
    BROKEN = BrokenInterpreterPool

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
        task_timeout: float | None = None,
        shared_gil: bool = False,
        grace_period: float = 2.0,
        exit_timeout: float | None = None,
        thread_name_prefix: str = "",
        dump_on_timeout: bool | TextIO = False,
        forward_output: bool = True,
        fallback: str | None = "process",
    ) -> None:
        _worker.check_not_importing_main()
        here, main = _backend.get_current()[0], _backend.get_main()[0]
        if here != main:
            # Its workers would be daemon threads, which an interpreter other than the
            # main one cannot start; refused before anything is registered, so that no
            # shutdown() waits for a worker that never started.
            raise RuntimeError(
                f"cannot create an InterpreterPoolExecutor inside interpreter {here}, only in the "
                "main interpreter: a task that needs more tasks can return them to its caller, "
                "which can submit from the main interpreter"
            )
        _backend.check_tracemalloc(own_gil=not shared_gil)
        if fallback not in FALLBACKS:
            raise ValueError(
                f"fallback must be \"process\", \"shared-gil\" or None, got {fallback!r}"
            )
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        _check_count("max_workers", max_workers)
        if max_tasks_per_worker is not None:
            _check_count("max_tasks_per_worker", max_tasks_per_worker)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        task_timeout = _check_timeout("task_timeout", task_timeout)
        grace_period = _check_seconds("grace_period", grace_period)
        exit_timeout = _default_exit_timeout() if exit_timeout is None else _check_seconds("exit_timeout", exit_timeout)
        _exit.run_first()  # the program's end waits for this pool before process pools stop
        init: bytes = b""
        init_pins: tuple[int, ...] = ()
        if initializer is not None:
            _, init, init_pins = dumps((initializer, tuple(initargs)))
        self._timeout = task_timeout
        self._state = _PoolState(
            max_workers,
            init,
            init_pins,
            max_tasks_per_worker,
            not shared_gil,
            grace_period,
            exit_timeout,
            thread_name_prefix or f"manygil-pool-{id(self):x}-",
            dump_on_timeout,
            forward_output,
        )
        self._max_workers = max_workers
        self._state_ref = weakref.ref(self._state)
        # The routing table, and the by-value resend of a script's functions (which
        # fallback=None keeps); with shared_gil every task may import anything.
        self._router: Router[_Item] | None = None
        if not shared_gil:
            other: Fallback | None = None
            if fallback is not None:
                seats = Seats(max_workers) if fallback == "process" else None
                if seats is not None:
                    self._state.seats = seats
                    seats.attach("interp", self._state.wants_seat, self._state.seat_freed)
                # The shared-GIL side is a pool of its own, made here on its first task:
                # the fallback module does not import this one.
                shared_gil_pool = functools.partial(
                    InterpreterPoolExecutor,
                    max_workers,
                    initializer=initializer,
                    initargs=tuple(initargs),
                    max_tasks_per_worker=max_tasks_per_worker,
                    shared_gil=True,
                    fallback=None,
                    forward_output=forward_output,
                )
                other = Fallback(
                    fallback, max_workers, initializer, tuple(initargs), max_tasks_per_worker, forward_output, seats,
                    shared_gil_pool if fallback == "shared-gil" else None,
                )
            # The state, not this object: the pool still runs its tasks once the executor
            # is dropped (`del pool` before the program's end); held weakly.
            self._router = Router(other, fallback, self._state)
            self._state.router = self._router
            weakref.finalize(self, self._router.shutdown, False, False)
        weakref.finalize(self, self._state.shutdown, False, False)
        if _preloads_main():
            # A script a module refused in an earlier pool is not imported again: its
            # functions go by value (see Fallback.refuse_script).
            refused = self._router is not None and self._router.script_refused
            self._state.warm_up(min(max_workers, os.cpu_count() or 1), preload=not refused)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> InterpreterFuture:
        """Schedule ``fn(*args, **kwargs)`` in a worker interpreter.

        Raises:
            NotShareableError: ``fn`` or an argument cannot be sent (the message says why).
            RuntimeError: the pool was shut down.
            BrokenInterpreterPool: the pool is broken.
        """
        return self._submit(fn, args, kwargs, self._timeout)

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        route_fn: Callable[..., Any] | None = None,
    ) -> InterpreterFuture:
        """Submit ``fn(*args, **kwargs)`` with a time limit, routed (to the interpreters
        or the processes) as ``route_fn`` is: a chunk of a ``map`` goes where the mapped
        function goes.  Runs in the caller's thread.  The one entry of every submission:
        ``submit``, ``map``, and manygil's own integrations (``manygil.Pool``, the joblib
        backend, ``manygil run``), which call it with their chunk runners."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {describe(fn)}")
        route_fn = route_fn or fn  # a chunk of map() is routed by the mapped function
        call = None
        by_value = False
        if self._router is not None:
            if self._router.routed(route_fn):
                return self._submit_fallback(fn, args, kwargs, timeout, route_fn)
            call = (fn, args, kwargs)
            by_value = self._router.script_refused and getattr(route_fn, "__module__", None) == "__main__"
        # A function defined under the script's main guard: the worker's import of the
        # script does not define it.
        by_value = by_value or (under_main_guard(route_fn) and has_cloudpickle())
        if self._router is not None:
            module = self._router.needs_refusing(route_fn, by_value)
            if module is not None:  # its loading would import a module known to refuse
                self._router.refused(route_fn, module, known=True)
                return self._submit_fallback(fn, args, kwargs, timeout, route_fn)
        payload, pins, keep = _payload(fn, args, kwargs, by_value)
        future = InterpreterFuture()
        future._state_ref = self._state_ref
        item = _Item(future, payload, pins, timeout, route_fn, call, by_value, keep)
        try:
            self._state.submit(item)
        except BaseException:
            item.drop()  # now, not when the traceback that holds it is collected
            raise
        return future

    def _submit_fallback(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        route_fn: Callable[..., Any],
    ) -> InterpreterFuture:
        assert self._router is not None
        state = self._state
        with state.lock:  # the same refusals as _PoolState.submit
            if state.broken is not None:
                raise BrokenInterpreterPool(state.broken) from state.broken_cause
            if state.shutting_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        future = InterpreterFuture()
        future.set_running_or_notify_cancel()
        label = str(getattr(route_fn, "__qualname__", None) or repr(route_fn))
        self._router.run(future, fn, args, kwargs, timeout=timeout, label=label)
        return future

    def routes(self) -> dict[str, str]:
        """The functions whose tasks run outside the own-GIL interpreters, and why:
        ``{"module.qualname": "process: the extension module numpy... refuses ..."}``."""
        if self._router is None or self._router.kind is None:
            return {}
        with self._router.lock:
            return dict(self._router.routes)

    def route(self, fn: Callable[..., Any], where: str = "process") -> None:
        """Run ``fn``'s tasks in the fallback pool from now on (``where`` must be this
        pool's ``fallback``), e.g. for a function that imports numpy inside its body."""
        if self._router is None or self._router.kind is None or where != self._router.kind:
            raise ValueError(
                f"route({route_key(fn)}, {where!r}): this pool's fallback is "
                f"{self._router.kind if self._router else None!r}; create the pool with "
                f"InterpreterPoolExecutor(fallback={where!r})"
            )
        self._router.route(fn, f"{where}: pool.route()")
        self._router.withdraw_routed()  # its calls already queued go there too
        self._router.flush()

    def with_timeout(self, seconds: float | None) -> _TimedSubmitter:
        """A view of this pool whose ``submit``/``map``/``run`` give each task a time limit.

        ``pool.with_timeout(2).submit(fn, x)`` ends the future with ``TimeoutError`` and
        interrupts ``fn`` inside its interpreter if it runs longer than 2 s.
        """
        return _TimedSubmitter(self, _check_timeout("seconds", seconds))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Like ``Executor.map``; ``chunksize > 1`` sends tasks in batches.

        Args:
            buffersize: at most this many tasks (chunks) submitted and not yet yielded,
                as in 3.14's ``Executor.map``: the iterables are read as results are
                consumed, so they may be endless.
            progress: show a tqdm progress bar (needs tqdm installed).
        """
        return self._map(fn, iterables, timeout, chunksize, progress, self._timeout, buffersize)

    def _map(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        progress: bool,
        task_timeout: float | None,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int, got {chunksize!r}")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (not isinstance(buffersize, int) or isinstance(buffersize, bool)):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        total = None
        if progress:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                raise ImportError("map(progress=True) needs tqdm: pip install tqdm") from None
            try:
                total = min(len(it) for it in iterables)  # type: ignore[arg-type]
            except TypeError:
                total = None
        end = None if timeout is None else time.monotonic() + timeout
        calls: Iterator[Any] = zip(*iterables) if chunksize == 1 else _chunks(iterables, chunksize)

        def submit(call: Any) -> InterpreterFuture:
            if chunksize == 1:
                future = self._submit(fn, call, {}, task_timeout)
            else:
                future = self._submit(_worker.run_chunk, (fn, call), {}, task_timeout, fn)
            future._awaited = True  # its result is loaded by the thread that takes it
            return future

        window = itertools.islice(calls, buffersize) if buffersize is not None else calls
        futures = deque(submit(call) for call in window)
        more = (calls, submit) if buffersize is not None else None
        results = _results(futures, end, chunksize > 1, more)
        if progress:
            return _with_progress(results, total)
        return results

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` from asyncio; cancelling the await cancels the task
        in its interpreter, even while it runs."""
        return await _await(self.submit(fn, *args, **kwargs))

    @property
    def _broken(self) -> str | bool:  # type: ignore[override]  # read-only: ThreadPoolExecutor's is set
        """Why the pool is broken, else False: the attribute the standard library's pools
        have, which code written for them (CPython's own tests among it) reads."""
        return self._state.broken or False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the pool: pending tasks still run unless ``cancel_futures``; with ``wait``
        return once every worker interpreter is closed."""
        self._state.shutdown(wait, cancel_futures)
        if self._router is not None:
            self._router.shutdown(wait, cancel_futures)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Leaving the block waits for the tasks; leaving it by Ctrl-C (``KeyboardInterrupt``),
        ``SystemExit`` or another ``BaseException`` that is not an ``Exception`` cancels them
        all, running ones included, so that the program stops promptly; so does Ctrl-C
        while the block waits for them."""
        if exc_type is None or issubclass(exc_type, Exception):
            try:
                self.shutdown(True)
                return
            except BaseException:  # Ctrl-C while the block waits for the tasks: the same
                self._stop_all()
                raise
        self._stop_all()

    def _cancel_all(self) -> None:
        """Cancel every task, pending or running, on both sides (any thread)."""
        self._state.cancel_all()

    def _stop_all(self) -> None:
        self._cancel_all()
        self.shutdown(True, cancel_futures=True)


class _TimedSubmitter:
    """The ``with_timeout`` view: submit/map/run with a per-task time limit."""

    def __init__(self, pool: InterpreterPoolExecutor, seconds: float | None) -> None:
        self._pool = pool
        self._seconds = seconds

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> InterpreterFuture:
        """``submit`` with this view's time limit."""
        return self._pool._submit(fn, args, kwargs, self._seconds)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """``map`` with this view's time limit for each task (each chunk)."""
        return self._pool._map(fn, iterables, timeout, chunksize, progress, self._seconds, buffersize)

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``run`` with this view's time limit."""
        return await _await(self.submit(fn, *args, **kwargs))


async def _await(future: InterpreterFuture) -> Any:
    import asyncio

    # wrap_future cancels the concurrent future when the awaiting task is cancelled,
    # and InterpreterFuture.cancel() interrupts a running task.
    return await asyncio.wrap_future(future)


def _results(
    futures: deque[InterpreterFuture],
    end: float | None,
    chunked: bool,
    more: tuple[Iterator[Any], Callable[[Any], InterpreterFuture]] | None = None,
) -> Iterator[Any]:
    """Yield the results in order; with ``more`` (buffersize), submit the next call as
    each result is taken, so at most the window's size is in flight."""
    try:
        while futures:
            future = futures.popleft()
            if more is not None:
                call = next(more[0], _DONE)
                if call is not _DONE:
                    futures.append(more[1](call))
            remaining = None if end is None else end - time.monotonic()
            if chunked:
                yield from future.result(remaining)
            else:
                yield future.result(remaining)
    finally:
        for future in futures:
            future.cancel()


_DONE = object()


def _with_progress(results: Iterator[Any], total: int | None) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total) as bar:
        for value in results:
            bar.update(1)
            yield value


def _check_timeout(name: str, value: float | None) -> float | None:
    """A time limit: a positive number of seconds, or None (inf too) for no limit."""
    try:
        seconds = check_timeout(value, name)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be a positive number of seconds or None, got {value!r}") from None
    if seconds == 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return seconds


def _check_count(name: str, value: object) -> None:
    """A count of workers or tasks: an int greater than 0 (NaN, 1.5 and True were taken)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0")  # the standard library's words


def _default_exit_timeout() -> float:
    text = os.environ.get("MANYGIL_EXIT_TIMEOUT", "")
    try:
        seconds = float(text) if text.strip() else 30.0
    except ValueError:
        raise ValueError(f"MANYGIL_EXIT_TIMEOUT must be a number of seconds, got {text!r}") from None
    return _check_seconds("MANYGIL_EXIT_TIMEOUT", seconds)


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if not 0 <= value < TIMEOUT_MAX:  # NaN fails this too
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)
