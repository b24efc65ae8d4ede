"""DuckDB scalar UDFs written in pure Python that run on every core.

DuckDB calls a Python UDF with the GIL held for a whole chunk (up to 2048 rows), so a
pure-Python UDF runs on one core whatever ``PRAGMA threads`` says.  Here DuckDB calls
an Arrow UDF in the main interpreter, which splits each chunk across a manygil pool::

    DuckDB thread ──► udf(*arrow arrays)      main interpreter (duckdb, pyarrow live here)
                       │ Arrow buffers as bytes, one part per worker (no per-row work)
                       ▼
                      _udf.run_rows(fn, ...)   worker interpreters: decode, fn(row), encode
                       │ result buffers
                       ▼
                      pa.Array.from_buffers → DuckDB

Waiting on the pool releases the GIL, so several DuckDB threads dispatch chunks at once.

Examples:
    >>> import duckdb
    >>> from manygil.duckdb import create_parallel_function
    >>> con = duckdb.connect()
    >>> def slow_square(x): return x * x
    >>> with create_parallel_function(con, "slow_square", slow_square, ["BIGINT"], "BIGINT", workers=2):
    ...     con.sql("select sum(slow_square(i)) from range(1000) t(i)").fetchall()[0][0]
    332833500
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import _udf
from .pool import InterpreterPoolExecutor

__all__ = ("ParallelFunction", "ParallelUDFError", "create_parallel_function")

# DuckDB type name -> (our column kind, pyarrow type name)
_TYPES = {
    "BIGINT": ("q", "int64"),
    "INTEGER": ("i", "int32"),
    "SMALLINT": ("h", "int16"),
    "TINYINT": ("b", "int8"),
    "DOUBLE": ("d", "float64"),
    "FLOAT": ("f", "float32"),
    "BOOLEAN": ("?", "bool_"),
    "VARCHAR": ("s", "string"),
}
_ITEMSIZE = {"q": 8, "i": 4, "h": 2, "b": 1, "d": 8, "f": 4}
_MIN_ROWS_PER_PART = 128


class ParallelUDFError(Exception):
    """A row of a parallel UDF raised; the message carries the worker's traceback."""


def _kind(duck_type: object, what: str) -> tuple[str, str]:
    name = str(duck_type).upper()
    if name not in _TYPES:
        raise TypeError(
            f"manygil.duckdb: {what} has type {name}, which parallel UDFs do not support; "
            f"use one of {', '.join(_TYPES)} (or con.create_function for other types)"
        )
    return _TYPES[name]


