"""The time limits of one pool's tasks, on both of its sides, and the one watchdog
thread that acts on them.

    side ── add(when, act, live) ──► heap ──► the watchdog thread, at ``when``:
                                             act() if live(), with no lock held

A side adds a deadline when a task gets a time limit (the interpreter side also when
it interrupts a task: the grace before its worker is abandoned).  ``live()`` says
whether the deadline still matters (its task has not ended); ``act()`` does what the
deadline means, taking its side's lock itself.  A deadline whose task ended is dropped
when its time comes, or as soon as every side has released the deadlines.

Threads: ``lease``, ``start``, ``start_or_say``, ``add``, ``join`` and a ``Lease``'s
methods run on any thread: a caller, a worker thread in ``call_home``, a side's own
threads, the garbage collector's finalizer (``join`` not on the watchdog thread, nor
with a lock held).  The
watchdog thread runs ``live`` and ``act``.

Locks: ``lock`` is a leaf, taken with a side's lock held (``add``, a ``Lease``'s
methods).  A
garbage collection may run a pool's finalizer (which takes the sides' locks) on any
thread at any allocation of a tracked object, so no such allocation happens while
``lock`` is held: were the watchdog to collect while it held ``lock``, a worker waiting
for ``lock`` with its side's lock held would deadlock it.  So the heap's entries are
built before ``lock`` is taken, the watchdog sleeps on ``wake`` (a bare lock used as a
one-slot semaphore, which it waits on holding nothing), and ``live`` reads its side's
fields without allocating and without their lock.

Lifetime: the thread starts with the first worker or task of either side (``start``:
CPython 3.12 starts no thread once the program ends, and a time limit may come then),
and ends once every side released its ``Lease`` (it shut down and its tasks have
started) and no live deadline is left.  A deadline added after that starts another.
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from ._cpython import LOGGER

__all__ = ("Deadlines", "Lease")

_LONGEST_WAIT = 86400.0  # seconds: a far deadline is waited for a day at a time (a lock's limit)

_Entry = tuple[float, int, Callable[[], None], Callable[[], bool]]


class Deadlines:
    """The deadlines of one pool, and their watchdog thread.

    ``lock`` guards every field but ``name``, ``order`` and ``wake`` (which it guards
    the release of, through ``woken``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.leases = 0  # sides that may still add deadlines (Lease)
        # Re-entrant all the same, should a collection come (see the module's docstring).
        self.lock = _thread.RLock()
        # A one-slot semaphore: released (once, ``woken``) when the watchdog has
        # something to see.  Only a thread that finds ``woken`` false releases it, so a
        # lock handed over to the waiting watchdog is never released by another.
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.woken = False
        self.heap: list[_Entry] = []
        self.order = itertools.count()  # ties keep the order deadlines came in
        self.thread: threading.Thread | None = None  # the watchdog, once it is started
        self.ended: threading.Thread | None = None  # the last watchdog, once it ended
        self.unstarted = False  # it could not start (start_or_say): said once

    def lease(self) -> Lease:
        """A side's use of these deadlines (before its first task): the thread ends
        only once every side released its lease."""
        with self.lock:
            self.leases += 1
        return Lease(self)

    def start(self) -> None:
        """Start the watchdog thread if it is not running (any thread).

        Raises:
            RuntimeError: no thread can start now (CPython 3.12 once the program ends).
        """
        if self.thread is not None:
            return  # a hint read without the lock, checked again under it
        thread = threading.Thread(target=self._watch, name=f"{self.name}watchdog", daemon=True)
        with self.lock:
            if self.thread is not None:
                return
            self.thread = thread
        try:
            thread.start()
        except BaseException:
            with self.lock:
                if self.thread is thread:
                    self.thread = None
            raise

    def add(self, when: float, act: Callable[[], None], live: Callable[[], bool]) -> None:
        """Run ``act()`` at ``when`` (``time.monotonic()``'s clock) if ``live()`` is true
        then (any thread; a side's lock may be held)."""
        entry = (when, next(self.order), act, live)
        with self.lock:
            heapq.heappush(self.heap, entry)
            self._wake_locked()
            if self.thread is not None or self.unstarted:
                return
        self.start_or_say()  # the sides start it sooner: this is a last resort

    def start_or_say(self) -> None:
        """``start``, or say once that time limits cannot stop tasks (any thread)."""
        try:
            self.start()
        except RuntimeError as exc:
            with self.lock:
                said, self.unstarted = self.unstarted, True
            if not said:
                LOGGER.warning("manygil: the pool's watchdog cannot start (%s): its time limits cannot stop tasks", exc)

    def _count(self, delta: int) -> None:
        """A lease was taken again (+1) or released (-1): once none is held, the thread
        ends when no live deadline is left."""
        with self.lock:
            self.leases += delta
            self._wake_locked()

    def join(self) -> None:
        """Wait for the thread to end, once every side released its lease and no live
        deadline is left (any thread but the watchdog's; no lock held); at once if a
        side holds its lease still."""
        with self.lock:
            if self.leases > 0:
                return
            self._wake_locked()  # the deadlines of tasks that ended since are dropped now
            thread = self.thread or self.ended
        if thread is not None and thread is not threading.current_thread() and thread.ident is not None:
            thread.join()

    def _wake_locked(self) -> None:
        """Let the watchdog look again (``lock`` held: one waker releases ``wake``)."""
        if not self.woken:
            self.woken = True
            self.wake.release()

    def _watch(self) -> None:
        """The watchdog thread: each deadline's ``act`` once its time comes."""
        me = threading.current_thread()
        try:
            while True:
                act = self._next()
                if act is None:
                    return
                try:
                    act()
                except BaseException as exc:  # noqa: BLE001 - a bug: said loudly, the other limits still hold
                    LOGGER.error("manygil: a time limit failed to act (a bug in manygil): %r", exc, exc_info=exc)
                act = None
        finally:
            with self.lock:
                if self.thread is me:  # ended by a bug: a later add() starts another
                    self.thread, self.ended = None, me

    def _next(self) -> Callable[[], None] | None:
        """Wait for the next live deadline's time (no lock held): its ``act``, or None
        once every lease is released and no live deadline is left (the thread is
        then forgotten, so that a later ``add`` starts another)."""
        got = False
        while True:
            with self.lock:
                if got:  # it took the wake-up (once: a later pass may not undo a new one)
                    self.woken = got = False  # the next waker releases again
                if self.leases <= 0:
                    self._drop_ended()
                    if not self.heap:
                        self.thread, self.ended = None, self.thread
                        return None
                when = self.heap[0][0] if self.heap else None
                now = time.monotonic()
                due = None
                if when is not None and when <= now:
                    due = heapq.heappop(self.heap)
            if due is not None:
                if _alive(due):
                    return due[2]
                continue
            timeout = _LONGEST_WAIT if when is None else min(when - now, _LONGEST_WAIT)
            got = self.wake.acquire(True, timeout)

    def _drop_ended(self) -> None:
        """Drop the deadlines that no longer matter (``lock`` held; in place: nothing
        that a garbage collection counts is allocated)."""
        heap = self.heap
        i = 0
        while i < len(heap):
            if _alive(heap[i]):
                i += 1
            else:
                heap[i] = heap[-1]
                heap.pop()
        heapq.heapify(heap)


def _alive(entry: _Entry) -> bool:
    """Whether a deadline still matters; one whose ``live`` fails (a bug) does not."""
    try:
        return entry[3]()
    except BaseException as exc:  # noqa: BLE001 - a bug: said loudly, the watchdog goes on
        LOGGER.error("manygil: a time limit's check failed (a bug in manygil): %r", exc, exc_info=exc)
        return False


class Lease:
    """One side's use of its pool's deadlines.  The side releases it once it will add
    no deadline (it shut down, and its tasks have started), and takes it again if a
    task comes after all (one a shutting-down pool still runs).  ``released`` is
    guarded by the side's lock: each method runs with it held."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines
        self.released = False

    def release_if(self, done: bool) -> None:
        """Release the lease if ``done`` (the side will add no deadline); once it is
        released, let the watchdog drop the deadlines of the tasks that ended since."""
        if self.released:
            self.deadlines._count(0)
        elif done:
            self.released = True
            self.deadlines._count(-1)

    def renew(self) -> None:
        """A task came after the release: the side may add deadlines again."""
        if self.released:
            self.released = False
            self.deadlines._count(1)
