"""PEP 734's ``concurrent.interpreters``, name for name, on CPython 3.12 and 3.13.

On 3.14+ this module is the standard library's ``concurrent.interpreters``.  On 3.12
and 3.13 it is built on the private low-level modules (see ``_backend``) and on
manygil's native channels, which give queues that block without polling::

    main interpreter                               interpreter N (own GIL)
    interp.call(fn, *a) ─► pickle ─► channel ─┐
                                              └──► _worker.call_once: fn(*a)
    result ◄── unpickle ◄── reply channel ◄──────── pickle(result) | ExcInfo

On 3.13 ``InterpreterError``, ``InterpreterNotFoundError`` and ``NotShareableError`` are
the classes of CPython's ``_interpreters`` module, so its own errors are caught too.

Differences from 3.14 worth knowing:

* ``Queue`` items are copies (bytes, str, or a pickle); an item never becomes
  "unbound" when the interpreter that put it is closed, so ``unbounditems`` is accepted
  and checked but has no effect.
* ``prepare_main()`` and ``Queue.put()`` accept anything picklable, as 3.14 does;
  objects that are neither shareable nor picklable raise ``NotShareableError``.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 14):  # pragma: no cover - not testable on 3.12/3.13
    from concurrent.interpreters import *  # noqa: F403
    from concurrent.interpreters import __all__ as _stdlib_all

    __all__ = tuple(_stdlib_all)
else:
    from ._interpreters import (
        UNBOUND,
        UNBOUND_ERROR,
        UNBOUND_REMOVE,
        ExecutionFailed,
        Interpreter,
        InterpreterError,
        InterpreterNotFoundError,
        NotShareableError,
        Queue,
        QueueEmpty,
        QueueError,
        QueueFull,
        create,
        create_queue,
        get_current,
        get_main,
        is_shareable,
        list_all,
    )

    __all__ = (
        "UNBOUND",
        "UNBOUND_ERROR",
        "UNBOUND_REMOVE",
        "ExecutionFailed",
        "Interpreter",
        "InterpreterError",
        "InterpreterNotFoundError",
        "NotShareableError",
        "Queue",
        "QueueEmpty",
        "QueueError",
        "QueueFull",
        "create",
        "create_queue",
        "get_current",
        "get_main",
        "is_shareable",
        "list_all",
    )
