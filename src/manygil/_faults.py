"""Named points where a test steps into manygil's own code: to hold a thread inside a
race window, or to make manygil fail there as a bug would.  The code calls
``point(name, *args)``; nothing happens unless a test set a hook for that name
(``hooked``).  Tests name these points instead of monkeypatching private methods, so a
refactoring that moves a method keeps them working, and one that drops a point fails
them loudly (``hooked`` refuses a name not in ``POINTS``).

Any thread.  The table is changed only by tests, between or around their pools.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ("POINTS", "hooked", "point")

POINTS = frozenset({
    # the program's end
    "program.ending",  # (): the pools' exit hook began, no pool takes a new task
    # the interpreter side (schedule: its books, _interp_side._Schedule, whose lock is
    # held where it says so)
    "interp.home",  # (schedule, worker, data): a worker calls home, before the pool's guard
    "interp.results_taken",  # (schedule, worker, done): results matched with tasks, lock held
    "interp.preloaded",  # (schedule, worker): a worker imported the caller's script, its answer not yet read
    "interp.no_seat",  # (schedule, worker): a worker found no seat for the queue's tasks, lock held
    "interp.worker_exited",  # (schedule, worker, error): a worker's thread is ending
    # the router
    "router.refused",  # (table, fn, module): a function is routed to the other side
    # the process side (books: its books, _process_side._Books, whose lock is held where
    # it says so)
    "process.no_seat",  # (books, task): the pump found no seat for a task, lock held
    "process.slot_making",  # (starter,): a slot (a one-process ProcessPoolExecutor) is to be made
    "process.slot_starting",  # (books, slot): the warm-up asks a new slot's process to start
    "process.task_starting",  # (task, books, slot): a task is handed to its slot's process
    "process.expiring",  # (task,): a task's time limit passed, on the timer thread, no lock held
    "process.task_done",  # (task, inner): a slot's manager thread reports a task's end
    # the seats
    "seats.given",  # (seats, side, woke): a seat was given back, the other side woken or not
})

_HOOKS: dict[str, Callable[..., object]] = {}


def point(name: str, *args: object) -> None:
    """A named point: run the hook a test set for ``name``, if any."""
    if _HOOKS:
        hook = _HOOKS.get(name)
        if hook is not None:
            hook(*args)


@contextlib.contextmanager
def hooked(name: str, hook: Callable[..., object]) -> Iterator[None]:
    """Run ``hook(*args)`` at the point ``name`` while the block runs (a test's)."""
    if name not in POINTS:
        raise ValueError(f"manygil has no fault point named {name!r}; the points: {', '.join(sorted(POINTS))}")
    if name in _HOOKS:
        raise RuntimeError(f"the fault point {name!r} has a hook already")
    _HOOKS[name] = hook
    try:
        yield
    finally:
        _HOOKS.pop(name, None)
