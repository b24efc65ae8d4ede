"""Interpreter creation, tried again: CPython fails now and then to create one under load."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = 3


def created(make: Callable[[], T], error: type[Exception]) -> T:
    """``make()``, tried up to 3 times while it raises ``error``.  3.12.1 and 3.13.0 each
    failed once under load with a bare "interpreter creation failed" (the fault
    injection); the last failure keeps CPython's chained cause in its message."""
    for attempt in range(ATTEMPTS):
        try:
            return make()
        except error as exc:
            if attempt == ATTEMPTS - 1:
                cause = exc.__cause__ or exc.__context__
                raise error(f"{exc} ({ATTEMPTS} attempts){f': {cause!r}' if cause else ''}") from exc
    raise AssertionError("unreachable")
