"""Stacks of every interpreter manygil runs, labelled by interpreter and thread.

``faulthandler`` and ``sys._current_frames()`` only see the interpreter they are
called from.  Every interpreter that manygil starts (pool workers, and interpreters
made by ``interpreters.create()``) runs a small agent thread that waits on a control
channel; asked for its stacks, it formats ``sys._current_frames()`` of its own
interpreter and sends the text back.  An interpreter that does not answer within the
timeout is reported as such: it is busy in C code that holds its GIL.

    main interpreter                           interpreter N
    dump_tracebacks() ── [DUMP][reply] ──► agent thread: format_stacks()
          ◄──────────── text on reply channel ──┘
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import TextIO

from . import _native, _worker

__all__ = ("cancel_dump_tracebacks_later", "dump_tracebacks", "dump_tracebacks_later", "register", "unregister")

_agents: dict[int, tuple[int, str]] = {}  # interpreter id -> (control channel, label)
_lock = threading.Lock()


def register(interp_id: int, control: int, label: str) -> None:
    """Record an interpreter's agent channel (taking a reference to it)."""
    _native.retain(control)
    with _lock:
        old = _agents.pop(interp_id, None)
        _agents[interp_id] = (control, label)
    if old is not None:
        _native.release(old[0])


def unregister(interp_id: int) -> None:
    with _lock:
        old = _agents.pop(interp_id, None)
    if old is not None:
        _native.release(old[0])


def _ask(control: int, timeout: float) -> str:
    reply = _native.chan_create(0)
    try:
        _native.chan_put(control, _worker.DUMP.to_bytes(8, "little") + reply.to_bytes(8, "little"), 0, None)
        item = _native.chan_get(reply, timeout)
    finally:
        _native.release(reply)
    if item is None:
        return f"  (no answer within {timeout:g} s: busy in C code that holds its GIL)\n"
    return item[1].decode()


def format_tracebacks(timeout: float = 1.0, interp_ids: list[int] | None = None) -> str:
    """The text that :func:`dump_tracebacks` writes."""
    from . import _backend

    out = []
    main_id = _backend.get_current()[0]
    if interp_ids is None:
        out.append(f"Interpreter {main_id} (this one):\n")
        names = {t.ident: t.name for t in threading.enumerate()}
        me = threading.get_ident()
        for ident, frame in _native.current_frames().items():  # not sys._current_frames()
            if ident == me:
                continue
            out.append(f"  thread {ident} ({names.get(ident, '?')}), most recent call last:\n")
            out.extend("    " + line for line in "".join(traceback.format_stack(frame)).splitlines(True))
    with _lock:
        agents = dict(_agents)
        for control, _label in agents.values():
            _native.retain(control)  # stays alive while we ask, even if unregistered meanwhile
    try:
        for interp_id, (control, label) in sorted(agents.items()):
            if interp_ids is not None and interp_id not in interp_ids:
                continue
            out.append(f"Interpreter {interp_id} ({label}):\n")
            try:
                out.append(_ask(control, timeout))
            except LookupError:
                out.append("  (gone)\n")
    finally:
        for control, _label in agents.values():
            _native.release(control)
    return "".join(out)


def dump_tracebacks(file: TextIO | None = None, *, timeout: float = 1.0) -> None:
    """Write the Python stack of every thread of every interpreter manygil started.

    Covers the current interpreter's threads, every worker of every
    ``InterpreterPoolExecutor`` and every interpreter made by ``interpreters.create()``,
    each labelled by interpreter id and thread, including interpreters busy in a
    pure-Python loop.  Unlike ``faulthandler.dump_traceback`` it needs a working
    interpreter (it is not for a crash), and it sees the other interpreters.

    Args:
        file: where to write (default ``sys.stderr``).
        timeout: how long to wait for each interpreter's answer.
    """
    stream = file if file is not None else sys.stderr
    stream.write(format_tracebacks(timeout))
    stream.flush()


_later: threading.Timer | None = None


def dump_tracebacks_later(
    timeout: float, repeat: bool = False, file: TextIO | None = None, exit: bool = False
) -> None:
    """Like ``faulthandler.dump_traceback_later``: dump after ``timeout`` seconds
    (again every ``timeout`` with ``repeat``) unless cancelled; ``exit`` then ends the
    process with status 1."""
    global _later
    cancel_dump_tracebacks_later()

    def fire() -> None:
        global _later
        dump_tracebacks(file)
        if exit:
            import os

            os._exit(1)
        if repeat:
            _schedule()

    def _schedule() -> None:
        global _later
        _later = threading.Timer(timeout, fire)
        _later.daemon = True
        _later.start()

    _schedule()


def cancel_dump_tracebacks_later() -> None:
    """Cancel a pending :func:`dump_tracebacks_later`."""
    global _later
    if _later is not None:
        _later.cancel()
        _later = None
