"""Every exception manygil raises, in one place.

    Exception
     ├── InterpreterError                 a cross-interpreter operation failed
     │    ├── InterpreterNotFoundError    no interpreter with that id (never made, or closed)
     │    ├── ExecutionFailed             uncaught exception inside an interpreter; .excinfo
     │    └── QueueError
     │         ├── ItemInterpreterDestroyed  the interpreter that put the item was closed
     │         ├── QueueEmpty             (also a queue.Empty)
     │         └── QueueFull              (also a queue.Full)
     ├── TypeError
     │    └── NotShareableError           an object cannot cross to another interpreter
     ├── concurrent.futures.BrokenExecutor
     │    └── concurrent.futures.thread.BrokenThreadPool
     │         └── BrokenInterpreterPool  a pool can no longer run tasks (e.g. initializer failed)
     └── RemoteError                      a task's exception that could not be pickled,
                                          rebuilt from its type name, message and traceback

On 3.13 ``InterpreterError`` and ``InterpreterNotFoundError`` are the interpreter
module's own classes (and ``NotShareableError`` a subclass of its own), so errors raised
by CPython itself are caught by the same ``except`` clauses.  On 3.14+ every class here
that ``concurrent.interpreters`` also has *is* the standard library's (there
``QueueError`` is a ``RuntimeError``, as CPython made it).
"""

from __future__ import annotations

import queue
from concurrent.futures.thread import BrokenThreadPool
from . import _backend
from ._backend import InterpreterError, InterpreterNotFoundError, NotShareableError
from ._excinfo import ExcInfo, ExcTypeInfo

__all__ = (
    "BrokenInterpreterPool",
    "ExcInfo",
    "ExcTypeInfo",
    "ExecutionFailed",
    "InterpreterError",
    "InterpreterNotFoundError",
    "ItemInterpreterDestroyed",
    "NotShareableError",
    "QueueEmpty",
    "QueueError",
    "QueueFull",
    "RemoteError",
)


if _backend.STDLIB_EXCEPTIONS is not None:
    ExecutionFailed, QueueError, QueueEmpty, QueueFull = _backend.STDLIB_EXCEPTIONS
else:

    class ExecutionFailed(InterpreterError):  # type: ignore[no-redef]
        """An unhandled exception happened inside an interpreter.

        Raised by ``Interpreter.exec()`` and ``Interpreter.call()``; ``excinfo`` holds the
        type name, message and traceback text of the original exception.
        """

        def __init__(self, excinfo: ExcInfo) -> None:
            super().__init__(excinfo.formatted)
            self.excinfo = excinfo

        def __str__(self) -> str:
            if not self.excinfo.errdisplay:
                return self.excinfo.formatted
            return f"{self.excinfo.formatted}\n\nUncaught in the interpreter:\n\n{self.excinfo.errdisplay}"

        def __reduce__(self) -> tuple[object, ...]:
            return (type(self), (self.excinfo,))

    class QueueError(InterpreterError):  # type: ignore[no-redef]
        """A cross-interpreter queue operation failed."""

    class QueueEmpty(QueueError, queue.Empty):  # type: ignore[no-redef, valid-type, misc]
        """Raised by ``get_nowait()``, and by ``get()`` when it times out."""

    class QueueFull(QueueError, queue.Full):  # type: ignore[no-redef, valid-type, misc]
        """Raised by ``put_nowait()``, and by ``put()`` when it times out."""


if _backend.STDLIB_EXCEPTIONS is not None:  # 3.14+
    from concurrent.interpreters._queues import ItemInterpreterDestroyed  # type: ignore[attr-defined]  # not in typeshed
else:

    class ItemInterpreterDestroyed(QueueError):  # type: ignore[no-redef, valid-type, misc]
        """Raised by ``Queue.get()`` for an item put with ``unbounditems=UNBOUND_ERROR``
        by an interpreter that was closed since."""


class BrokenInterpreterPool(BrokenThreadPool):
    """The pool cannot run tasks any more, e.g. because its initializer failed (a
    ``BrokenThreadPool``, as the standard library's on 3.14, since the pool is by type
    a ``ThreadPoolExecutor``)."""


class RemoteError(Exception):
    """A task raised an exception that could not be pickled back to the caller.

    Attributes:
        excinfo: the type name, message and traceback text of the original exception.
    """

    def __init__(self, excinfo: ExcInfo) -> None:
        super().__init__(f"{excinfo.type.__qualname__}: {excinfo.msg}")
        self.excinfo = excinfo

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.excinfo,))


# manygil's own classes print (and pickle) as manygil.X, the name users catch them by;
# the standard library's and _interpreters' keep theirs.
for _cls in (
    BrokenInterpreterPool, ExecutionFailed, InterpreterError, InterpreterNotFoundError,
    ItemInterpreterDestroyed, NotShareableError, QueueEmpty, QueueError, QueueFull, RemoteError,
):
    if _cls.__module__.startswith("manygil."):
        _cls.__module__ = "manygil"
del _cls
