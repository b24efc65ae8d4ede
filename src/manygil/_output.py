"""The main interpreter's side of output forwarding.

What a task prints in a worker interpreter arrives here (on the worker's own thread,
through ``call_home``) and is written to *this* interpreter's ``sys.stdout`` or
``sys.stderr`` as they are at that moment: a redirected stream, pytest's capture or a
Jupyter cell all see it.  Logging records are handed to the logger of the same name.
"""

from __future__ import annotations

import pickle
import sys

from . import _worker

__all__ = ("handle_event", "log_level")


def log_level() -> int:
    """The root logger's level if this interpreter has logging set up, else -1."""
    logging = sys.modules.get("logging")
    if logging is None or not logging.root.handlers:
        return -1
    return int(logging.root.getEffectiveLevel())


def handle_event(event: bytes) -> None:
    """Write one OUTPUT event: ``[kind][payload]``."""
    kind, payload = event[0], event[1:]
    if kind == _worker.OUT_LOG:
        import logging

        data = pickle.loads(payload)
        record = logging.makeLogRecord(data)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
        return
    stream = sys.stdout if kind == _worker.OUT_STDOUT else sys.stderr
    if stream is None:
        return
    stream.write(payload.decode("utf-8", "surrogatepass"))
    stream.flush()


def home_callback(data: bytes) -> None:
    """``call_home`` target for threads that run ``Interpreter.exec``/``call``."""
    if data[:8] == _worker._EVENT and data[8] == _worker.OUTPUT:
        handle_event(data[9:])
