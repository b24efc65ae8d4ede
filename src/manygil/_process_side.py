"""Where a pool's task goes when it cannot run in an own-GIL interpreter.

A worker loads a task (its function and arguments) before running any of it.  When that
load needs an extension module that refuses an interpreter with its own GIL (CPython's
"does not support loading in subinterpreters", also when a package such as numpy wraps
it), the worker reports ``REFUSED`` instead of running anything.  The pool then runs the
task here, and sends later calls of the same function straight here::

    submit(fn) ─► interpreter worker ─► load fails: numpy refuses ─► REFUSED
                                                                     │
       future ◄── result ◄── process worker (ProcessPoolExecutor) ◄──┘ + routes[fn]

The process side is the standard library's ``ProcessPoolExecutor``, started on the first
fallback (a program that never falls back starts no process), with the pool's
``initializer``, ``initargs`` and ``max_tasks_per_worker``.  It uses ``forkserver`` where
there is one, else ``spawn``: never ``fork``, which CPython cannot do in a process that
runs interpreters.  ``fallback="shared-gil"`` uses a pool of interpreters that share the
main GIL instead (``_shared_side``: no process; one GIL for those tasks).
"""

from __future__ import annotations

import functools
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from . import _backend, _exit, _faults, _transport
from ._cpython import (
    PENDING,
    RUNNING,
    fixed_process_pool_class,
    hold_while_managed,
    manager_thread,
    program_ending,
    terminate_processes,
)
from ._deadlines import Deadlines
from ._futures import settle
from ._seats import Seats
from ._waits import main_wait

__all__ = ("ProcessSide", "start_method")


