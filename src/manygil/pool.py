"""A ``concurrent.futures`` executor whose workers are interpreters with their own GIL.

Examples:
    >>> from manygil.pool import InterpreterPoolExecutor
    >>> with InterpreterPoolExecutor(2) as pool:
    ...     print(list(pool.map(pow, [2, 3], [5, 2])))
    [32, 9]
"""

from __future__ import annotations

from ._pool import InterpreterFuture, InterpreterPoolExecutor

__all__ = ("InterpreterFuture", "InterpreterPoolExecutor")