def _column(arr: Any, kind: str) -> tuple[str, int, bytes, bytes, bytes]:
    """A part of a chunk as Arrow buffers (offset 0), bytes the workers can read."""
    import pyarrow as pa

    if kind == "s" and arr.type != pa.string():
        arr = arr.cast(pa.string())
    arr = pa.concat_arrays([arr])  # a copy at offset 0: aligned bitmaps, rebased offsets
    n = len(arr)
    bufs = arr.buffers()
    validity = bufs[0][: (n + 7) // 8].to_pybytes() if arr.null_count and bufs[0] is not None else b""
    if kind == "s":
        offsets = bufs[1][: 4 * (n + 1)].to_pybytes()
        start = int.from_bytes(offsets[:4], "little", signed=True)
        end = int.from_bytes(offsets[-4:], "little", signed=True)
        data = bufs[2][start:end].to_pybytes() if bufs[2] is not None else b""
        if start:
            from array import array

            rebased = array("i", offsets)
            offsets = array("i", (o - start for o in rebased)).tobytes()
        return kind, n, validity, data, offsets
    if kind == "?":
        return kind, n, validity, bufs[1][: (n + 7) // 8].to_pybytes(), b""
    return kind, n, validity, bufs[1][: n * _ITEMSIZE[kind]].to_pybytes(), b""


def _array(part: tuple[str, int, bytes, bytes, bytes], pa_type: Any) -> Any:
    import pyarrow as pa

    kind, n, validity, data, offsets = part
    bitmap = pa.py_buffer(validity) if validity else None
    if kind == "s":
        return pa.Array.from_buffers(pa_type, n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pa.Array.from_buffers(pa_type, n, [bitmap, pa.py_buffer(data)])


class ParallelFunction:
    """A registered parallel UDF; ``close()`` (or ``with``) unregisters it and stops
    the pool if this object made it."""

    def __init__(self, con: Any, name: str, pool: InterpreterPoolExecutor, owns_pool: bool) -> None:
        self.con = con
        self.name = name
        self.pool = pool
        self._owns_pool = owns_pool

    def close(self) -> None:
        """Unregister the function and shut the pool down if this object owns it."""
        try:
            self.con.remove_function(self.name)
        except Exception:  # noqa: BLE001 - the connection may be closed already
            pass
        if self._owns_pool:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> ParallelFunction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_parallel_function(
    con: Any,
    name: str,
    fn: Callable[..., Any],
    parameters: Sequence[object],
    return_type: object,
    *,
    workers: int | None = None,
    pool: InterpreterPoolExecutor | None = None,
    null_handling: str = "default",
    exception_handling: str = "default",
    side_effects: bool = False,
) -> ParallelFunction:
    """Register ``fn`` as a DuckDB scalar function that runs in parallel interpreters.

    Args:
        con: a ``duckdb.DuckDBPyConnection``.
        name: the SQL name of the function.
        fn: a pure-Python function of one value per parameter (importable by module
            and name, or any callable when cloudpickle is installed).
        parameters: DuckDB types of the parameters (``"BIGINT"``, ``duckdb.typing.VARCHAR``, ...).
        return_type: the DuckDB type of the result.
        workers: the pool's size when ``pool`` is not given (default: cores).
        pool: an ``InterpreterPoolExecutor`` to use instead of a new one.
        null_handling: "default" (a NULL argument gives NULL without calling ``fn``) or
            "special" (``fn`` gets ``None``), as in ``con.create_function``.
        exception_handling: "default" (the query fails with the row's error and its
            traceback) or "return_null" (the row's result is NULL).
        side_effects: as in ``con.create_function``.

    Returns:
        A handle whose ``close()`` unregisters the function.

    Raises:
        TypeError: a parameter or the return type is not supported.
        ValueError: a bad ``null_handling`` or ``exception_handling``.
    """
    import pyarrow as pa

    if null_handling not in ("default", "special"):
        raise ValueError(f"null_handling must be 'default' or 'special', got {null_handling!r}")
    if exception_handling not in ("default", "return_null"):
        raise ValueError(f"exception_handling must be 'default' or 'return_null', got {exception_handling!r}")
    kinds = [_kind(t, f"parameter {i + 1}")[0] for i, t in enumerate(parameters)]
    out_kind, out_type_name = _kind(return_type, "the return type")
    out_type = getattr(pa, out_type_name)()
    special = null_handling == "special"
    null_on_error = exception_handling == "return_null"
    owns = pool is None
    if pool is None:
        pool = InterpreterPoolExecutor(workers)
    size = pool._max_workers

    def udf(*arrays: Any) -> Any:
        arrays = tuple(a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays)
        n = len(arrays[0]) if arrays else 0
        # several parts per worker: rows differ in cost, and the chunk waits for its slowest part
        parts = max(1, min(4 * size, n // _MIN_ROWS_PER_PART))
        bounds = [n * k // parts for k in range(parts + 1)]
        futures = [
            pool.submit(
                _udf.run_rows,
                fn,
                [_column(a.slice(lo, hi - lo), k) for a, k in zip(arrays, kinds)],
                out_kind,
                special,
                null_on_error,
            )
            for lo, hi in zip(bounds, bounds[1:])
        ]
        try:
            results = [f.result() for f in futures]
        except _udf.RowError as exc:
            raise ParallelUDFError(f"manygil UDF {name}: {exc}\n{exc.__cause__ or ''}") from None
        if len(results) == 1:
            return _array(results[0], out_type)
        return pa.concat_arrays([_array(r, out_type) for r in results])

    import inspect

    # DuckDB counts the function's parameters: give *arrays one per SQL parameter.
    udf.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(kinds))]
    )
    con.create_function(
        name, udf, list(parameters), return_type, type="arrow",
        null_handling="special", exception_handling="default", side_effects=side_effects,
    )
    return ParallelFunction(con, name, pool, owns)