class ProcessSide:
    """The process side of one ``InterpreterPoolExecutor``, as the router and the
    executor see it: where the router sends the tasks that cannot run in the pool's
    own-GIL interpreters (``run``), on process workers that take the seats they share
    with the interpreters; ``cancel_all``, ``shutdown``.

    One single-process ``ProcessPoolExecutor`` per slot, at most ``max_workers`` slots,
    so that stopping one running task (a time limit, ``cancel()``) terminates its process
    alone and no other task is lost.  Its parts, one per kind of thread:

    - the books (``_Books``): the queue, the tasks, the slots; ``books.lock`` guards every
      field of the side;
    - the pump (``_Pump``): starts queued tasks on free slots and seats, on the thread
      that queued a task or freed a slot, and on the dispatcher thread when an
      interpreter worker frees a seat;
    - the processes (``_Processes``): a slot's life, from its process started by the
      warm-up thread to its retirement after shutdown.

    Threads: the router calls ``run`` (a caller's thread, or an interpreter worker's in
    ``call_home``); the warm-up thread runs ``_warm_up``; each slot's
    ``ProcessPoolExecutor`` manager thread reports its process ready (``_slot_ready``)
    and a task's end (``_ProcessTask._done``, then ``task_left``); the pool's watchdog
    thread (``Deadlines``, shared with the interpreter side) ends tasks past their time
    limit.  Lock order: the pool's lock, then ``books.lock``, then ``Seats.lock`` or
    ``Deadlines.lock``."""

    kind = "process"

    def __init__(
        self,
        max_workers: int,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks_per_worker: int | None,
        forward_output: bool = True,
        seats: Seats | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        starter = _Starter(initializer, initargs, max_tasks_per_worker, forward_output)
        # The pool's time limits, shared with its interpreter side: the watchdog thread.
        deadlines = deadlines if deadlines is not None else Deadlines("manygil-fallback-")
        self.books = _Books(max_workers, starter, seats, deadlines)
        self.processes = _Processes(self.books)
        self.pump = _Pump(self.books, self.processes)
        # The books start the dispatcher thread (see _Books.put_back) on the pump's
        # dispatch, held weakly: the books keep no pump (and the dispatcher thread no
        # side); a task keeps its side while it is queued or runs.
        self.books.dispatch_target = weakref.WeakMethod(self.pump.dispatch)
        if seats is not None:
            seats.attach("process", self.books.wants_seat, self.books.seat_freed)

    @property
    def starter(self) -> _Starter:
        return self.books.starter

    def run(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        label: str = "",
    ) -> None:
        """Run ``fn(*args, **kwargs)`` on this side and settle ``future`` (running) with its
        outcome, within ``timeout`` seconds; ``future.cancel()`` stops it even while it runs.

        A task the interpreters refused while the pool shuts down still runs here: it was
        submitted before the shutdown (``submit`` refuses new ones itself).

        Raises:
            NotShareableError: an argument is a manygil shared object (process side).
        """
        _exit.run_first()  # concurrent.futures.process may have been imported since
        kept: list[Any] = []  # shared buffers the process maps: alive until the task ends
        data = _dump_call(fn, args, kwargs, kept)
        task = _ProcessTask(self, future, data, timeout, label or _transport.route_key(fn))
        task.kept = kept
        future._fallback = task  # type: ignore[attr-defined]
        future.add_done_callback(_forget_task)
        books = self.books
        with books.lock:
            books.pending.append(task)
            books.lease.renew()
            try:
                # Both now: at exit 3.12 starts no thread, and a task may start then.
                books.ensure_dispatcher()
                books.deadlines.start()
                if not books.warmed and not books.closed and books.cannot_start is None:
                    books.warmed = True
                    reserved = books.max_workers - books.slots
                    books.slots += reserved  # the pump waits for them, starts none
                    # Its own thread: starting the first process takes 100-300 ms (the
                    # forkserver imports the caller's script), and the thread that got
                    # here is often an interpreter worker's, whose tasks would wait.
                    warmer = threading.Thread(
                        target=self._warm_up, args=(reserved,), name="manygil-fallback-warm-up", daemon=True
                    )
                    try:
                        warmer.start()
                    except RuntimeError:
                        books.slots -= reserved
                        raise
                    books.warmer = warmer
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                if not program_ending():
                    books.pending.remove(task)  # another cause (no memory left): said as it is
                    raise
                # CPython 3.12, once the program's end has begun: no process worker can
                # start (each needs its manager thread), so this task and those after
                # it each run in a process of its own, on this thread (_Starter.run_alone).
                books.threadless = True
        self.pump.run()

    def _warm_up(self, count: int) -> None:
        """The warm-up thread: start the processes of ``count`` reserved slots, then pump
        (the reserved slots that did not start are free for the pump)."""
        self.processes.warm_up(count, self._slot_ready)
        self.pump.run()

    def _slot_ready(self, slot: _Slot, done: Future[Any]) -> None:
        """A slot's process started, or could not (its manager thread, or the warm-up
        thread when it was ready at once): it takes tasks from now on."""
        self.processes.ready(slot, done)
        self.pump.run()

    def task_left(self, task: _ProcessTask, not_started: bool, broken: bool) -> bool:
        """``task``'s process is done with it (its slot's manager thread, see
        ``_Books.left``): its seat passed on, the queue pumped.  Returns whether the task
        waits again, never having started."""
        seat, again = self.books.left(task, not_started, broken)
        if seat:
            self.books.give_seat()
        self.pump.run()
        return again

    def in_flight(self) -> int:
        """How many process tasks are pending, starting or running (any thread)."""
        books = self.books
        with books.lock:
            return len(books.pending) + len(books.launching) + len(books.running)

    def cancel_all(self) -> None:
        """Cancel every task of this side, running ones included (Ctrl-C in a ``with``)."""
        books = self.books
        with books.lock:
            tasks = [*books.pending, *books.launching, *books.running]
        for task in tasks:
            task.future.cancel()  # a running one's process is terminated

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """The executor's ``shutdown`` (a caller's thread, or the program's end)."""
        books = self.books
        with books.lock:
            books.closed = True
            if cancel_futures:
                waiting, books.pending = list(books.pending), deque()
            else:
                waiting = []
            books.release_if_done()
            books.wake.notify_all()
        for task in waiting:
            task.future.cancel()
        if wait:
            if books.threadless:
                self.pump.run()  # no dispatcher thread could start: the tasks left run here
            with books.lock:
                while books.pending or books.launching or books.running:
                    main_wait(books.wake)
        with books.lock:
            slots, books.dead = books.dead, []
            # Tasks still queued here (shutdown(wait=False)) run on the idle and starting
            # slots, which end once nothing is left (_Processes.retire_if_closed); else
            # they end now.
            if not books.pending and not books.launching:
                # Slots still starting too: shutdown(wait=True) waits for their processes
                # (one that started after shutdown on a busy machine outlived the pool).
                slots += books.idle + list(books.starting)
                books.slots -= len(books.idle) + len(books.starting)
                books.retired.update(books.starting)  # ready later: not taken back (_Processes.ready)
                books.idle = []
                books.starting.clear()
            threads = [t for t in (books.dispatcher, books.warmer) if t is not None]
            books.release_if_done()
        for slot in slots:
            slot.shut(wait)
        if wait:
            me = threading.current_thread()
            for slot in slots:
                # One shut down without waiting before (here, by retire_if_closed or
                # _ProcessTask.stop) is forgotten by its ProcessPoolExecutor: wait for its
                # manager thread, which ends once its process has.
                manager = slot.manager
                if manager is not None and manager is not me and manager.ident is not None:
                    manager.join()
            for thread in threads:
                thread.join()
        else:
            with books.lock:
                books.dead.extend(slots)  # a later shutdown(wait=True) waits for them
        if wait:
            books.deadlines.join()  # once the interpreter side released its lease too


class _Books:
    """The process side's books: its queue, the tasks starting and running, its slots
    and their processes' states, what stops a process from starting, its threads.

    ``lock`` guards every field; ``wake``, its condition, tells ``shutdown`` and the
    dispatcher that something changed.  A method says when it runs with the lock held,
    on the thread that holds it: a caller's, an interpreter worker's in ``call_home``,
    the dispatcher's, the warm-up thread's or a slot's manager thread.  The seats' and
    the deadlines' locks are taken inside it, never the other way."""

    def __init__(self, max_workers: int, starter: _Starter, seats: Seats | None, deadlines: Deadlines) -> None:
        self.max_workers = max_workers
        self.starter = starter  # how its processes are made: set once, read by any thread
        # Re-entrant: the executor's finalizer calls shutdown(wait=False), and a garbage
        # collection can run it on any thread at any allocation, including one that holds
        # this lock (as on the interpreter side, see _interp_side._Schedule).
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.closed = False
        self.pending: deque[_ProcessTask] = deque()  # the process side's queue
        self.running: set[_ProcessTask] = set()
        # Taken from pending by a pump that is starting it (lock released meanwhile): its
        # process may run it before start() files it in running, and Ctrl-C must find it.
        self.launching: set[_ProcessTask] = set()
        self.idle: list[_Slot] = []  # free slots
        self.slots = 0
        self.dead: list[_Slot] = []  # terminated slots, to join at shutdown
        self.starting: set[_Slot] = set()  # slots whose process is starting (warm-up)
        self.retired: set[_Slot] = set()  # slots shut down while they were starting
        self.deadlines = deadlines
        self.lease = deadlines.lease()  # released once no deadline will come from here
        self.dispatcher: threading.Thread | None = None  # starts tasks a freed seat lets run
        self.warmer: threading.Thread | None = None  # starts the processes (_Processes.warm_up)
        # What the dispatcher thread runs (the pump's dispatch): a weak reference the
        # side sets (see ProcessSide).
        self.dispatch_target: Callable[[], Callable[[], None] | None] = _gone
        # The seats both sides share (process side only: a shared-GIL side's tasks take
        # turns on one GIL anyway); seat_free asks the dispatcher to start tasks here.
        self.seats = seats
        self.seat_free = False
        # No process worker can start (a script without the main guard, a failing
        # initializer): once one fails before it could take a task, later tasks fail at
        # once instead of each starting a process that fails the same way.
        self.cannot_start: BaseException | None = None
        self.warmed = False  # the first process task starts every slot's process at once
        self.threadless = False  # no thread starts now (3.12, the program's end): _Starter.run_alone

    def free(self) -> bool:
        """A slot is free, or another may be made (lock held, or read as a hint)."""
        return bool(self.idle) or self.slots < self.max_workers

    def wants_seat(self) -> bool:
        """Process tasks wait for a seat and a process is ready for one (read without
        the lock: a hint): in the queue, or behind a running task in its process (which
        a free seat lets move, see ``_Pump.move_one``).  While the processes start, the
        interpreters keep the seats."""
        return self.free() and (bool(self.pending) or self.queued_behind() is not None)

    def queued_behind(self) -> _ProcessTask | None:
        """A task submitted to a live slot behind the one its process runs (a hint
        without the lock)."""
        for ahead in list(self.running):
            slot = ahead.slot
            tasks = list(slot.tasks) if slot is not None and not slot.ended else []
            if len(tasks) == 2 and tasks[1].inner is not None:
                return tasks[1]
        return None

    def seat_freed(self) -> bool:
        """A seat was freed on the interpreter side: start what waits here, from the
        dispatcher thread (``Seats.give`` calls this with the pool's lock held); whether
        a task waits here to take it."""
        with self.lock:
            if self.pending or self.queued_behind() is not None:
                self.seat_free = True
                self.wake.notify_all()
                return True
        return False

    def behind(self, task: _ProcessTask) -> _Slot | None:
        """A slot whose process runs one task, for ``task`` to wait in, so that the
        process starts it as soon as that one ends (a hand-over through this process
        left it idle for about half a millisecond per task), or None (lock held).

        Not for a task with a time limit (its clock starts when it starts) nor with
        ``max_tasks_per_worker`` (the process may leave after its task); not when this
        side holds more than its share of the seats while interpreter tasks wait for one.
        Stopping the task in front never loses the one behind: see ``_ProcessTask.stop``."""
        if task.timeout is not None or self.starter.max_tasks is not None:
            return None
        if self.seats is not None and self.seats.others_wait("process"):
            return None
        for ahead in self.running:
            slot = ahead.slot
            if (
                slot is not None
                and not slot.ended
                and len(slot.tasks) == 1
                and slot.tasks[0] is ahead
                and ahead.inner is not None  # submitted: the process gets them in order
                and not ahead.stopped
            ):
                return slot
        return None

    def put_back(self, task: _ProcessTask) -> None:
        """``task`` never started: a copy of it waits first in the queue, for any slot
        (lock held).  The copy is what the future's ``cancel()`` stops from now on."""
        again = _ProcessTask(task.side, task.future, task.data, task.timeout, task.label)
        again.kept = task.kept
        task.future._fallback = again  # type: ignore[attr-defined]
        if task.future.done():  # settled meanwhile: forgotten (_forget_task), whatever the order
            task.future._fallback = None  # type: ignore[attr-defined]
        self.running.discard(task)
        self.pending.appendleft(again)
        self.ensure_dispatcher()  # which ends once nothing waits after shutdown

    def count_off(self, slot: _Slot) -> None:
        """``slot`` takes no task any more: off ``self.slots``, once (lock held)."""
        if not slot.counted_off:
            slot.counted_off = True
            self.slots -= 1
            self.dead.append(slot)  # joined by shutdown()

    def left(self, task: _ProcessTask, not_started: bool, broken: bool) -> tuple[bool, bool]:
        """``task``'s process is done with it (its slot's manager thread): its slot
        takes the next task (the one queued behind it, on its seat) or goes idle, or,
        broken or terminated, is counted off; a task that never started waits again.
        Returns whether the caller gives its seat back, and whether it waits again."""
        slot = task.slot
        assert slot is not None  # started on it
        with self.lock:
            task.finished = True
            if task in slot.tasks:
                slot.tasks.remove(task)
            if broken or task.killed:
                slot.ended = True
            if slot.ended:
                self.count_off(slot)
            seat = task.seat
            if not slot.ended:
                if slot.tasks:
                    if seat:
                        slot.tasks[0].seat, seat = True, False  # its process starts it now
                else:
                    self.idle.append(slot)
            again = (
                not_started
                and not task.stopped
                and task.timeout is None
                and self.cannot_start is None
                and not task.future.done()
            )
            if again:  # never ran: it goes first once a slot is free
                self.put_back(task)
        return seat, again

    def give_seat(self) -> None:
        """A process task left its seat (lock not held: ``Seats.give`` may wake the
        interpreter side): to the next task here while this side is within its fair
        share (see ``Seats``), else to an interpreter worker whose tasks wait."""
        if self.seats is None:
            return
        # Kept for the next task here, which the caller's pump starts on it.
        self.seats.give("process", keep=bool(self.pending) and not self.seats.above_share("process"))

    def release_if_done(self) -> None:
        """Once the pool shuts down and every task here has started, no deadline will
        come from here: the watchdog may end (lock held)."""
        self.lease.release_if(self.closed and not self.pending and not self.launching)

    def ensure_dispatcher(self) -> None:
        """Start the dispatcher thread if it is not running (lock held)."""
        if self.dispatcher is None or not self.dispatcher.is_alive():
            run = self.dispatch_target()
            if run is None:  # unreachable: the side's callers hold it
                raise ReferenceError("manygil: the process side is gone (a bug: please report it)")
            thread = threading.Thread(target=run, name="manygil-fallback-dispatcher", daemon=True)
            thread.start()  # first: shutdown() joins it (3.12 starts none at the program's end)
            self.dispatcher = thread


def _forget_task(future: Future[Any]) -> None:
    """A process task's future is settled: it keeps its task, and so its side, no more
    (``InterpreterFuture.cancel`` reads it before the callbacks run)."""
    future._fallback = None  # type: ignore[attr-defined]


def _gone() -> None:
    """What a weak reference to a side's part returns before it is set."""
    return None


class _Pump:
    """Starts the process side's queued tasks on free slots and seats (``run``): on the
    thread that queued a task or freed a slot (a caller's, an interpreter worker's, a
    slot's manager thread, the warm-up thread), and on the dispatcher thread
    (``dispatch``) when an interpreter worker frees a seat.  Several threads may pump at
    once: each takes a task from the queue under ``books.lock`` and starts it with the
    lock let go (``_Processes.launch``)."""

    def __init__(self, books: _Books, processes: _Processes) -> None:
        self.books = books
        self.processes = processes

    def run(self) -> None:
        """Start pending process tasks on free slots and seats, or queue the next one
        behind a running task (``_Books.behind``)."""
        books = self.books
        while True:
            with books.lock:
                task = None
                while books.pending and task is None:
                    task = books.pending.popleft()
                    if task.future.done():  # cancelled while it waited
                        task = None
                if task is None:
                    books.release_if_done()  # the queue emptied of cancelled tasks
                    books.wake.notify_all()  # shutdown() may wait for the queue to empty
                    break
                cause = books.cannot_start
                slot = None
                if cause is None:
                    # Without threads (3.12 at the program's end) no seat is kept: its
                    # holder could not wake this side; the interpreters are ending anyway.
                    if books.free() and (books.seats is None or books.threadless or books.seats.take("process")):
                        if books.idle:
                            slot = books.idle.pop()
                            slot.queue(task)
                            if books.threadless:
                                task.seat = False  # none was taken: none to give back
                        else:
                            books.slots += 1  # launch makes it
                    else:
                        _faults.point("process.no_seat", books, task)
                        slot = books.behind(task)
                        if slot is None:
                            books.pending.appendleft(task)  # a seat's holder wakes this side when it leaves
                            return
                        task.seat = False  # it takes the seat of the task it waits behind
                        slot.queue(task)
                books.launching.add(task)
            try:
                self.processes.launch(task, slot, cause)
            finally:
                with books.lock:
                    books.launching.discard(task)
                    books.release_if_done()
                    books.wake.notify_all()  # shutdown() may wait for it
        if self.move_one():
            self.run()  # it waits at the front now
            return
        self.processes.retire_if_closed()
        # Nothing (left) to start here: a seat handed over for a task that was cancelled
        # meanwhile goes back to the pool's waiting tasks.
        if books.seats is not None:
            books.seats.nudge("process")

    def move_one(self) -> bool:
        """A slot and a seat are free and nothing waits: take back a task queued behind
        a running one that has not started (it would wait for that one however long it
        runs; a ``ProcessPoolExecutor``'s queue is shared by its processes) and put it
        first in the queue.  Returns whether one was moved."""
        books = self.books
        with books.lock:
            if books.pending or books.seats is None or not books.free():
                return False
            if books.seats.full():
                return False  # a hint: the pump takes a seat itself
            behind = books.queued_behind()
        if behind is None:
            return False
        slot = behind.slot
        assert slot is not None  # a task queued behind another is on its slot
        lock = slot.gate.get_lock()
        if not lock.acquire(timeout=1.0):
            return False
        try:
            gate = slot.gate.get_obj()
            with books.lock:
                if behind.slot is not slot or behind.stopped or behind.finished or gate[_STARTED] >= behind.seq:
                    return False  # it started (or ended) meanwhile
                _skip(gate, behind.seq)  # its process turns it away
                behind.moved = True
                slot.tasks.remove(behind)
                seat, behind.seat = behind.seat, False
                if seat and not slot.ended and not slot.tasks:
                    books.idle.append(slot)  # the task in front had ended and passed its seat on
                books.put_back(behind)
        finally:
            lock.release()
        if seat:
            books.give_seat()
        return True

    def dispatch(self) -> None:
        """The dispatcher thread: starts the tasks that waited for a seat when an
        interpreter worker frees one (``_Books.seat_freed``)."""
        books = self.books
        while True:
            with books.lock:
                while not books.seat_free:
                    if books.closed and not books.pending:
                        return  # shut down: no task left to start
                    books.wake.wait()
                books.seat_free = False
            self.run()


class _Processes:
    """The slots' life: their processes started ahead of the tasks (``warm_up``, the
    warm-up thread; ``ready``, a slot's manager thread), a task started on a slot or a
    new one (``launch``, a pumping thread) or failing to start (``failed_start``), and
    the idle ones ended after shutdown (``retire_if_closed``)."""

    def __init__(self, books: _Books) -> None:
        self.books = books

    def warm_up(self, count: int, on_ready: Callable[[_Slot, Future[Any]], None]) -> None:
        """Start the processes of ``count`` reserved slots now, without a seat (starting
        one takes a few hundred milliseconds, during which a seat would stand idle); each
        slot takes tasks once its process is ready (``on_ready``, then ``ready``)."""
        books = self.books
        for left in range(count, 0, -1):
            slot = None
            try:
                slot = books.starter.new_slot()  # no process yet: that starts with the submit below
                with books.lock:
                    # Shut down meanwhile, or no process can start: start none of the rest.
                    stop = books.closed or books.cannot_start is not None
                    if stop:
                        books.slots -= left  # not started: the pump may start them itself
                    else:
                        books.starting.add(slot)  # shut down with the others, even if still starting
                if stop:
                    break
                _faults.point("process.slot_starting", books, slot)
                ready = slot.submit(_ready)
            except BaseException as exc:  # noqa: BLE001 - no process can start: the pump says so
                with books.lock:
                    if slot is not None and slot in books.retired:
                        # shutdown() shut it down first (the submit's error) and counted it
                        books.retired.discard(slot)
                        books.slots -= left - 1
                    else:
                        books.slots -= left
                        books.cannot_start = _bare(exc)
                        if slot is not None:
                            books.starting.discard(slot)
                            books.dead.append(slot)  # joined by shutdown()
                break
            ready.add_done_callback(functools.partial(on_ready, slot))

    def ready(self, slot: _Slot, done: Future[Any]) -> None:
        """A slot's process started (or could not): it takes tasks from now on."""
        BrokenProcessPool = _exit.process_module().BrokenProcessPool

        books = self.books
        failed = done.cancelled() or done.exception() is not None
        with books.lock:
            books.starting.discard(slot)
            if slot in books.retired:
                books.retired.discard(slot)
                return  # shut down by shutdown() meanwhile
            if failed:
                books.slots -= 1
                books.dead.append(slot)  # joined by shutdown()
                exc = None if done.cancelled() else done.exception()
                if isinstance(exc, BrokenProcessPool) and not slot.alive.value:
                    books.cannot_start = _bare(exc)  # it died starting up
            else:
                books.idle.append(slot)

    def launch(self, task: _ProcessTask, slot: _Slot | None, cause: BaseException | None) -> None:
        """Start ``task`` on ``slot`` (a new one if None), or fail it with ``cause``."""
        books = self.books
        if cause is not None:
            settle(task.future, exc=_cannot_start(cause))
            return
        if slot is None and not books.threadless and not _backend.STARTS_THREADS_AT_EXIT and program_ending():
            books.threadless = True  # a new slot's manager thread could not start
        if books.threadless and slot is None:
            with books.lock:
                books.slots -= 1  # the one the pump counted for it
            if task.seat:
                books.give_seat()  # none is kept now: the interpreters' tasks may need it
            books.starter.run_alone(task)
            return
        try:
            if slot is None:
                slot = books.starter.new_slot()
                with books.lock:
                    slot.queue(task)
            task.start(slot)
        except RuntimeError as exc:  # 3.12 at the program's end: no thread
            if not program_ending():
                self.failed_start(task, slot, exc)
                return
            # Its slot's manager thread could not start (the processes may have): it takes
            # no task, and this one and those after it run each in a process of its own.
            with books.lock:
                books.threadless = True
                if slot is not None:
                    if task in slot.tasks:
                        slot.tasks.remove(task)
                    slot.ended = True
                    books.count_off(slot)
                else:
                    books.slots -= 1  # the one the pump counted for it
            if slot is not None:
                slot.terminate()
            if task.seat:
                books.give_seat()  # none is kept now: the interpreters' tasks may need it
            books.starter.run_alone(task)
        except BaseException as exc:  # noqa: BLE001 - e.g. no process can start
            self.failed_start(task, slot, exc)

    def failed_start(self, task: _ProcessTask, slot: _Slot | None, exc: BaseException) -> None:
        """``task`` did not start on ``slot`` (None: a new one) for ``exc``: it waits for
        another slot, or fails with ``exc`` when no process can start (see ``launch``)."""
        books = self.books
        with books.lock:
            if slot is not None and task in slot.tasks:
                slot.tasks.remove(task)
            # Its process had started and ended since (terminated by a stop() of the
            # task in front, or it died): not a process that cannot start.  The task
            # never ran and waits for another slot; the slot is counted off by the
            # end of a task still on it, else here.
            again = slot is not None and (not task.seat or bool(slot.alive.value))
            if again:
                assert slot is not None
                slot.ended = True
                if not slot.tasks:
                    books.count_off(slot)
                books.put_back(task)
            elif slot is None:
                books.slots -= 1  # the one the pump counted for it
            else:
                slot.ended = True
                books.count_off(slot)
            if not again:
                books.cannot_start = _bare(exc)
        if again:
            if task.seat:
                books.give_seat()
            return
        books.give_seat()
        settle(task.future, exc=exc)

    def retire_if_closed(self) -> None:
        """Once the pool is shut down and no task is left here, end the idle processes,
        as a ``ProcessPoolExecutor`` does after ``shutdown(wait=False)`` (a slot whose
        task ran on after that call was put back idle, and its process lived on)."""
        books = self.books
        with books.lock:
            if not books.closed or books.pending or books.launching or not books.idle:
                return
            slots, books.idle = books.idle, []
            books.slots -= len(slots)
            books.dead.extend(slots)  # joined by shutdown(wait=True)
        for slot in slots:
            slot.shut(wait=False)


class _ProcessTask:
    """One call on the process side: the running future's handle for cancel()."""

    def __init__(self, side: ProcessSide, future: Future[Any], data: bytes, timeout: float | None, label: str) -> None:
        self.side = side
        self.future = future
        self.data = data
        self.timeout = timeout
        self.deadline = 0.0
        self.label = label
        self.slot: _Slot | None = None  # set as it starts: from then on stop() stops it
        self.inner: Future[Any] | None = None
        self.seq = 0  # its number among its slot's tasks (the gate's, see stop())
        self.seat = True  # it holds a seat; one queued behind another takes that one's
        self.stopped = False  # stop() stopped it: its outcome is not its future's
        self.killed = False  # stop() terminated its process
        self.finished = False  # its process is done with it: stop() must not terminate it
        self.moved = False  # taken back from its slot before it started (_Pump.move_one)
        self.kept: list[Any] = []

    def start(self, slot: _Slot) -> None:
        """Hand it to ``slot``'s process (a pumping thread, no lock held)."""
        # submit() raises when no process can start (e.g. the forkserver died): then
        # nothing is registered, and the pump fails the task.
        books = self.side.books
        _faults.point("process.task_starting", self, books, slot)
        inner = slot.submit(_call_gated, self.data, books.starter.forward, self.seq)
        with books.lock:
            self.slot, self.inner = slot, inner  # from now on stop() stops it
            books.running.add(self)
        if self.future.done():  # cancelled (or failed) while it was being started
            self.stop()
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout
            books.deadlines.add(self.deadline, self.expire, self.unsettled)
        inner.add_done_callback(self._done)

    def _done(self, inner: Future[Any]) -> None:
        """Its process is done with it (its slot's manager thread, no lock held)."""
        _faults.point("process.task_done", self, inner)
        if self.moved:
            self.inner = None  # see below
            return  # its process turned it away; it runs as another _ProcessTask
        side, books, slot = self.side, self.side.books, self.slot
        assert slot is not None  # set by start()
        # A slot whose process died is broken: never reused.  (This runs on its
        # management thread, which then holds the slot's lock: a submit to it here
        # would wait forever.)
        BrokenProcessPool = _exit.process_module().BrokenProcessPool  # loaded: a slot is one

        cancelled = inner.cancelled()  # terminated before its process got it
        exc = None if cancelled else inner.exception()
        broken = isinstance(exc, BrokenProcessPool)
        turned_away = not cancelled and exc is None and inner.result() is None  # by the gate
        # The process wrote each task's number as it started it, and is gone if broken.
        not_started = cancelled or turned_away or (broken and slot.gate.get_obj()[_STARTED] < self.seq)
        if broken and not self.stopped and not slot.alive.value:  # died starting up
            with books.lock:
                books.cannot_start = _bare(exc)  # type: ignore[arg-type]
        # The next task first, so that the process does not wait while this result loads.
        if side.task_left(self, not_started, broken):
            self.inner = None  # see below
            return  # it waits for another slot, as a copy of this task
        if turned_away and not self.stopped:
            settle(self.future, exc=BrokenProcessPool(
                f"manygil: the process worker of task {self.label} ended before the task started"))
        elif not self.stopped:
            _adopt(self.future, inner, forward=books.starter.forward, pickled=True)
        self.kept = []  # the result, which may name a kept buffer, is loaded
        with books.lock:
            books.running.discard(self)
            # inner's done-callbacks hold this task: no cycle keeps it (and its side) now
            self.inner = None
            books.release_if_done()
            books.wake.notify_all()

    def cancel(self) -> bool:
        """Stop it: not started yet, it never will; running, its process is terminated."""
        self.stop()
        return True

    def unsettled(self) -> bool:
        """Whether its future is not done yet: its time limit still matters (the
        watchdog thread, under ``Deadlines.lock``: the future's state is read without
        its lock, which a thread may hold while it waits for ``Deadlines.lock``)."""
        return self.future._state in (PENDING, RUNNING)

    def expire(self) -> None:
        """Its time limit passed (the watchdog thread, no lock held)."""
        _faults.point("process.expiring", self)
        if self.future.done():
            return
        settle(self.future, exc=TimeoutError(f"task {self.label} exceeded its time limit of {self.timeout:g} s"))
        self.stop()

    def stop(self) -> None:
        """Stop it without touching another task of its slot.

        A slot's process may have the next task queued behind this one, and finishes
        one and starts the next without this process in between.  So whether this
        task runs is decided at the gate, an array in memory both processes share,
        under its lock: the process writes each task's number there as it starts it
        (``_call_gated``) and turns away one marked skipped, or every one once the slot
        is closing.  Here, under the same lock: a task that started (and is not done)
        closes the slot and its process is terminated, so the next one cannot start
        and waits again for another slot; one that has not started is marked skipped
        and never runs; one its process finished needs nothing."""
        if self.slot is None:
            return  # not started: the pump skips it (its future is done)
        books = self.side.books
        with books.lock:
            if self.slot is None or self.stopped or self.finished:
                return  # finished: its slot may run the next task already
            self.stopped = True
            slot = self.slot
        lock = slot.gate.get_lock()
        # Held for a few instructions at a time; a process killed holding it (by the
        # system) gives it up never: then this terminates the process anyway.
        got = lock.acquire(timeout=1.0)
        kill = False
        try:
            gate = slot.gate.get_obj()
            if gate[_STARTED] == self.seq or not got:
                with books.lock:
                    if not self.finished:
                        kill = self.killed = slot.ended = True
                        gate[_CLOSING] = 1
            elif gate[_STARTED] < self.seq:
                _skip(gate, self.seq)
        finally:
            if got:
                lock.release()
        if kill:
            slot.terminate()


# The gate's cells (see _ProcessTask.stop).
_STARTED, _CLOSING, _SKIP = 0, 1, 2
_GATE: Any = None  # in a process worker: its slot's gate


def _skip(cells: Any, seq: int) -> None:
    """Mark task ``seq`` of a slot, not started, to be turned away (gate lock held).
    A slot has at most two tasks, numbered in turn: one cell each, by parity."""
    cells[_SKIP + seq % 2] = seq


def _call_gated(data: bytes, forward: bool, seq: int) -> Any:
    """Run task number ``seq`` of this process's slot, unless it was stopped before it
    started (then None, which no task's outcome is: ``_call_pickled`` returns bytes or a
    tuple)."""
    gate = _GATE
    with gate.get_lock():
        cells = gate.get_obj()
        if cells[_CLOSING] or cells[_SKIP + seq % 2] == seq:
            return None
        cells[_STARTED] = seq
    return _call_pickled(data, forward)


def _alone(data: bytes, forward: bool, init: bytes | None, writer: Any) -> None:
    """In the process of ``_Starter.run_alone``: the pool's initializer, the task, and
    its outcome sent back (an exception that does not pickle as a RuntimeError)."""
    try:
        if init is not None:
            fn, args, kwargs = pickle.loads(init)
            fn(*args, **kwargs)
        answer: tuple[bool, Any] = (True, _call_pickled(data, forward))
    except BaseException as exc:  # noqa: BLE001 - the task's own error, sent back
        answer = (False, exc)
    try:
        writer.send(answer)
    except Exception:  # noqa: BLE001 - it does not pickle
        writer.send((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
    writer.close()


def start_method() -> str:
    """``forkserver`` where there is one (Linux, macOS), else ``spawn`` (Windows): never
    ``fork``, whose child ends at once in a process that runs interpreters."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _broken_process_pool(why: str) -> BaseException:
    error: BaseException = _exit.process_module().BrokenProcessPool(f"manygil: a process task's worker failed: {why}")
    return error


def _ready() -> None:
    """The first call a slot's process runs: it is up, its initializer ran."""


def _slot_init(alive: Any, init: bytes | None, gate: Any) -> None:
    """A process worker's initializer: the pool's, then say it is ready."""
    global _GATE
    _GATE = gate
    if init is not None:
        _call_pickled(init, False)
    alive.value = 1


def _bare(exc: BaseException) -> BaseException:
    """``exc`` and its causes without tracebacks, to keep for later tasks' errors: their
    frames would keep the pool's side and the initargs alive."""
    done: set[int] = set()
    seen: BaseException | None = exc
    while seen is not None and id(seen) not in done:
        done.add(id(seen))
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return exc


def _cannot_start(cause: BaseException) -> BaseException:
    err: BaseException = _exit.process_module().BrokenProcessPool(
        "manygil: no process worker of this pool could start (the first "
        f"failure: {type(cause).__name__}: {cause}; see its message above), so this task did not run"
    )
    err.__cause__ = cause
    return err


class _Slot:
    """One process worker of the process side: a one-process ``ProcessPoolExecutor``
    (``pool``), so that stopping the task it runs (a time limit, ``cancel()``) ends that
    process alone, and what the side knows of it.

    ``tasks``, ``count``, ``ended``, ``counted_off`` are guarded by the side's lock
    (``_Books.lock``); ``gate`` by its own lock, shared with the process (see
    ``_ProcessTask.stop``); ``alive`` is written by the process once it is ready."""

    __slots__ = ("alive", "count", "counted_off", "ended", "gate", "manager", "pool", "tasks")

    def __init__(self, pool: Any, alive: Any, gate: Any) -> None:
        self.pool = pool
        self.alive = alive
        self.gate = gate
        self.tasks: deque[_ProcessTask] = deque()  # in the order its process gets them (at most 2)
        self.count = 0  # the number of the last of them
        self.ended = False  # terminated or broken: it takes no task any more
        self.counted_off = False  # counted off _Books.slots, in _Books.dead
        self.manager: threading.Thread | None = None  # its pool's manager thread, kept (see shut)

    def queue(self, task: _ProcessTask) -> None:
        """File ``task`` as the next of its tasks, numbered in their order (side's lock held)."""
        self.count += 1
        task.seq = self.count
        self.tasks.append(task)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = self.pool.submit(fn, *args)
        hold_while_managed(self.pool)  # see _cpython: never collected on its manager thread
        return future

    def shut(self, wait: bool, cancel_futures: bool = False) -> None:
        """``pool.shutdown()``, keeping its manager thread first (``manager``): a
        ``ProcessPoolExecutor`` shut down without waiting forgets that thread, and a later
        ``shutdown(wait=True)`` of it returns at once while its process may still run.  A
        manager thread that never started (3.12 at the program's end) is not waited for."""
        self._keep_manager()
        manager = manager_thread(self.pool)
        if manager is not None and manager.ident is None:
            wait = False  # joining it raises "cannot join thread before it is started"
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _keep_manager(self) -> None:
        manager = manager_thread(self.pool)
        if manager is not None:
            self.manager = manager

    def terminate(self) -> None:
        """End its process now, whatever it runs."""
        self._keep_manager()  # see shut
        terminate_processes(self.pool)


class _Starter:
    """How the process side's processes are made: a slot's single-process pool, or, on
    CPython 3.12 at the program's end (no thread starts then), one process for one task.
    Set once; any thread."""

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        forward: bool,
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.forward = forward

    def init(self) -> bytes | None:
        """The pool's initializer and its arguments, pickled for a process, or None."""
        if self.initializer is None:
            return None
        return _dump_call(self.initializer, self.initargs, {}, [], initializer=True)

    def new_slot(self) -> _Slot:
        """A slot: a single-process ``ProcessPoolExecutor`` whose process starts with its
        first submit (``_slot_init`` runs the pool's initializer there)."""
        import multiprocessing

        _faults.point("process.slot_making", self)
        method = start_method()
        extra: dict[str, Any] = {}
        if self.max_tasks is not None:
            extra["max_tasks_per_child"] = self.max_tasks
        init = self.init()  # kept by the pool
        context = multiprocessing.get_context(method)
        alive = context.Value("b", 0, lock=False)  # set once its process is ready for tasks
        gate = context.Array("q", 4)  # see _ProcessTask.stop; its lock is shared with the process
        pool = fixed_process_pool_class(_exit.process_module().ProcessPoolExecutor)(1, mp_context=context, initializer=_slot_init, initargs=(alive, init, gate), **extra)
        return _Slot(pool, alive, gate)

    def run_alone(self, task: _ProcessTask) -> None:
        """Run ``task`` in a process of its own and settle its future, on this thread
        (the caller's, at the program's end on CPython 3.12, which starts no thread then:
        a ``ProcessPoolExecutor`` needs one).  No time limit or ``cancel()`` reaches it."""
        import multiprocessing

        done: Future[Any] = Future()
        init = self.init()
        method = start_method()
        context = multiprocessing.get_context(method)
        process = None
        try:
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(  # type: ignore[attr-defined]
                target=_alone, args=(task.data, self.forward, init, writer), daemon=True
            )
            process.start()
            writer.close()
            try:
                ok, value = reader.recv()
            except EOFError:
                ok, value = False, _broken_process_pool("its process ended before it answered")
            finally:
                reader.close()
            process.join()
        except Exception as exc:  # noqa: BLE001 - no process could start
            ok, value = False, exc
        except BaseException:  # Ctrl-C: this task stops, and the program's end sees it
            if process is not None and process.is_alive():
                process.terminate()
                process.join()
            task.future.cancel()
            raise
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)
        _adopt(task.future, done, self.forward, pickled=True)


def _dump_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], kept: list[Any], initializer: bool = False
) -> bytes:
    """The call pickled for a process worker: functions of an interactive ``__main__`` by
    value (cloudpickle), since a process cannot import it; shared buffers as memory the
    process maps (appended to ``kept``); another manygil shared object inside raises
    ``NotShareableError`` naming it (and, for the pool's ``initializer``, saying so)."""

    from ._exceptions import NotShareableError
    from ._handles import dump_foreign

    # A process cannot import an interactive __main__: its functions go by value.
    by_value = _transport.has_cloudpickle() and _transport._interactive_main()

    def dump(obj: object) -> bytes:
        return _transport.dumps_by_value(obj) if by_value else pickle.dumps(obj, protocol=5)

    try:
        return dump_foreign(dump, (fn, args, kwargs), kept)
    except TypeError as exc:
        if "cannot reach a process worker" not in str(exc):
            raise
        culprit = _manygil_object((*args, *kwargs.values()))
        if initializer:
            raise NotShareableError(
                f"{culprit} in this pool's initargs cannot reach a process worker, where the tasks "
                f"of functions that need an extension refusing own-GIL interpreters run (the "
                f"initializer runs there too), and manygil's shared objects live in this process; "
                f"pass bytes or numpy arrays in initargs, or use InterpreterPoolExecutor(fallback=\"shared-gil\")"
            ) from exc
        raise NotShareableError(
            f"{culprit} cannot reach a process worker: {_transport.route_key(fn)} runs in one because an "
            f"extension module it needs refuses an own-GIL interpreter, and manygil's shared "
            f"objects live in this process; pass the data as bytes or a numpy array instead, "
            f"or use InterpreterPoolExecutor(fallback=\"shared-gil\")"
        ) from exc


