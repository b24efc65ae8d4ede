"""The other side of ``fallback="shared-gil"``: an ``InterpreterPoolExecutor`` of its own
whose interpreters share the main GIL, so any extension module loads there (one GIL for
those tasks: no parallel speed-up).  Made on the first task the router sends here, by the
factory the facade gives (this module does not import the pool).

Threads: the router calls ``run`` (a caller's thread, or an interpreter worker's in
``call_home``); the inner pool's own threads settle its futures, and ``_adopt`` passes
each outcome on.  ``pool`` is set once, under ``lock`` (a leaf: the pool is made
outside it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from ._futures import settle

__all__ = ("SharedGilPool", "SharedGilSide")


class SharedGilPool(Protocol):
    """What this side needs of its pool (an ``InterpreterPoolExecutor(shared_gil=True)``)."""

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        route_fn: Callable[..., Any] | None = None,
        *,
        resend: bool = False,
    ) -> Future[Any]: ...

    def _cancel_all(self) -> None: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class SharedGilSide:
    """The shared-GIL side of one pool."""

    kind = "shared-gil"

    def __init__(self, make_pool: Callable[[], SharedGilPool]) -> None:
        self.make_pool = make_pool
        self.pool: SharedGilPool | None = None  # made on its first task
        self.lock = threading.Lock()

    def run(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        label: str = "",
    ) -> None:
        """Run ``fn(*args, **kwargs)`` in the shared-GIL pool and settle ``future`` (running)
        with its outcome; ``future.cancel()`` interrupts it there.  Every task here was
        taken by the pool before it shut down: it runs even at the program's end."""
        pool = self.pool
        if pool is None:
            made = self.make_pool()  # outside the lock: it starts the pool's machinery
            with self.lock:
                pool = self.pool = self.pool or made
            if pool is not made:  # another thread made one first
                made.shutdown(wait=False)
        inner = pool._submit(fn, args, kwargs, timeout, resend=True)
        future._fallback = inner  # type: ignore[attr-defined]  # its cancel() interrupts it
        if future.cancelled():  # cancelled while it was being submitted
            inner.cancel()
        inner.add_done_callback(lambda done: _adopt(future, done))

    def in_flight(self) -> int:
        """0: the inner pool's tasks are its own interpreter side's, which the program's
        end counts and waits for as every pool's."""
        return 0

    def cancel_all(self) -> None:
        """Cancel every task of the inner pool, running ones included."""
        with self.lock:
            pool = self.pool
        if pool is not None:
            pool._cancel_all()

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self.lock:
            pool = self.pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _adopt(future: Future[Any], done: Future[Any]) -> None:
    """Give ``future`` the outcome of the inner pool's ``done`` (unless it was settled)."""
    if done.cancelled():
        future.cancel()
        return
    exc = done.exception()
    if exc is not None:
        settle(future, exc=exc)
    else:
        settle(future, done.result())
