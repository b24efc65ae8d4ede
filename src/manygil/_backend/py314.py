"""Low-level adapter for CPython 3.14+: 3.13's, with the standard library's exceptions.

3.14 made the API public (``concurrent.interpreters``); manygil keeps its own
implementation on top of ``_interpreters`` (see ``py313``) but raises the standard
library's exception classes, so ``except concurrent.interpreters.ExecutionFailed`` and
friends catch manygil's errors, and the other way round.
"""

from __future__ import annotations

from concurrent.interpreters import (  # noqa: F401 - re-exported
    ExecutionFailed,
    InterpreterError,
    InterpreterNotFoundError,
    NotShareableError,
    QueueEmpty,
    QueueFull,
)
from concurrent.interpreters._queues import QueueError  # not exported, but the base of both

from .py313 import (  # noqa: F401 - re-exported
    create,
    destroy,
    get_current,
    get_main,
    is_running,
    is_shareable,
    list_all,
    run,
    whence,
)

STDLIB_EXCEPTIONS = (ExecutionFailed, QueueError, QueueEmpty, QueueFull)
