"""The seats a pool's two sides share: ``max_workers`` for its interpreters and its
process workers together.

A task runs only on a seat, so the two sides together run at most ``max_workers`` tasks
and do not oversubscribe the cores.  When both have tasks waiting, each keeps a fair
share of the seats (half, rounded down; a side above it hands a seat over when a task of
it ends), so neither starves and a seat does not change hands after every task (each
hand-over wakes threads, which costs milliseconds on busy cores).  With one seat they
take turns.

The sides never call each other: each attaches two callbacks, ``wants_seat`` (a hint,
read without any lock: whether its tasks wait for a seat) and ``seat_freed`` (take a
seat given back, for the tasks that wait), and a seat given back wakes the other side
through them.  Held weakly, so the seats keep no side alive.

Lock order: a side's lock, then ``Seats.lock`` (a leaf, held for a few instructions).
``seat_freed`` is called with no ``Seats.lock`` held: the interpreter side calls
``give`` with its pool's lock held, so the process side's lock comes after the pool's,
never before it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from . import _faults

__all__ = ("Seats",)


def _other(side: str) -> str:
    return "process" if side == "interp" else "interp"


class Seats:
    """``total`` seats shared by the ``"interp"`` and ``"process"`` sides of one pool.

    ``held`` and ``wanted`` are guarded by ``lock``; ``above_share`` and the
    ``wants_seat`` callbacks are hints read without it.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.share = total // 2
        self.held = {"interp": 0, "process": 0}
        # The sides whose last take() failed: a seat given back must wake them.  Kept
        # under the same lock as the count, so that a side that found no seat cannot
        # miss the one given back just after (a lost wake-up: its task waited beside a
        # free seat until the next submit).
        self.wanted: set[str] = set()
        self.lock = threading.Lock()  # a leaf: nothing else is locked while it is held
        self._wants: dict[str, Callable[[], Callable[[], bool] | None]] = {}
        self._freed: dict[str, Callable[[], Callable[[], bool] | None]] = {}

    def attach(self, side: str, wants_seat: Callable[[], bool], seat_freed: Callable[[], bool]) -> None:
        """Register ``side``'s callbacks (bound methods, held weakly); before its first task."""
        self._wants[side] = weakref.WeakMethod(wants_seat)
        self._freed[side] = weakref.WeakMethod(seat_freed)

    def take(self, side: str) -> bool:
        """Take a seat for ``side``; False when none is free (``side`` is then woken by
        the next ``give`` of the other side)."""
        with self.lock:
            if self.held["interp"] + self.held["process"] >= self.total:
                self.wanted.add(side)
                return False
            self.held[side] += 1
            self.wanted.discard(side)
            return True

    def give(self, side: str, keep: bool = False) -> bool:
        """Give back a seat of ``side`` and wake the other side if it wanted one since its
        last take, or its tasks wait; whether the other side took it (False: ``side`` may
        hand it to a task of its own; a side whose tasks were cancelled since it wanted
        one declines).  ``keep``: ``side`` takes the seat again at once for a task of its
        own that waits (within its fair share): the other side is woken at a later give."""
        other = _other(side)
        with self.lock:
            self.held[side] -= 1
            wanted = other in self.wanted
        if keep:
            return False
        woke = wanted or self.wants_seat(other)
        _faults.point("seats.given", self, side, woke)
        return woke and self._call(self._freed, other)

    def nudge(self, side: str) -> None:
        """``side`` has nothing to start on a seat it was handed (its task was cancelled
        meanwhile): the other side's waiting tasks take it."""
        if self.wants_seat(_other(side)):
            self._call(self._freed, _other(side))

    def wants_seat(self, side: str) -> bool:
        """Whether ``side``'s tasks wait for a seat (a hint, without the lock)."""
        ref = self._wants.get(side)
        fn = ref() if ref is not None else None
        return fn is not None and fn()

    def others_wait(self, side: str) -> bool:
        """Whether the other side's tasks wait for a seat while ``side`` holds more than
        its fair share (a hint): ``side`` then hands a seat over rather than keep it."""
        return self.above_share(side) and self.wants_seat(_other(side))

    def above_share(self, side: str) -> bool:
        """Whether ``side`` holds more than its fair share (read without the lock: a hint)."""
        return self.held[side] > self.share

    def full(self) -> bool:
        """Whether every seat is held (a hint, without the lock)."""
        return self.held["interp"] + self.held["process"] >= self.total

    @staticmethod
    def _call(table: dict[str, Callable[[], Callable[[], bool] | None]], side: str) -> bool:
        ref = table.get(side)
        fn = ref() if ref is not None else None
        return fn is not None and fn()
