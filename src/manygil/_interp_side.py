"""The interpreter side of :class:`manygil.InterpreterPoolExecutor`: its workers, each a
thread of the main interpreter that owns one own-GIL interpreter, and their queue.

One task's trip (nothing polls; every wait is a condition variable or a channel)::

    caller thread              main interpreter                     worker k's thread
    submit(fn, *a) ─ pickle ─► Future ─► worker k idle? ─ chan_put(inbox k) ─► serve(): fn(*a)
                                        └► else pending deque                   │
                                                                  call_home(result)
    Future.set_result ◄──── deliver (main interpreter, same thread) ◄────────────┘
                            └─► returns the next pending task, or None: wait on the inbox

* A worker stays inside its interpreter, in ``_worker.serve``, for its whole life.
* After each task it switches back to the main interpreter on the same OS thread
  (``_native.call_home``) to resolve the future and take the next pending task, so a
  busy pool hands over work with no thread wake-up at all.
* A time limit or ``cancel()`` of a running task sends the task id on the worker's
  control channel; a helper thread inside the worker's interpreter raises
  ``TaskInterrupted`` in the task.  The future ends at once; a worker that has not
  answered within ``grace_period`` is abandoned and replaced.
* A task whose loading a module refused goes to the router (``Upstream``), which sends
  it on: this side never refers to the other one.  The seats it shares with the process
  side are ``_seats.Seats``.
"""

from __future__ import annotations

import enum
import functools
import itertools
import pickle
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Protocol

from . import _backend, _copy, _faults, _native, _output, _tracebacks, _worker
from ._cpython import CANCELLED_AND_NOTIFIED, LOGGER, PENDING, RUNNING
from ._deadlines import Deadlines
from ._exceptions import BrokenInterpreterPool, ExecutionFailed, RemoteError
from ._futures import settle
from ._handles import collect, out_of_band, release_pins
from ._interpreters import bootstrap
from ._refusals import learn_refusal, said
from ._seats import Seats
from ._timeouts import check_timeout
from ._transport import dumps, dumps_by_value, task_label
from ._waits import main_wait

__all__ = (
    "InterpSide", "InterpreterFuture", "Upstream", "WorkerState", "batch_limit", "caller_spin", "end_of_program",
    "program_ended",
)

_STOP = bytes(12)  # a task record with id 0
_EVENT = bytes(8)  # the task id of a worker's events (READY, INIT_FAILED)
_SERVE = "_mg_worker.serve(_mg_inbox, _mg_results, _mg_control, _mg_started, _mg_index, _mg_init, _mg_explain)\n"
_MAX_BATCH = 64
_CALLER_SPIN = 50e-6  # InterpreterFuture.result() polls this long before it sleeps...
_SHORT_TASK = 200e-6  # ...when the pool's tasks take less than this (its moving average)...
_SPIN_MAX = 1e-3  # ...or through about two tasks, to this long, when a CPU is free for it

_sides: weakref.WeakSet[InterpSide] = weakref.WeakSet()  # every interpreter side of this process
_ended = False  # the program's end began: no new task (end_of_program)


def end_of_program() -> list[InterpSide]:
    """The program's end began (the facade's exit hook, main thread): no side takes a
    new task from now on; the sides alive, to shut down."""
    global _ended
    _ended = True
    return list(_sides)


def program_ended() -> bool:
    """Whether the program's end began (``end_of_program``)."""
    return _ended


def caller_spin(task_time: float | None, busy: int, free_cpus: int) -> float:
    """How long ``InterpreterFuture.result()`` polls for its task's end before it sleeps,
    in seconds.  Waking a sleeping thread costs tens of microseconds or more, as much as
    a short task, and a round trip pays it twice (the worker's, the caller's).  So when
    the pool's tasks are short (``task_time``, their moving average, under
    ``_SPIN_MAX``) and the ``busy`` workers leave one of the ``free_cpus`` (the process's
    spin budget: its CPUs less one) to the caller, the caller polls through about two
    tasks' time; when they do not, only briefly, for tasks under ``_SHORT_TASK``."""
    if task_time is None or task_time >= _SPIN_MAX:
        return 0.0
    if busy <= free_cpus:
        return min(_SPIN_MAX, 2 * task_time + _CALLER_SPIN)
    return _CALLER_SPIN if task_time < _SHORT_TASK else 0.0


