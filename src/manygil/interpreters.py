"""PEP 734's ``concurrent.interpreters``, name for name, on CPython 3.12 to 3.15.

The same implementation on every version, built on the private low-level module
(see ``_backend``) and on manygil's native channels, which give queues that block
without polling, so that what manygil adds is there on 3.14+ too: callables and
results that cross by pickle (closures and lambdas with cloudpickle), what the code
prints and logs forwarded to the caller, stacks in ``manygil.dump_tracebacks()``, and
errors that say how to fix them::

    main interpreter                               interpreter N (own GIL)
    interp.call(fn, *a) ─► pickle ─► channel ─┐
                                              └──► _worker.call_once: fn(*a)
    result ◄── unpickle ◄── reply channel ◄──────── pickle(result) | ExcInfo

The exceptions are those CPython raises: on 3.13 ``InterpreterError`` and
``InterpreterNotFoundError`` are the classes of its ``_interpreters`` module; on 3.14+
``ExecutionFailed``, ``InterpreterError``, ``InterpreterNotFoundError``,
``NotShareableError``, ``QueueError``, ``QueueEmpty`` and ``QueueFull`` are ``concurrent.interpreters``'
own, so an ``except`` written for the standard library catches manygil's errors.
``NotShareableError`` is a ``TypeError`` on every version, as on 3.14.

Differences from 3.14's module are listed in the docs (interpreters page), e.g.:

* ``Queue`` items are copies (bytes, str, or a pickle); as in 3.14, an item whose
  interpreter is closed becomes "unbound" (``unbounditems``), also on 3.12 and 3.13:
  ``get()`` returns ``UNBOUND`` or raises ``ItemInterpreterDestroyed`` instead, or the
  item leaves the queue.
* ``prepare_main()`` and ``Queue.put()`` accept anything picklable, as 3.14 does;
  objects that are neither shareable nor picklable raise ``NotShareableError``.
"""

from __future__ import annotations

from ._interpreters import (
    UNBOUND,
    UNBOUND_ERROR,
    UNBOUND_REMOVE,
    ExecutionFailed,
    Interpreter,
    InterpreterError,
    InterpreterNotFoundError,
    ItemInterpreterDestroyed,
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
    "ItemInterpreterDestroyed",
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
