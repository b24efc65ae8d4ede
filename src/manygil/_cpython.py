"""Every private CPython hook the main interpreter's side of manygil relies on, in one
place: what each one is, and why manygil needs it.  Each may change between CPython
releases; the tests of the program's end and of the process side exercise all of them
on every supported version.  (Inside a worker interpreter, ``_worker`` keeps its own few:
that module imports nothing it does not need.)

Any thread of the main interpreter.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, LOGGER, PENDING, RUNNING
from typing import Any

__all__ = (
    "CANCELLED_AND_NOTIFIED", "LOGGER", "PENDING", "RUNNING", "fixed_process_pool_class", "manager_thread",
    "hold_while_managed", "program_ending", "register_thread_exit", "run_atexit_handlers", "set_threads_shutting_down",
    "terminate_processes", "thread_exit_hooks", "threads_shutting_down", "wrap_register_thread_exit",
)

# concurrent.futures._base's future states and logger (above): a future's own states,
# which InterpreterFuture.cancel() sets for a running task, and the logger the standard
# library's pools log to ("concurrent.futures").


# ---------------------------------------------------------------- the program's end

def register_thread_exit(fn: Callable[..., object], *args: object) -> None:
    """``threading._register_atexit``: run ``fn`` at the program's end, before the
    non-daemon threads are joined (where ``concurrent.futures`` waits for its pools)."""
    threading._register_atexit(fn, *args)  # type: ignore[attr-defined]


def thread_exit_hooks() -> list[Any] | None:
    """``threading._threading_atexits``: the hooks of ``register_thread_exit``, run last
    registered first; None if this CPython has no such list."""
    hooks = getattr(threading, "_threading_atexits", None)
    return hooks if isinstance(hooks, list) else None


def wrap_register_thread_exit(wrap: Callable[[Callable[..., None]], Callable[..., None]]) -> None:
    """Replace ``threading._register_atexit`` with ``wrap(original)``."""
    threading._register_atexit = wrap(threading._register_atexit)  # type: ignore[attr-defined]


def threads_shutting_down(default: bool = False) -> bool:
    """``threading._SHUTTING_DOWN``: the program's end began; ``threading`` starts no
    thread and registers no exit hook from then on."""
    return bool(getattr(threading, "_SHUTTING_DOWN", default))


def set_threads_shutting_down(value: bool) -> None:
    """Set ``threading._SHUTTING_DOWN`` (lifted for one import, see ``_exit``)."""
    threading._SHUTTING_DOWN = value  # type: ignore[attr-defined]


def program_ending() -> bool:
    """Whether the program's end has begun (3.12 starts no thread then)."""
    return sys.is_finalizing() or threads_shutting_down()


def run_atexit_handlers() -> None:
    """``atexit._run_exitfuncs``: the program's atexit handlers, run before manygil exits
    without finalizing (a worker stuck in C: see ``_pool._exit_without_finalizing``)."""
    import atexit

    atexit._run_exitfuncs()


# ---------------------------------------------------------------- ProcessPoolExecutor

def manager_thread(pool: Any) -> threading.Thread | None:
    """A ``ProcessPoolExecutor``'s management thread (``_executor_manager_thread``), which
    it forgets once shut down without waiting."""
    return getattr(pool, "_executor_manager_thread", None)


# gh-125451, fixed in CPython 3.12.8 and 3.13.1 (not in 3.12.1 and 3.13.0): a
# ProcessPoolExecutor collected while its manager thread marks it broken
# (``_terminate_broken``, which holds the executor's ``_shutdown_lock``) runs its weakref
# callback on that thread, and the callback takes the same lock: the manager thread
# deadlocks, and the program's end waits for it forever (the fault injection found it on
# 3.12 once a dropped pool's process side was freed at once).  So each process side's
# executor is held here until its manager thread has ended.
_MANAGED: dict[threading.Thread, Any] = {}
_MANAGED_LOCK = threading.Lock()  # a leaf: nothing is freed or called while it is held


def hold_while_managed(pool: Any) -> None:
    """Keep ``pool`` (a ``ProcessPoolExecutor`` just submitted to) alive until its manager
    thread ends, and let go of those whose thread has ended (any thread, no lock held:
    letting go may run their weakref callbacks here)."""
    thread = manager_thread(pool)
    if thread is None or thread in _MANAGED:
        return
    with _MANAGED_LOCK:
        ended = [t for t in _MANAGED if not t.is_alive()]
        gone = [_MANAGED.pop(t) for t in ended]
        _MANAGED[thread] = pool
    del gone  # freed here, with the lock let go


def terminate_processes(pool: Any) -> None:
    """End a ``ProcessPoolExecutor``'s processes now: ``terminate_workers()`` on 3.14+,
    else each of its ``_processes`` (None once it is shut down), then a shutdown."""
    stop = getattr(pool, "terminate_workers", None)
    if stop is not None:
        stop()
        return
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


@functools.cache
def fixed_process_pool_class(base: type) -> type:
    """``base`` (``ProcessPoolExecutor``) with CPython's fix for gh-132969, which 3.12.1
    and 3.13.0 lack: ``shutdown(wait=False)`` (``_terminate``) empties the process table
    under the management thread, which crashed in ``_adjust_process_count`` (TypeError)
    when a process of a pool with ``max_tasks_per_child`` had just left; the fault
    injection found it on 3.13.0."""

    class Slot(base):  # type: ignore[misc]
        def _adjust_process_count(self) -> None:
            if self._processes is None:
                return  # shut down meanwhile: no process to start
            super()._adjust_process_count()

    return Slot
