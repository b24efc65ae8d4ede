"""manygil: many GILs, one process.

Run pure-Python work on every core with CPython's per-interpreter GIL (PEP 684):
a ``concurrent.futures`` pool of interpreters, the PEP 734 interpreter API on 3.12+,
and the tools to see what goes on inside them.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 12):
    _found = ".".join(map(str, sys.version_info[:3]))
    raise ImportError(
        f"manygil needs CPython 3.12 or newer for per-interpreter GILs; this is {_found}"
    ) from None

from ._exceptions import BrokenInterpreterPool, RemoteError
from .pool import InterpreterFuture, InterpreterPoolExecutor

__version__ = "0.1.0"

__all__ = ("BrokenInterpreterPool", "InterpreterFuture", "InterpreterPoolExecutor", "RemoteError", "__version__")
