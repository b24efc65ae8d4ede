"""Settling a future that another thread may settle first."""

from __future__ import annotations

from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ("settle",)

_UNSET: Any = object()


def settle(future: Future[Any], result: Any = _UNSET, *, exc: BaseException | None = None) -> bool:
    """Give ``future`` its exception ``exc``, else its ``result``, unless it is settled
    already (cancelled by its caller, or ended by a time limit meanwhile); whether it
    took it.  Any thread."""
    if future.done():
        return False
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(None if result is _UNSET else result)
    except InvalidStateError:  # settled in between
        return False
    return True
