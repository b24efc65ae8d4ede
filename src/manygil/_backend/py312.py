"""Low-level adapter for CPython 3.12 (``_xxsubinterpreters``).

3.12's private module is thin: no ``whence``, no ``call``, no queues, and errors are
plain ``RuntimeError``; this adapter gives it the 3.13 shape.
"""

from __future__ import annotations

import re

import _xxsubinterpreters as _ll

from ._retry import created


class InterpreterError(Exception):
    """A cross-interpreter operation failed."""


class InterpreterNotFoundError(InterpreterError):
    """An interpreter was not found."""


class NotShareableError(TypeError):
    """An object cannot be shared between interpreters (a ``TypeError``, as on 3.14)."""


# 3.12 finalizes an interpreter as soon as the last InterpreterID object made by
# create() is gone, so the adapter keeps one for each interpreter until destroy().
_created: dict[int, object] = {}
_MAIN = int(_ll.get_main())


def _translate(exc: RuntimeError) -> Exception:
    text = str(exc)
    if text.startswith("unrecognized interpreter ID"):
        return InterpreterNotFoundError(text)
    return InterpreterError(text)


def create(own_gil: bool = True) -> int:
    handle = created(lambda: _ll.create(isolated=own_gil), RuntimeError)  # isolated: its own GIL
    interp_id = int(handle)
    _created[interp_id] = handle
    return interp_id


def destroy(interp_id: int) -> None:
    try:
        _ll.destroy(interp_id)
    except RuntimeError as exc:
        raise _translate(exc) from None
    _created.pop(interp_id, None)


def list_all() -> list[tuple[int, str]]:
    # One listing: an interpreter may be closed (by a collection) while this runs.
    ids = [int(i) for i in _ll.list_all()]
    return [(i, "runtime init" if i == _MAIN else "_interpreters module" if i in _created else "unknown") for i in ids]


def whence(interp_id: int) -> str:
    # 3.13's module checks the id here; 3.12's does not.
    if interp_id < 0:
        raise ValueError(f"interpreter ID must be a non-negative int, got {interp_id}")
    if interp_id == _MAIN:
        return "runtime init"
    if interp_id not in {int(i) for i in _ll.list_all()}:
        raise InterpreterNotFoundError(f"unrecognized interpreter ID {interp_id}")
    return "_interpreters module" if interp_id in _created else "unknown"


def get_current() -> tuple[int, str]:
    i = int(_ll.get_current())
    return i, whence(i)


def get_main() -> tuple[int, str]:
    return _MAIN, "runtime init"


def is_running(interp_id: int) -> bool:
    try:
        return bool(_ll.is_running(interp_id))
    except RuntimeError as exc:
        raise _translate(exc) from None


def is_shareable(obj: object) -> bool:
    return bool(_ll.is_shareable(obj))


_RUN_FAILED = re.compile(r"^<class '([^']*)'>: (.*)$", re.S)


def run(interp_id: int, source: str, shared: dict[str, object]) -> tuple[str, str] | None:
    try:
        _ll.run_string(interp_id, source, shared or None)
    except _ll.RunFailedError as exc:
        match = _RUN_FAILED.match(str(exc))
        if match is None:
            return "Exception", str(exc)
        return match.group(1).rpartition(".")[2], match.group(2)
    except RuntimeError as exc:
        raise _translate(exc) from None
    except ValueError as exc:
        raise NotShareableError(str(exc)) from None
    return None
