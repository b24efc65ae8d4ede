"""Low-level adapter for CPython 3.13+ (``_interpreters``)."""

from __future__ import annotations

import _interpreters as _ll
from _interpreters import InterpreterError as InterpreterError  # re-exported
from _interpreters import InterpreterNotFoundError as InterpreterNotFoundError

from ._retry import created


class NotShareableError(_ll.NotShareableError, TypeError):
    """An object cannot be shared between interpreters: a ``TypeError`` as on 3.14, and
    still the ``ValueError`` that 3.13's own module raises."""

_WHENCE = {
    _ll.WHENCE_UNKNOWN: "unknown",
    _ll.WHENCE_RUNTIME: "runtime init",
    _ll.WHENCE_LEGACY_CAPI: "legacy C-API",
    _ll.WHENCE_CAPI: "C-API",
    _ll.WHENCE_XI: "cross-interpreter C-API",
    _ll.WHENCE_STDLIB: "_interpreters module",
}

is_shareable = _ll.is_shareable
is_running = _ll.is_running


def create(own_gil: bool = True) -> int:
    # "isolated": own GIL, own allocator, multi-phase modules only.
    # "legacy": the main GIL and allocator, so single-phase extension modules load.
    config = _ll.new_config("isolated" if own_gil else "legacy")
    return int(created(lambda: _ll.create(config), InterpreterError))


def destroy(interp_id: int) -> None:
    _ll.destroy(interp_id)


def list_all() -> list[tuple[int, str]]:
    return [(int(i), _WHENCE.get(w, "unknown")) for i, w in _ll.list_all()]


def get_current() -> tuple[int, str]:
    i, w = _ll.get_current()
    return int(i), _WHENCE.get(w, "unknown")


def get_main() -> tuple[int, str]:
    i, w = _ll.get_main()
    return int(i), _WHENCE.get(w, "unknown")


def whence(interp_id: int) -> str:
    return _WHENCE.get(_ll.whence(interp_id), "unknown")


def run(interp_id: int, source: str, shared: dict[str, object]) -> tuple[str, str] | None:
    if shared:
        _ll.set___main___attrs(interp_id, shared)
    info = _ll.exec(interp_id, source)
    if info is None:
        return None
    return info.type.__name__, info.msg
