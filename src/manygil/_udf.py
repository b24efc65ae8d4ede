"""Column decoding for parallel UDFs: runs inside worker interpreters, pure Python.

pyarrow and duckdb refuse to load in an interpreter with its own GIL, so the main
interpreter sends a chunk's Arrow buffers as bytes and this module reads them with
``memoryview.cast``, calls the user's function row by row, and encodes the results as
Arrow buffers again, so the main interpreter builds the result array without a
per-row Python conversion.

A column is ``(kind, n, validity, data, offsets)``:

    kind     "q" "i" "h" "b" int64/32/16/8, "d" "f" double/float, "?" bool (bit-packed),
             "s" UTF-8 string (int32 offsets)
    validity the validity bitmap bytes, bit 0 = first row (b"" when there is no null)
    data     the values (for "s": the UTF-8 bytes of rows 0..n-1)
    offsets  for "s": n + 1 int32 offsets into data, starting at 0
"""

from __future__ import annotations

from array import array
from typing import Any

__all__ = ("decode", "encode", "run_rows")


def decode(column: tuple[str, int, bytes, bytes, bytes]) -> list[Any]:
    """The Python values of one column (None where the validity bit is 0)."""
    kind, n, validity, data, offsets = column
    if kind == "s":
        offs = memoryview(offsets).cast("i")
        values: list[Any] = [data[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    elif kind == "?":
        values = [bool(data[i >> 3] >> (i & 7) & 1) for i in range(n)]
    else:
        values = memoryview(data).cast(kind).tolist()[:n]  # type: ignore[call-overload]
    if validity:
        for i in range(n):
            if not validity[i >> 3] >> (i & 7) & 1:
                values[i] = None
    return values


def encode(kind: str, values: list[Any]) -> tuple[str, int, bytes, bytes, bytes]:
    """Arrow buffers for a result column; None becomes a null."""
    n = len(values)
    nulls = [i for i, v in enumerate(values) if v is None]
    validity = b""
    if nulls:
        bits = bytearray(b"\xff" * ((n + 7) // 8))
        for i in nulls:
            bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        validity = bytes(bits)
    if kind == "s":
        parts = [b"" if v is None else str(v).encode("utf-8") for v in values]
        offs = array("i", [0])
        total = 0
        for p in parts:
            total += len(p)
            offs.append(total)
        return kind, n, validity, b"".join(parts), offs.tobytes()
    if kind == "?":
        bits = bytearray((n + 7) // 8)
        for i, v in enumerate(values):
            if v:
                bits[i >> 3] |= 1 << (i & 7)
        return kind, n, validity, bytes(bits), b""
    zero = 0.0 if kind in "df" else 0
    return kind, n, validity, array(kind, [zero if v is None else v for v in values]).tobytes(), b""


class RowError(Exception):
    """A row of a parallel UDF raised; the message names the row and the arguments."""


def run_rows(
    fn: Any,
    columns: list[tuple[str, int, bytes, bytes, bytes]],
    out_kind: str,
    special_nulls: bool,
    null_on_error: bool,
) -> tuple[str, int, bytes, bytes, bytes]:
    """Call ``fn`` on every row of the chunk; the results as Arrow buffers."""
    cols = [decode(c) for c in columns]
    n = columns[0][1] if columns else 0
    out: list[Any] = []
    append = out.append
    for i in range(n):
        args = [c[i] for c in cols]
        if not special_nulls and None in args:
            append(None)
            continue
        try:
            append(fn(*args))
        except Exception as exc:
            if null_on_error:
                append(None)
                continue
            raise RowError(f"row {i} {tuple(args)!r}: {type(exc).__name__}: {exc}") from exc
    return encode(out_kind, out)
