"""The wait every manygil thread of the main interpreter uses on a condition: one that
lets Ctrl-C through."""

from __future__ import annotations

import threading

__all__ = ("main_wait",)


def main_wait(condition: threading.Condition, timeout: float | None = None) -> None:
    """``condition.wait(timeout)`` that lets Ctrl-C through.  CPython runs a signal's
    Python handler when the main thread next runs bytecode: a signal that lands just as
    that thread starts to block (or on another thread, such as one of the pool's, which
    call home often) would wait for the wait's end, forever for a task that never ends.
    The main thread so waits in slices of 0.1 s at most, as ``_native``'s waits do."""
    if threading.current_thread() is threading.main_thread():
        timeout = 0.1 if timeout is None else min(timeout, 0.1)
    condition.wait(timeout)
