"""manygil: many GILs, one process.

Run pure-Python work on every core with CPython's per-interpreter GIL (PEP 684):
a ``concurrent.futures`` pool of interpreters, the PEP 734 interpreter API on 3.12+,
and the tools to see what goes on inside them.

Every exception a user may catch is here (see ``manygil._exceptions`` for the tree):
``BrokenInterpreterPool``, ``RemoteError``, ``TaskInterrupted`` (raised inside a task by
its time limit or ``cancel()``), and the interpreter API's ``InterpreterError``,
``InterpreterNotFoundError``, ``ExecutionFailed``, ``NotShareableError``, ``QueueError``,
``QueueEmpty``, ``QueueFull`` and ``ItemInterpreterDestroyed``, which on 3.14+ are the
standard library's own classes (``concurrent.interpreters``), and on 3.13 partly
``_interpreters``' own.  manygil's own classes print as ``manygil.X``.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 12):
    _found = ".".join(map(str, sys.version_info[:3]))
    raise ImportError(
        f"manygil needs CPython 3.12 or newer for per-interpreter GILs; this is {_found}"
    ) from None

__version__ = "0.1.0"

__all__ = (
    "BrokenInterpreterPool",
    "ExecutionFailed",
    "FallbackWarning",
    "InterpreterError",
    "InterpreterFuture",
    "InterpreterNotFoundError",
    "InterpreterPoolExecutor",
    "ItemInterpreterDestroyed",
    "NotShareableError",
    "Pool",
    "QueueEmpty",
    "QueueError",
    "QueueFull",
    "RemoteError",
    "TaskInterrupted",
    "__version__",
    "cancel_dump_tracebacks_later",
    "dump_tracebacks",
    "dump_tracebacks_later",
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would cost every worker
if TYPE_CHECKING:
    from ._exceptions import (
        BrokenInterpreterPool,
        ExecutionFailed,
        InterpreterError,
        InterpreterNotFoundError,
        ItemInterpreterDestroyed,
        NotShareableError,
        QueueEmpty,
        QueueError,
        QueueFull,
        RemoteError,
    )
    from ._router import FallbackWarning
    from ._worker import TaskInterrupted
    from ._tracebacks import cancel_dump_tracebacks_later, dump_tracebacks, dump_tracebacks_later
    from .mppool import Pool
    from .pool import InterpreterFuture, InterpreterPoolExecutor

# Every worker interpreter imports manygil._worker, and so this file: the names
# below are imported on first use, so that a worker does not pay for the pool's imports.
_LAZY = {
    "BrokenInterpreterPool": "._exceptions",
    "ExecutionFailed": "._exceptions",
    "InterpreterError": "._exceptions",
    "InterpreterNotFoundError": "._exceptions",
    "ItemInterpreterDestroyed": "._exceptions",
    "NotShareableError": "._exceptions",
    "QueueEmpty": "._exceptions",
    "QueueError": "._exceptions",
    "QueueFull": "._exceptions",
    "RemoteError": "._exceptions",
    "TaskInterrupted": "._worker",
    "FallbackWarning": "._router",
    "InterpreterFuture": ".pool",
    "InterpreterPoolExecutor": ".pool",
    "Pool": ".mppool",
    "dump_tracebacks": "._tracebacks",
    "dump_tracebacks_later": "._tracebacks",
    "cancel_dump_tracebacks_later": "._tracebacks",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'manygil' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