def _manygil_object(values: tuple[Any, ...]) -> str:
    """The type name of the first manygil object that cannot reach a process (shared
    buffers can) in ``values``, or in a tuple, list or dict among them; for a message."""
    for value in values:
        inner = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
        for candidate in (value, *inner):
            kind = type(candidate)
            if kind.__module__.startswith("manygil") and kind.__name__ not in ("SharedBuffer", "SharedArray"):
                return kind.__name__
    return "an argument"


def _adopt(future: Future[Any], done: Future[Any], forward: bool = False, pickled: bool = False) -> None:
    """Give ``future`` the outcome of ``done`` (unless it was settled already); a process
    task's result is ``pickled`` (see ``_dump_result``)."""
    if future.done():
        return
    try:
        if done.cancelled():
            future.cancel()
            return
        exc = done.exception()
        if exc is not None:
            if forward:
                _write_output(getattr(exc, "__mg_output__", None))
            _chain_execution_failed(exc)
            future.set_exception(exc)
            return
        result = done.result()
        if forward:
            result, output = result
            _write_output(output)
        if pickled:
            try:
                result = pickle.loads(result)
            except Exception as exc:  # noqa: BLE001 - e.g. a class this process cannot import
                future.set_exception(exc)
                return
        future.set_result(result)
    except InvalidStateError:
        pass  # cancelled meanwhile