def batch_limit(pending: int, workers: int, task_time: float | None, left: int | None) -> int:
    """How many of the ``pending`` tasks a free worker takes at once.  One until tasks
    are known to be short (``task_time``, their moving average, under 0.5 ms); then
    guided self-scheduling: at most 1/(2 * ``workers``) of what is pending and about 5 ms
    of work, so fast tasks travel in bulk and the tail stays balanced.  Never more than
    the ``left`` tasks its interpreter may still run (``max_tasks_per_worker``)."""
    limit = 1
    if task_time is not None and task_time < 0.0005:
        limit = max(1, min(pending // (2 * max(1, workers)), _MAX_BATCH, int(0.005 / max(task_time, 1e-6))))
    if left is not None:
        limit = max(1, min(limit, left))
    return limit


class WorkerState(enum.Enum):
    """Where a worker is in its life (``_WorkerHandle.state``, guarded by the side's lock)."""

    STARTING = "starting"  # its interpreter is being made; takes tasks once up
    IDLE = "idle"  # waits on its inbox for a batch
    BUSY = "busy"  # runs a batch
    RENEWING = "renewing"  # max_tasks_per_worker reached: a fresh interpreter, same thread
    RETIRING = "retiring"  # takes no more tasks: stops after its batch
    ABANDONED = "abandoned"  # ignored an interrupt (stuck in C): replaced, waited for at the end


_LEAVING = (WorkerState.RETIRING, WorkerState.ABANDONED)


class Upstream(Protocol):
    """What this side needs of the router (``_router.Router``): where a task goes that a
    module refused here, and the routes asked about as tasks start."""

    @property
    def kind(self) -> str | None: ...

    @property
    def script_refused(self) -> bool: ...

    def routed(self, fn: object) -> bool: ...

    def refuse_script(self, module: str) -> None: ...

    def divert(self, item: _Item) -> None: ...

    def resend_by_value(self, item: _Item) -> None: ...

    def learn(self, refused: list[tuple[_Item, str, bool]]) -> bool: ...

    def take_refused(self, item: _Item, module: str, script: bool) -> bool: ...

    def holds(self) -> bool: ...

    def flush(self) -> None: ...



class InterpreterFuture(Future):  # type: ignore[type-arg]
    """A ``Future`` whose ``cancel()`` also stops a task that is already running.

    Cancelling a running task raises an exception inside its interpreter; the future
    is cancelled at once, whether or not the task notices.
    """

    _side_ref: weakref.ref[InterpSide] | None = None
    _tid: int = 0
    # The task's handle on the other side while it is there: its cancel() stops it (the
    # process side forgets it once the future is settled).
    _fallback: Future | None = None  # type: ignore[type-arg]
    _other_side: str | None = None  # "process" or "shared-gil": the task went there (Router.run)
    # A thread will ask for the result: result() was called before the task finished, or
    # the future is map()'s.  Its result is then loaded by that thread (see _Encoded, _Lent).
    _awaited = False

    def result(self, timeout: float | None = None) -> Any:
        """The task's result (as ``Future.result``).  When the pool's tasks are short,
        it first polls for a while before it sleeps (``caller_spin``)."""
        if timeout is not None:
            timeout = check_timeout(timeout, negative_is_zero=True)  # NaN: ValueError; inf: None
        if self._state in (PENDING, RUNNING):
            self._awaited = True  # a large bytes result is read by the thread that asks (see _Lent)
        if self._state in (PENDING, RUNNING) and self._fallback is None and (timeout is None or timeout > 0):
            side = self._side_ref() if self._side_ref is not None else None
            books = side.schedule if side is not None else None
            spin = 0.0
            if books is not None and books.task_time is not None:
                busy = len(books.workers) - len(books.idle)  # a racy read: a hint is enough
                spin = caller_spin(books.task_time, busy, _native.spin_state()[1])
            if spin > 0:
                start = time.monotonic()
                spin = spin if timeout is None else min(spin, timeout)
                while self._state in (PENDING, RUNNING) and (left := spin - (time.monotonic() - start)) > 0:
                    seen = _native.home_calls()  # a worker delivers its results in call_home()
                    if self._state not in (PENDING, RUNNING):
                        break
                    if not _native.await_home_call(seen, left):
                        break  # the time is up, or the spin budget is spent: sleep
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
        """Cancel the task, even while it runs; ``False`` only once it has finished.

        The done-callbacks run with no lock held (a callback may submit to the pool,
        whose worker may be setting this future running under the pool's lock)."""
        while True:
            with self._condition:
                if self._state == RUNNING:
                    self._state = CANCELLED_AND_NOTIFIED
                    for waiter in self._waiters:
                        waiter.add_cancelled(self)
                    self._condition.notify_all()
                    break
            if super().cancel():  # not running: Future's own, which calls back unlocked
                return True
            if self._state != RUNNING:
                return False  # finished
            # It started to run in between: stop it running.
        fallback = self._fallback  # read first: a done-callback may forget it
        self._invoke_callbacks()  # type: ignore[attr-defined]
        if fallback is not None:
            fallback.cancel()  # not started there yet: it never will
            return True
        state = self._side_ref() if self._side_ref is not None else None
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
        return task_label(self.fn)


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
        self.state = WorkerState.STARTING
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

    def run_interpreter(
        self,
        own_gil: bool,
        init: bytes,
        forward_output: bool,
        name: str,
        explain: bool,
        home: Callable[[bytes], bytes | None],
    ) -> str:
        """Create this worker's interpreter, serve in it (its thread), destroy it; what
        went wrong.  ``home`` is what its ``call_home`` runs in the main interpreter;
        ``explain``: a refusal's traceback is shown (no other side runs the task)."""
        error = ""
        interp_id = None
        try:
            interp_id = _backend.create(own_gil)
            self.interp_id = interp_id
            bootstrap(interp_id, forward_output)
            _tracebacks.register(interp_id, self.control, f"{name}worker-{self.index}")
            shared = {
                "_mg_inbox": self.inbox,
                "_mg_results": self.results,
                "_mg_control": self.control,
                "_mg_started": self.started,
                "_mg_index": self.index,
                "_mg_init": init,
                "_mg_explain": int(explain),
            }
            _native.push_home(home)
            try:
                failed = _backend.run(interp_id, _SERVE, shared)
            finally:
                _native.pop_home()
            if failed is not None:
                error = "%s: %s" % failed
        except BaseException as exc:  # noqa: BLE001 - reported through _Crew.exited
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if interp_id is not None:
                _tracebacks.unregister(interp_id)
                try:
                    _backend.destroy(interp_id)
                except Exception as exc:  # noqa: BLE001 - said as why the worker stopped
                    error = error or f"cannot close interpreter {interp_id}: {exc}"
        return error

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
    if by_value:  # only asked for with cloudpickle installed (Router.by_value)
        payload, pins = collect(dumps_by_value, call)
    else:
        _, payload, pins = dumps(call)  # a tuple: a copy or a pickle (_copy.loads)
    return payload, pins, keep or None


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


def _resolve(item: _Item | None, record: bytes, router: Upstream | None = None) -> None:
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
                future.set_exception(said(exc, module, item.label, item.by_value_error))
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


class _Schedule:
    """The interpreter side's books: the queue, the tasks running and on which worker,
    the workers and their states, and the seats they hold.

    ``lock`` guards every field, and every method but ``runs``, ``flush`` and ``fail``
    runs with it held, on the thread that holds it: a caller's (``submit``), a worker's
    in ``call_home`` (``_Crew``), the watchdog's (``_TimeLimits``), the router's
    (``withdraw``, ``requeue_by_value``), a process-side thread that gives a seat back
    (``seat_freed``) or a finalizer's.  None of them waits for long: they take only the
    seats' and the deadlines' locks (leaves), and starting a worker's thread waits for
    it to start.  What must run without the lock (settling futures, the router's
    sending on) is returned to the caller, which runs it once the lock is free.
    """

    def __init__(
        self,
        max_workers: int,
        max_tasks_per_worker: int | None,
        name: str,
        deadlines: Deadlines,
    ) -> None:
        self.max_workers = max_workers
        self.max_tasks = max_tasks_per_worker
        self.name = name
        # Re-entrant: the executor's finalizer calls shutdown(wait=False), and a garbage
        # collection can run it on any thread at any allocation, including one that holds
        # this lock (a deadlock at exit on 3.12, found by the fault injection).
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # a worker exited or was abandoned
        self.pending: deque[tuple[int, _Item]] = deque()
        self.idle: list[_WorkerHandle] = []
        self.workers: dict[int, _WorkerHandle] = {}
        self.running: dict[int, _Item] = {}
        self.tids = itertools.count(1)
        self.indexes = itertools.count(0)
        self.leaving = 0  # workers in self.workers that are retiring or abandoned
        self.ended: list[threading.Thread] = []  # workers' threads, for shutdown(wait=True) to join
        self.shutting_down = False
        self.broken: str | None = None
        self.broken_cause: BaseException | None = None
        self.router: Upstream | None = None  # where refused tasks go (set by the executor)
        self.seats: Seats | None = None  # shared with the process side (set by the executor)
        # The pool's time limits (shared with its process side): the watchdog thread.
        self.deadlines = deadlines
        self.lease = deadlines.lease()  # released once no deadline will come from here
        # Deliveries whose refused tasks are on their way back by value (_Crew.deliver):
        # the idle workers stay for them while the pool shuts down.
        self.resending = 0
        self.task_time: float | None = None  # running average of one task's time, seconds
        self.preload = False  # workers import the caller's script while no task waits
        self.warm = 0  # workers that warm_up() starts once the first is up with no task
        # What a worker's thread runs (the side's run_worker) and what a deadline sets
        # off (_TimeLimits.deadline): weak references the side sets (see InterpSide).
        self.thread_target: Callable[[], Callable[[_WorkerHandle], None] | None] = _gone
        self.deadline_act: Callable[[], Callable[[int, int], None] | None] = _gone

    def start(self, worker: _WorkerHandle, tid: int, item: _Item) -> bytes:
        """Mark an item running on a worker; its task record, or b"" if it was cancelled
        or handed to the router: its function is routed to the other side now, or goes
        by value now (the router's ``flush`` sends it on once the lock is free)."""
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
        worker.state = WorkerState.BUSY
        item.worker = worker
        self.running[tid] = item
        if item.timeout is not None:
            self.add_deadline(time.monotonic() + item.timeout, tid, 0)
        return tid.to_bytes(8, "little") + len(item.payload).to_bytes(4, "little") + item.payload

    def route_refused(self, done: list[tuple[_Item | None, bytes]]) -> bool:
        """Tell the router of the tasks just refused, so that it routes their functions
        before this worker takes its next batch; whether some may come back by value
        (``_resolve``), which a worker must stay for."""
        if self.router is None:
            return False
        refused = [
            (item, *_refusal(_worker.unpack(record, 8)[1]))
            for item, record in done
            if record[8] & ~_worker.PINNED == _worker.REFUSED and item is not None and item.call is not None
        ]
        return bool(refused) and self.router.learn(refused)

    def next_for(self, worker: _WorkerHandle, stay: bool = False) -> bytes | None:
        """The next batch for a free worker: task records, the stop message, or None when
        it should wait on its inbox (``stay``: also when the pool shuts down, for a task
        on its way back).  As many tasks as ``batch_limit`` says; a task with a time
        limit always travels alone, so its clock starts when it starts."""
        if self.pending and not self.seat(worker):
            if self.broken is None:  # tasks wait here for a seat the process side holds
                worker.state = WorkerState.IDLE
                self.idle.append(worker)
                return None
        elif self.pending:
            left = None if self.max_tasks is None else self.max_tasks - worker.done
            limit = batch_limit(len(self.pending), self.active(), self.task_time, left)
            batch: list[bytes] = []
            while self.pending and len(batch) < limit:
                tid, item = self.pending[0]
                if item.timeout is not None and batch:
                    break
                self.pending.popleft()
                record = self.start(worker, tid, item)
                if record:
                    batch.append(record)
                    if item.timeout is not None:
                        break
            if batch:
                return b"".join(batch)
        self.unseat(worker)
        if self.broken is not None or (self.shutting_down and not stay):
            self.leave(worker, WorkerState.RETIRING)
            self.retire_idle()
            return _STOP
        worker.state = WorkerState.IDLE
        self.idle.append(worker)
        return None

    def retire_idle(self) -> None:
        """Stop the idle workers once the pool shuts down and no task is left: workers
        that waited for a seat have nothing left either."""
        if self.broken is None and (not self.shutting_down or self.resending):
            return
        if not self.pending:
            for other in self.idle:
                self.leave(other, WorkerState.RETIRING)
                other.wake(_STOP)
            self.idle.clear()

    def seat(self, worker: _WorkerHandle) -> bool:
        """Whether ``worker`` may take a batch now: it holds a seat, or gets one.  A
        worker whose task ends while process tasks wait for a seat hands its seat over if
        this side holds more than its fair share (see ``Seats``)."""
        seats = self.seats
        if seats is None:
            return True
        if worker.seated:
            if not seats.others_wait("interp"):
                return True
            self.unseat(worker)
            return False
        worker.seated = seats.take("interp")
        if not worker.seated:
            _faults.point("interp.no_seat", self, worker)
        return worker.seated

    def unseat(self, worker: _WorkerHandle) -> None:
        """``worker`` leaves its seat: to the process side if its tasks wait for one,
        else to an idle worker of this pool whose tasks wait for one."""
        if not worker.seated:
            return
        worker.seated = False
        assert self.seats is not None
        if self.seats.give("interp"):
            pass  # the process side's tasks take it
        elif self.pending and self.idle and self.broken is None:
            other = self.idle.pop()
            batch = self.next_for(other)  # takes the seat; no deeper: it empties pending or runs
            if batch is not None:
                other.wake(batch)

    def active(self) -> int:
        """Workers that take tasks (starting, idle or busy)."""
        return len(self.workers) - self.leaving

    def leave(self, worker: _WorkerHandle, state: WorkerState) -> None:
        """A worker stops taking tasks: it retires, or is abandoned."""
        self.unseat(worker)
        if worker.state not in _LEAVING:
            self.leaving += 1
        worker.state = state

    def start_worker(self) -> list[InterpreterFuture]:
        """Start a worker if the pool has room; the futures that must fail because no
        thread can start (only at exit on 3.12, which starts no threads once it
        finalizes) and no other worker is left to run them."""
        if self.active() >= self.max_workers:
            return []
        run = self.thread_target()
        if run is None:  # unreachable: every caller is the side or one of its threads
            gone = RuntimeError("the pool's side is gone")
            return self.break_(_bug("starting a worker", gone), gone)
        worker = _WorkerHandle(next(self.indexes))
        self.workers[worker.index] = worker
        # Daemon, so that an abandoned worker stuck in C cannot block interpreter exit;
        # _python_exit and shutdown(wait=True) join every worker that is not abandoned.
        thread = threading.Thread(target=run, args=(worker,), name=f"{self.name}worker-{worker.index}", daemon=True)
        worker.thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            del self.workers[worker.index]
            worker.release()
            if self.active():
                return []  # the other workers take the pending tasks
            return self.break_(
                f"no worker is left and none can start now ({exc}): CPython 3.12 starts no thread "
                "once the program ends; call pool.shutdown() (or use a with block) before the script ends",
                exc,
            )
        # The watchdog starts with the first worker, since a time limit may come when no
        # thread can start (3.12 at exit); after it, which meanwhile creates its
        # interpreter (a pool's first result comes 0.3 ms sooner).
        self.deadlines.start_or_say()  # (the same exit may come between the two starts)
        return []

    def count_out(self, worker: _WorkerHandle) -> None:
        """Remove a worker whose thread is ending from the pool's count."""
        del self.workers[worker.index]
        if worker.thread is not None:
            self.ended.append(worker.thread)  # for shutdown(wait=True) to join
        if worker.state in _LEAVING:
            self.leaving -= 1  # it was counted among the workers that leave

    def lost(self, worker: _WorkerHandle) -> list[InterpreterFuture]:
        """The futures of the tasks that a stopped worker still held, taken out of
        ``running``: they fail, nothing will deliver their results."""
        return [self.running.pop(tid).future for tid in worker.tids if tid in self.running]

    def take(self, worker: _WorkerHandle, records: list[bytes]) -> list[tuple[_Item | None, bytes]]:
        """Match result records with their items; give each to ``_resolve`` (without the
        lock), which also releases what an orphan record holds."""
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

    def break_(self, reason: str, cause: BaseException) -> list[InterpreterFuture]:
        """Mark the pool broken; the futures that must fail."""
        if self.broken is None:
            self.broken = reason
            self.broken_cause = cause
        for other in self.idle:
            self.leave(other, WorkerState.RETIRING)
            other.wake(_STOP)
        self.idle.clear()
        futures = [item.future for _, item in self.pending]
        self.pending.clear()
        return futures

    def release_if_done(self) -> None:
        """Once the pool shuts down and no worker takes tasks any more, no deadline will
        come from here: the watchdog may end."""
        self.lease.release_if(self.shutting_down and not self.active())

    def add_deadline(self, when: float, tid: int, stage: int) -> None:
        """Task ``tid`` passes its time limit (stage 0) or the grace after its interrupt
        (stage 1) at ``when``."""
        act = self.deadline_act()
        if act is None:  # unreachable: only the side and its time limits add deadlines
            raise RuntimeError("a time limit was added for a pool whose side is gone")
        self.deadlines.add(when, functools.partial(act, tid, stage), functools.partial(self.runs, tid))

    def runs(self, tid: int) -> bool:
        """Whether task ``tid`` still runs on a worker that was not abandoned: its
        deadline matters (the watchdog thread, without the lock: a dict's item and an
        attribute are read atomically, and an abandoned worker stays abandoned)."""
        item = self.running.get(tid)
        return item is not None and (item.worker is None or item.worker.state != WorkerState.ABANDONED)

    # Without the lock:

    def flush(self) -> None:
        """Let the router send on what this side handed it (without the lock)."""
        if self.router is not None:
            self.router.flush()

    def fail(self, futures: list[InterpreterFuture]) -> None:
        """Fail ``futures`` with the pool's breakage (without the lock)."""
        for future in futures:
            err = BrokenInterpreterPool(self.broken or "the worker running this task stopped")
            err.__cause__ = self.broken_cause
            settle(future, exc=err)


def _gone() -> None:
    """A weak reference to nothing: what ``_Schedule`` calls back before the side sets it."""
    return None


class _Crew:
    """The workers' threads: each makes its interpreter, serves in it, and comes home
    (``call_home``) with its results, which ``deliver`` settles before it hands out the
    next batch.  Every method runs on a worker's thread, but ``drop_init``, which also
    runs on whichever thread drops the side last (``__del__``); the books are
    ``schedule``'s, under its lock."""

    def __init__(
        self,
        schedule: _Schedule,
        init: bytes,
        init_pins: tuple[int, ...],
        own_gil: bool,
        forward_output: bool,
    ) -> None:
        self.schedule = schedule
        self.init = init
        self.init_pins = init_pins  # every worker loads init; released with the crew
        self.own_gil = own_gil
        self.forward_output = forward_output

    def drop_init(self, release_pins: Callable[[tuple[int, ...]], None] = release_pins) -> None:
        """Release the initargs' pins: no worker will start again (lock held or unshared)."""
        pins, self.init_pins = self.init_pins, ()
        release_pins(pins)

    # Worker threads hold the crew while they run: none can load init any more.
    __del__ = drop_init

    def run_worker(self, worker: _WorkerHandle) -> None:
        """A worker thread: one interpreter after another (``max_tasks_per_worker``
        renews it on the same thread: 3.12 cannot start threads at exit), then gone."""
        s = self.schedule
        while True:
            explain = s.router is None or s.router.kind is None
            home = functools.partial(self.home, worker)
            error = worker.run_interpreter(self.own_gil, self.init, self.forward_output, s.name, explain, home)
            with s.lock:
                renew = worker.state == WorkerState.RENEWING and not error and s.broken is None
                if renew and s.shutting_down and not s.pending:
                    renew = False
                    s.leave(worker, WorkerState.RETIRING)
                    s.retire_idle()  # it ran the last task: the others wait for nothing
                if renew:
                    worker.state = WorkerState.STARTING
                    worker.done = 0
                    _native.sync_set(worker.started, 0)
            if not renew:
                break
        try:
            self.exited(worker, error)
        except BaseException as exc:  # noqa: BLE001 - a bug: said loudly, never a hung shutdown
            self.exit_failed(worker, exc)
        finally:
            worker.release()
            worker.gone.set()

    def exit_failed(self, worker: _WorkerHandle, exc: BaseException) -> None:
        """manygil itself failed while a worker stopped (a bug): the pool breaks with that
        error as the cause, and the worker is counted out so that shutdown() returns."""
        s = self.schedule
        reason = _bug("while a worker stopped", exc)
        LOGGER.error("%s", reason, exc_info=exc)
        with s.lock:
            if s.workers.get(worker.index) is worker:
                s.count_out(worker)
            failed = s.break_(reason, exc) + s.lost(worker)
            s.release_if_done()
            s.changed.notify_all()
        s.fail(failed)

    def home(self, worker: _WorkerHandle, data: bytes) -> bytes | None:
        """What a worker's ``call_home`` runs: ``deliver``.  Should manygil itself fail
        there (a bug), the pool breaks with that error as the cause and this worker stops:
        the tasks already handed to the workers still finish, the queued ones fail with
        ``BrokenInterpreterPool``, and nothing waits forever for a result that was lost."""
        s = self.schedule
        _faults.point("interp.home", s, worker, data)
        try:
            return self.deliver(worker, data)
        except BaseException as exc:  # noqa: BLE001 - a bug: said loudly, never a hang
            reason = _bug("while handling a worker's results", exc)
            with s.lock:
                failed = s.break_(reason, exc)
                s.leave(worker, WorkerState.RETIRING)
            s.fail(failed)
            return _STOP

    def deliver(self, worker: _WorkerHandle, last: bytes) -> bytes | None:
        """Runs in the main interpreter on a worker's thread: take the results of its
        batch (the last one is the argument), give it the next batch."""
        if last[:8] == _EVENT:
            return self.event(worker, last[8:])
        s = self.schedule
        records = worker.collect() if len(worker.tids) > 1 else []
        records.append(last)
        done: list[tuple[_Item | None, bytes]] = []
        stay = False
        try:
            with s.lock:
                done = s.take(worker, records)
                if worker.sent_at:
                    per_task = (time.monotonic() - worker.sent_at) / len(records)
                    s.task_time = per_task if s.task_time is None else 0.8 * s.task_time + 0.2 * per_task
                worker.sent_at = 0.0
                if worker.state == WorkerState.ABANDONED:
                    batch: bytes | None = _STOP
                elif s.max_tasks is not None and worker.done >= s.max_tasks:
                    worker.state = WorkerState.RENEWING  # a fresh interpreter on the same thread
                    s.unseat(worker)
                    batch = _STOP
                else:
                    # A task sent again by value comes back to the queue in _resolve
                    # below: the idle workers stay for it even if the pool shuts down
                    # (at exit on 3.12 none could start to run it).
                    _faults.point("interp.results_taken", s, worker, done)
                    stay = s.route_refused(done)
                    s.resending += stay
                    batch = s.next_for(worker, stay)
            s.flush()
        finally:  # the results taken are settled, even if manygil failed above (see home)
            try:
                for item, record in done:
                    _resolve(item, record, s.router)
            finally:
                if stay:
                    with s.lock:
                        s.resending -= 1
                        s.retire_idle()  # what was to come back is queued, or is not coming
        return batch

    def event(self, worker: _WorkerHandle, event: bytes) -> bytes | None:
        """A worker's event: what a task printed, the worker is up (or imported the
        caller's script), or its initializer raised."""
        s = self.schedule
        if event[0] == _worker.OUTPUT:
            _output.handle_event(event[1:])
            return None
        if event[0] in (_worker.READY, _worker.PRELOADED):
            if event[0] == _worker.PRELOADED:
                _faults.point("interp.preloaded", s, worker)
            with s.lock:
                if s.warm and not s.pending and s.broken is None and not s.shutting_down:
                    for _ in range(s.warm - s.active()):
                        s.start_worker()  # fails no future: this worker is up
                s.warm = 0
                if event[0] == _worker.PRELOADED:
                    if len(event) > 1:  # a module refused the script
                        module = _refused_module(event[1:].decode())
                        if s.router is not None:
                            s.router.refuse_script(module)  # its functions go by value
                elif s.preload and not s.pending and not s.shutting_down and s.broken is None:
                    return _worker.PRELOAD  # nothing to do yet: import the caller's script meanwhile
                batch = s.next_for(worker)
            s.flush()
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
        with s.lock:
            s.leave(worker, WorkerState.RETIRING)
            failed = s.break_("a worker's initializer raised; the pool is broken", cause)
        s.fail(failed)
        return None

    def exited(self, worker: _WorkerHandle, error: str) -> None:
        """A worker's interpreter is gone for good (``error``: why, if it failed): what it
        held is settled or failed, and another starts for the tasks still queued."""
        s = self.schedule
        _faults.point("interp.worker_exited", s, worker, error)
        records = worker.collect()
        with s.lock:
            done = s.take(worker, records)
            s.unseat(worker)
            s.count_out(worker)
            if worker in s.idle:
                s.idle.remove(worker)
            failed = s.lost(worker)
            if failed and s.broken is None:  # else the cause of the breakage stays
                s.broken_cause = RuntimeError(error or "the worker stopped")
            if worker.state == WorkerState.STARTING and error:
                # The interpreter could not even start: trying again would loop.
                failed += s.break_(f"a worker interpreter could not start: {error}", RuntimeError(error))
            elif s.pending and s.broken is None:
                # Also while shutting down: pending tasks still run unless cancelled.
                failed += s.start_worker()
            s.retire_idle()
            if s.shutting_down and not s.workers:
                self.drop_init()  # no worker will start again
            s.release_if_done()
            s.changed.notify_all()
        s.flush()
        for item, record in done:
            _resolve(item, record, s.router)
        s.fail(failed)


class _TimeLimits:
    """Time limits and ``cancel()`` of running tasks: an interrupt sent to the task's
    worker, and the worker abandoned (and replaced) if it does not answer within
    ``grace`` seconds.  ``deadline`` runs on the watchdog thread, ``interrupt`` on the
    thread that cancels; the books are ``schedule``'s, under its lock."""

    def __init__(self, schedule: _Schedule, grace: float, dump_on_timeout: object) -> None:
        self.schedule = schedule
        self.grace = grace
        self.dump_on_timeout = dump_on_timeout

    def deadline(self, tid: int, stage: int) -> None:
        """The watchdog thread: task ``tid`` passed its time limit, or ignored its
        interrupt (stuck in C).  What this sets off runs without the pool's lock
        (futures' callbacks, stack dumps): the lock is left by its ``with``, never
        released by hand, which would leave it held when entered twice."""
        with self.schedule.lock:
            item = self.schedule.running.get(tid)
            if item is None:
                return
            then = self.expire(tid, item) if stage == 0 else self.abandon(tid, item)
        if then is not None:
            then()

    def expire(self, tid: int, item: _Item) -> Callable[[], None] | None:
        """``item`` passed its time limit (lock held): what ends its future and interrupts
        it, to run without the lock (``set_exception`` runs callbacks, and the stacks
        take a moment); or None when its future is done already (it is interrupted now)."""
        future = item.future
        if future.done():
            self.interrupt_locked(tid)
            return None
        message = f"task {item.label} exceeded its time limit of {item.timeout:g} s"
        worker = item.worker

        def then() -> None:
            if self.dump_on_timeout and worker is not None:
                stacks = _tracebacks.format_tracebacks(interp_ids=[worker.interp_id])
                stream = self.dump_on_timeout if hasattr(self.dump_on_timeout, "write") else sys.stderr
                stream.write(f"manygil: {message}; its interpreter's stacks:\n{stacks}")
            settle(future, exc=TimeoutError(message))
            with self.schedule.lock:
                self.interrupt_locked(tid)

        return then

    def interrupt(self, tid: int) -> None:
        """Stop a running task in its interpreter (its future is already resolved)."""
        with self.schedule.lock:
            self.interrupt_locked(tid)

    def interrupt_locked(self, tid: int) -> None:
        item = self.schedule.running.get(tid)
        if item is None or item.worker is None:
            return
        _native.chan_put(item.worker.control, tid.to_bytes(8, "little"), 0, None)
        self.schedule.add_deadline(time.monotonic() + self.grace, tid, 1)

    def abandon(self, tid: int, item: _Item) -> Callable[[], None] | None:
        """The task ignored its interrupt (stuck in C): leave its worker, start another
        (lock held); what settles the futures this touched, to run without the lock.

        Results the worker already produced are collected; tasks of its batch that had
        not started are revoked there and handed to other workers under new ids.
        """
        s = self.schedule
        worker = item.worker
        if worker is None or worker.state == WorkerState.ABANDONED:
            return None
        if worker.running_now() != tid:
            return None  # not started yet, or already done: the interrupt will be seen
        s.leave(worker, WorkerState.ABANDONED)
        worker.abandoned_in = item.label
        done = s.take(worker, worker.collect())
        for old in [t for t in worker.tids if t != tid]:
            moved = s.running.pop(old, None)
            worker.tids.remove(old)
            _native.chan_put(worker.control, old.to_bytes(8, "little"), 0, None)
            if moved is not None and not moved.future.done():
                new = next(s.tids)
                moved.future._tid = new
                s.pending.appendleft((new, moved))
        failed = []
        if s.pending and s.broken is None:
            failed = s.start_worker()  # also while shutting down: pending tasks still run
        s.release_if_done()
        s.changed.notify_all()
        if not (done or failed or (s.router is not None and s.router.holds())):
            return None

        def then() -> None:
            s.flush()
            for finished, record in done:
                _resolve(finished, record, s.router)
            s.fail(failed)

        return then


class InterpSide:
    """The interpreter side of one pool, as the executor and the router see it: tasks
    in (``submit``), queued tasks out (``withdraw``), shutdown.  Its parts: the books
    (``_Schedule``, whose lock guards every field), the workers' threads (``_Crew``) and
    the time limits (``_TimeLimits``, the watchdog's).  Callers' threads run these
    methods; each says when it is another's as well."""

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
        deadlines: Deadlines | None = None,
    ) -> None:
        self.schedule = _Schedule(
            max_workers, max_tasks_per_worker, name, deadlines if deadlines is not None else Deadlines(name)
        )
        self.crew = _Crew(self.schedule, init, init_pins, own_gil, forward_output)
        self.limits = _TimeLimits(self.schedule, grace_period, dump_on_timeout)
        # A worker's thread runs this side's run_worker, so that a pool whose executor
        # was dropped stays alive (and in _sides, for the program's end) while a worker
        # runs.  The schedule holds both weakly: no cycle, so the side and its parts go
        # as soon as nothing uses them (the crew then releases the initializer's pins).
        self.schedule.thread_target = weakref.WeakMethod(self.run_worker)
        self.schedule.deadline_act = weakref.WeakMethod(self.limits.deadline)
        self.exit_timeout = exit_timeout
        _sides.add(self)

    # What the executor reads and sets.

    @property
    def lock(self) -> threading.RLock:
        return self.schedule.lock

    @property
    def broken(self) -> str | None:
        return self.schedule.broken

    @property
    def deadlines(self) -> Deadlines:
        return self.schedule.deadlines

    def run_worker(self, worker: _WorkerHandle) -> None:
        """A worker's thread (see ``_Crew.run_worker``)."""
        self.crew.run_worker(worker)

    def attach(self, router: Upstream | None = None, seats: Seats | None = None) -> None:
        """Where refused tasks go, and the seats shared with the process side (the
        executor, as it makes the pool, before any task)."""
        if router is not None:
            self.schedule.router = router
        if seats is not None:
            self.schedule.seats = seats

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

    def check_open(self, resend: bool = False) -> None:
        """Refuse a new task: the pool is broken, shut down, or the program ends (any
        thread; takes the lock, which the caller may hold).  ``resend``: see ``submit``."""
        s = self.schedule
        with s.lock:
            if s.broken is not None:
                raise BrokenInterpreterPool(s.broken) from s.broken_cause
            if s.shutting_down and not resend:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _ended and not resend:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def submit(self, item: _Item, resend: bool = False) -> None:
        """Queue ``item`` or start it on an idle worker (caller's thread, or a worker's in
        ``call_home`` for a ``resend``: a task submitted before the pool began to shut
        down, sent again by value, which still runs then, as it would have)."""
        s = self.schedule
        with s.lock:
            self.check_open(resend)
            s.lease.renew()
            tid = next(s.tids)
            item.future._tid = tid
            failed: list[InterpreterFuture] = []
            worker = s.idle.pop() if s.idle else None
            if worker is not None and not s.seat(worker):
                s.idle.append(worker)  # the process side holds every seat
                worker = None
                s.pending.append((tid, item))
            elif worker is not None:
                task = s.start(worker, tid, item)  # a fresh future is not cancelled
                if not task:  # but its function was routed to the fallback meanwhile
                    s.unseat(worker)
                    s.idle.append(worker)
                    worker = None
            else:
                s.pending.append((tid, item))
                if s.active() < len(s.pending) + len(s.running):
                    failed = s.start_worker()
        if worker is not None:
            worker.wake(task)  # outside the lock: the woken worker may need it at once
        s.flush()
        s.fail(failed)

    def warm_up(self, workers: int, preload: bool = True) -> None:
        """Start ``workers`` workers, each importing the caller's script (``preload``)
        while no task waits for it, so that the first calls of the script's functions do
        not pay for that import.  One starts now, the others once it is up if no task
        waits then (see ``_Crew.event``): a task submitted at once gets the cores to
        itself, and its result comes sooner (interpreters that start together slow each
        other down); tasks submitted start more workers, as always."""
        s = self.schedule
        with s.lock:
            s.preload = preload
            s.warm = workers
            s.start_worker()

    def interrupt(self, tid: int) -> None:
        """Stop a running task in its interpreter (its future is already resolved; the
        thread that cancelled it)."""
        self.limits.interrupt(tid)

    # ------------------------------------------------------------ what the router asks

    def withdraw(self, pred: Callable[[_Item], bool]) -> list[_Item]:
        """Take the queued tasks for which ``pred`` holds out of the queue, their futures
        running, for the router to send to the other side (any thread; takes the lock,
        which the caller may hold)."""
        s = self.schedule
        out: list[_Item] = []
        with s.lock:
            keep: deque[tuple[int, _Item]] = deque()
            for tid, item in s.pending:
                if item.call is not None and pred(item):
                    if item.started or item.future.set_running_or_notify_cancel():
                        item.started = True
                        out.append(item)
                else:
                    keep.append((tid, item))
            s.pending = keep
        return out

    def requeue_by_value(self, item: _Item) -> BaseException | None:
        """Queue again, first, a task whose function went by reference and now goes by
        value (its future runs already); the router's thread, without the lock, since
        this pickles its arguments.  The error when it does not pickle by value: the
        router then sends the task on, or fails it."""
        assert item.call is not None
        try:
            payload, pins, keep = _payload(*item.call, by_value=True)
        except BaseException as exc:  # noqa: BLE001 - it does not pickle by value (Ctrl-C: the router raises it)
            return exc
        item.drop()
        item.payload, item.pins, item.keep, item.by_value = payload, pins, keep, True
        s = self.schedule
        with s.lock:  # at the front, as it was
            broken = s.broken is not None
            if not broken:
                s.lease.renew()
                tid = next(s.tids)
                item.future._tid = tid
                s.pending.appendleft((tid, item))
        if broken:
            s.fail([item.future])
        else:
            self.seat_freed()  # the worker whose batch it left went idle
        return None

    # ------------------------------------------------------------ what the seats ask

    def wants_seat(self) -> bool:
        """Tasks wait here for a seat (read without the lock: a hint; the thread that
        gives a seat back, of either side)."""
        return bool(self.schedule.pending) and bool(self.schedule.idle)

    def seat_freed(self) -> bool:
        """A seat was freed (by the process side, see ``Seats``: one of its threads), or
        tasks were queued again with no worker woken for them (the router's thread):
        hand waiting tasks to idle workers; whether one took a batch (and so a seat)."""
        s = self.schedule
        wakes: list[tuple[_WorkerHandle, bytes]] = []
        with s.lock:
            while s.pending and s.idle and s.broken is None:
                worker = s.idle.pop()
                batch = s.next_for(worker)
                if batch is None:
                    break  # no seat: it went back to idle
                wakes.append((worker, batch))
        for worker, batch in wakes:
            worker.wake(batch)
        s.flush()
        return bool(wakes)

    # ------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Take no new task; with ``cancel_futures``, cancel the queued ones; with
        ``wait``, wait until every worker but the abandoned ones has ended (a caller; the
        executor's finalizer, on any thread; the main thread at the program's end)."""
        s = self.schedule
        cancelled: list[InterpreterFuture] = []
        with s.lock:
            s.shutting_down = True
            if cancel_futures:
                cancelled = [item.future for _, item in s.pending]
                s.pending.clear()
                for worker in s.workers.values():
                    # Tasks handed over in a batch but not started yet are revoked too.
                    last = worker.last_started()
                    cancelled += [s.running[t].future for t in worker.tids if t > last and t in s.running]
            s.retire_idle()
            # Busy and starting workers get the stop message when they next ask for work.
            s.release_if_done()
        s.flush()
        for future in cancelled:
            future.cancel()
        if wait:
            # Until no worker is left but abandoned ones: a worker that retires
            # (max_tasks_per_worker) or is abandoned may start a replacement meanwhile.
            me = threading.current_thread()
            with s.lock:
                while any(w.state != WorkerState.ABANDONED and w.thread is not me for w in s.workers.values()):
                    main_wait(s.changed)
                threads = list(s.ended)
                s.ended.clear()
            for thread in threads:
                if thread is not me:
                    thread.join()  # each has left its loop: this is only its last steps
            s.deadlines.join()  # once the process side released its lease too

    def in_flight(self) -> int:
        """How many tasks are pending or running (any thread)."""
        with self.schedule.lock:
            return len(self.schedule.pending) + len(self.schedule.running)

    def join_abandoned(self, timeout: float) -> list[_WorkerHandle]:
        """Wait up to ``timeout`` for abandoned workers to come back from C; those that
        still run (main thread; Ctrl-C raises ``KeyboardInterrupt`` here)."""
        deadline = time.monotonic() + timeout
        with self.schedule.lock:
            left = [w for w in self.schedule.workers.values() if w.state == WorkerState.ABANDONED]
        stuck = []
        for worker in left:
            while not worker.gone.is_set() and (rest := deadline - time.monotonic()) > 0:
                worker.gone.wait(min(rest, 0.1))  # a Ctrl-C is seen within 0.1 s
            if not worker.gone.is_set():
                stuck.append(worker)
        return stuck

    def cancel_all(self) -> None:
        """Cancel every task of this side, pending or running (Ctrl-C while a ``with``
        block or the program's end waits; the facade cancels the other side's)."""
        s = self.schedule
        with s.lock:
            futures = [item.future for _, item in s.pending] + [item.future for item in s.running.values()]
        for future in futures:
            future.cancel()
