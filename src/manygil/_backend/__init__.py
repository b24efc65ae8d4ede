"""The version adapter: the one place that looks at the Python version.

Every module above this one talks to the low-level interpreter API through the
names re-exported here, whatever the CPython release:

    3.12   _xxsubinterpreters             (py312.py)
    3.13   _interpreters                  (py313.py)
    3.14+  _interpreters, and the exception classes of concurrent.interpreters (py314.py)

Functions:
    create(own_gil=True) -> int          a new interpreter, with its own GIL or the main one
    destroy(id)                          finalize it (InterpreterError while running)
    list_all() -> [(id, whence)]
    get_current() -> (id, whence); get_main() -> (id, whence); whence(id) -> str
    is_running(id) -> bool; is_shareable(obj) -> bool
    run(id, source, shared) -> None | (type_name, message)   runs source in __main__
    supports_ctypes_in_subinterpreters: bool
"""

from __future__ import annotations

import sys
import threading

from .. import _native

if sys.version_info < (3, 12):  # pragma: no cover - guarded in manygil/__init__.py
    raise ImportError("manygil needs CPython 3.12 or newer")

if sys.version_info >= (3, 14):
    from . import py314 as _impl

    PY_VERSION = "3.14+"
elif sys.version_info >= (3, 13):
    from . import py313 as _impl

    PY_VERSION = "3.13"
else:
    from . import py312 as _impl

    PY_VERSION = "3.12"

InterpreterError = _impl.InterpreterError
InterpreterNotFoundError = _impl.InterpreterNotFoundError
NotShareableError = _impl.NotShareableError
get_current = _impl.get_current
get_main = _impl.get_main
is_running = _impl.is_running
is_shareable = _impl.is_shareable

# CPython's list_all() walks the interpreters' linked list without the runtime's lock,
# so a destroy() on another thread can free the interpreter it stands on: a segfault in
# PyInterpreterState_Next (seen on 3.15 when the fault injection listed interpreters as
# a pool closed its workers).  So manygil's lists wait for its destroys in progress, and
# destroys wait for lists in progress; destroys do not wait for each other, so that one
# that never ends (an interpreter whose thread is stuck) holds up no other, and a list
# waits for destroys at most _LIST_WAIT seconds (the diagnostics list interpreters).
_turns = threading.Condition(threading.RLock())  # a collection may destroy while it is held
_destroying = 0
_listing: dict[int, int] = {}  # thread id -> lists it is making
_LIST_WAIT = 2.0


def destroy(interp_id: int) -> None:
    """Finalize interpreter ``interp_id`` (InterpreterError while it runs)."""
    global _destroying
    me = threading.get_ident()
    with _turns:
        # A list takes microseconds; one of this thread's own (a collection that runs a
        # finalizer while it lists) cannot be waited for.
        _turns.wait_for(lambda: not _listing or me in _listing)
        _destroying += 1
    try:
        _impl.destroy(interp_id)
    finally:
        with _turns:
            _destroying -= 1
            _turns.notify_all()


def list_all() -> list[tuple[int, str]]:
    """``(id, whence)`` of every interpreter."""
    me = threading.get_ident()
    with _turns:
        _turns.wait_for(lambda: not _destroying, timeout=_LIST_WAIT)
        _listing[me] = _listing.get(me, 0) + 1
    try:
        return _impl.list_all()
    finally:
        with _turns:
            _listing[me] -= 1
            if not _listing[me]:
                del _listing[me]
            _turns.notify_all()


def create(own_gil: bool = True) -> int:
    """A new interpreter, with its own GIL or the main one; its id.

    Raises:
        RuntimeError: tracemalloc traces where CPython cannot run such an interpreter
            beside it (see ``check_tracemalloc``).
    """
    if _FRAMES_OF_EVERY_INTERPRETER and sys._current_frames is not _native.current_frames:
        _guard_current_frames()
    check_tracemalloc(own_gil)
    return _impl.create(own_gil)


def check_tracemalloc(own_gil: bool = True) -> None:
    """Raise when tracemalloc traces and CPython cannot run an interpreter beside it:
    with its own GIL on 3.12 (3.12.1: "double free or corruption" at exit) and 3.14
    (3.14.10: a segfault in the destroy of an isolated interpreter, with _interpreters
    alone), and even under the main GIL on 3.14 (a shared-GIL interpreter deadlocks the
    main thread's next threading.Thread() about once in ten runs).  3.13 and 3.15 are fine.

    Raises:
        RuntimeError: the message names the fixes.
    """
    if not _tracing():
        return
    version = sys.version_info[:2]
    if version == (3, 14) or (own_gil and version == (3, 12)):
        kind = "with its own GIL " if version == (3, 12) else ""
        shared = ", or create the pool with shared_gil=True" if version == (3, 12) else ""
        raise RuntimeError(
            f"cannot create an interpreter {kind}while tracemalloc traces on CPython "
            f"{version[0]}.{version[1]}: together they corrupt memory or deadlock (a CPython bug: a "
            "double free at exit on 3.12; on 3.14 a segfault as an interpreter with its own GIL "
            "is destroyed, and a deadlock beside one that shares the main GIL); run without "
            f"-X tracemalloc and PYTHONTRACEMALLOC (or call tracemalloc.stop()), or use CPython 3.13 "
            f"or 3.15{shared}"
        )


def _tracing() -> bool:
    try:
        import _tracemalloc  # -X tracemalloc starts it without importing tracemalloc
    except ImportError:  # 3.12, inside an interpreter with its own GIL: refused there
        return False  # its pool was checked in the main interpreter
    return bool(_tracemalloc.is_tracing())


# CPython 3.12 and 3.13: sys._current_frames() walks the threads of every interpreter and
# builds frame objects for threads whose interpreter's GIL the caller does not hold, which
# crashes (pytest-timeout's signal method calls it when a test times out; so do
# profilers and Dask's).  Once this process makes an interpreter, the calling
# interpreter's sys._current_frames() gives its own threads only (3.14 no longer crashes),
# and manygil.dump_tracebacks() gives every interpreter's stacks.
_FRAMES_OF_EVERY_INTERPRETER = PY_VERSION in ("3.12", "3.13")

# CPython 3.12 starts no thread once the program's end has begun (threading's exit
# hooks run after the runtime is marked finalizing); 3.13 moved that mark after them.
STARTS_THREADS_AT_EXIT = PY_VERSION != "3.12"


def _guard_current_frames() -> None:
    sys._current_frames = _native.current_frames


run = _impl.run
whence = _impl.whence

# (ExecutionFailed, QueueError, QueueEmpty, QueueFull) of the standard library, or None
STDLIB_EXCEPTIONS = getattr(_impl, "STDLIB_EXCEPTIONS", None)

__all__ = (
    "InterpreterError",
    "InterpreterNotFoundError",
    "NotShareableError",
    "PY_VERSION",
    "STARTS_THREADS_AT_EXIT",
    "STDLIB_EXCEPTIONS",
    "check_tracemalloc",
    "create",
    "destroy",
    "get_current",
    "get_main",
    "is_running",
    "is_shareable",
    "list_all",
    "run",
    "whence",
)