def _chain_execution_failed(exc: BaseException) -> None:
    """Chain a process task's exception to an ``ExecutionFailed`` with its traceback in
    the process, as the interpreters' tasks are (``ProcessPoolExecutor`` chains it to a
    private ``_RemoteTraceback``)."""
    cause = exc.__cause__
    text = getattr(cause, "tb", None)
    if type(cause).__name__ != "_RemoteTraceback" or not isinstance(text, str):
        return
    from ._excinfo import ExcInfo, ExcTypeInfo
    from ._exceptions import ExecutionFailed

    tp = type(exc)
    msg = str(exc)
    info = ExcInfo(
        ExcTypeInfo(tp.__name__, tp.__qualname__, tp.__module__),
        msg,
        f"{tp.__name__}: {msg}" if msg else tp.__name__,
        _without_our_frames(text.strip('"\n')) + "\n",
    )
    exc.__cause__ = ExecutionFailed(info)


def _without_our_frames(text: str) -> str:
    """A traceback's text without the frames of the process pool and of this module."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith("  File "):
            skipping = "concurrent/futures/process.py" in line or "manygil/_process_side.py" in line
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out)


def _write_output(output: tuple[str, str] | None) -> None:
    import sys

    if output:
        out, err = output
        if out:
            sys.stdout.write(out)
            sys.stdout.flush()
        if err:
            sys.stderr.write(err)
            sys.stderr.flush()



def _call_pickled(data: bytes, forward: bool) -> Any:
    """Run a pickled call in a process worker.  ``forward``: what it prints comes back
    with the result (or on the exception), for the caller's ``sys.stdout``/``sys.stderr``."""
    import io
    import sys

    from ._handles import dump_foreign

    fn, args, kwargs = pickle.loads(data)
    if not forward:
        return dump_foreign(_dump_result, fn(*args, **kwargs))
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        sys.stdout, sys.stderr = saved
        try:
            exc.__mg_output__ = (out.getvalue(), err.getvalue())  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an exception without a __dict__
            pass
        raise
    finally:
        sys.stdout, sys.stderr = saved
    return dump_foreign(_dump_result, result), (out.getvalue(), err.getvalue())


def _dump_result(result: Any) -> bytes:
    """A process task's result, pickled by the task (in the foreign mode: a shared buffer
    made there cannot leave) rather than by ``ProcessPoolExecutor``."""

    return pickle.dumps(result, protocol=5)
