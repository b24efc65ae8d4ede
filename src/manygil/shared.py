"""Zero-copy memory that every interpreter of the process can use.

A ``SharedBuffer`` is a block of process memory with a reference count kept by
manygil's native layer.  Sending it to another interpreter (a pool task's argument or
result, ``Queue.put``, ``prepare_main``) sends its id, not its bytes: O(1) whatever its
size.  Every interpreter sees the same bytes through the buffer protocol
(``memoryview(buf)``, ``numpy.frombuffer(buf)``, ``bytes(buf[a:b])``), every access is
bounds-checked, and the memory is freed when the last handle in any interpreter is
gone, never earlier.  No API takes a raw address.

On Linux a ``SharedBuffer`` also reaches the pool's process workers (tasks that run in
a process because an extension they need refuses an own-GIL interpreter): its memory
is a memfd that the process maps, so writes there are seen here, and sent back it is
the same buffer again.

    >>> from manygil.shared import SharedArray
    >>> a = SharedArray((2, 3), "d")
    >>> a[1, 2] = 7.5
    >>> a.tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 7.5]]
"""

from __future__ import annotations

import operator
import os
import struct
import sys
from collections.abc import Iterable
from typing import Any

from . import _native
from ._handles import Handle, carry, foreign_kept, gone

__all__ = ("SharedArray", "SharedBuffer", "SharedValue")


class _Bytes:
    """The byte access both kinds of shared buffer have (through the buffer protocol)."""

    __slots__ = ()

    def _live_id(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.nbytes)  # type: ignore[attr-defined]

    def __getitem__(self, key: int | slice) -> Any:
        """``buf[i]`` is an int; ``buf[a:b]`` is a memoryview of the same memory."""
        self._live_id()
        with memoryview(self) as view:  # type: ignore[arg-type]
            if isinstance(key, slice):
                return view[key]  # a view: keeps an export until it is released
            return view[key]

    def __setitem__(self, key: int | slice, value: Any) -> None:
        self._live_id()
        with memoryview(self) as view:  # type: ignore[arg-type]
            view[key] = value

    def read(self, offset: int, size: int) -> bytes:
        """A copy of ``size`` bytes from ``offset``.

        Raises:
            IndexError: the range is not inside the buffer.
        """
        self._check_range(offset, size)
        with memoryview(self) as view:  # type: ignore[arg-type]
            return bytes(view[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in at ``offset``.

        Raises:
            IndexError: the data would not fit inside the buffer.
            TypeError: this handle is read-only.
        """
        src = memoryview(data).cast("B")
        self._check_range(offset, src.nbytes)
        with memoryview(self) as view:  # type: ignore[arg-type]
            view[offset : offset + src.nbytes] = src

    def _check_range(self, offset: int, size: int) -> None:
        self._live_id()
        n = len(self)
        if offset < 0 or size < 0 or offset + size > n:
            raise IndexError(
                f"range [{offset}, {offset + size}) is outside this SharedBuffer of {n} bytes"
            )


class SharedBuffer(_Bytes, _native.BlockView):
    """``nbytes`` zeroed bytes of process memory, shared with every interpreter it is sent to.

    Args:
        nbytes: the size in bytes.

    Raises:
        ValueError: ``nbytes`` is negative or not an int.
        MemoryError: ``nbytes`` is more than the machine's memory and swap.
    """

    def __init__(self, nbytes: int) -> None:
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ValueError(f"SharedBuffer size must be a non-negative int, got {nbytes!r}")
        if nbytes > sys.maxsize:
            raise MemoryError(f"cannot make a SharedBuffer of {nbytes} bytes: no process can address so much")
        block = _native.block_create(nbytes)
        try:
            super().__init__(block)
        finally:
            _native.release(block)  # the handle holds its own reference now

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SharedBuffer:
        """A new buffer holding a copy of ``data``."""
        view = memoryview(data).cast("B")
        buf = cls(view.nbytes)
        with memoryview(buf) as target:
            target[:] = view
        return buf

    def readonly_view(self) -> SharedBuffer:
        """Another handle on the same memory whose buffers are read-only."""
        return _load_block(self._live_id(), True)

    def _live_id(self) -> int:
        if self.released:
            raise ValueError("cannot use this SharedBuffer: it was released")
        return int(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        block = self._live_id()
        kept = foreign_kept()
        if kept is not None:
            return self._to_process(block, kept)
        carry((block,))
        return (_load_block, (block, bool(self.readonly)))

    def _to_process(self, block: int, kept: list[Any] | tuple[()]) -> tuple[Any, ...]:
        """How this buffer reaches a process worker: as its memfd, mapped there."""
        from ._exceptions import NotShareableError

        if isinstance(kept, tuple):
            why = "a SharedBuffer made in a process worker cannot leave it; return bytes(buf) or a numpy array"
        elif not sys.platform.startswith("linux"):  # the worker maps a memfd through /proc
            why = (f"cannot send {self!r} to a process worker on {sys.platform}: a SharedBuffer or SharedArray "
                   "reaches a process worker only on Linux (its memory is a memfd that the worker maps); "
                   "pass bytes(buf) or a numpy array instead")
        elif (fd := _native.block_fd(block)) < 0:
            why = ("this SharedBuffer cannot reach a process worker: it was made when no memfd could be "
                   "created (too many open files?); pass bytes or a numpy array instead")
        else:
            kept.append(self)  # alive while the process may map it
            return (_mapped_buffer, (os.getpid(), fd, block, int(self.nbytes), bool(self.readonly)))
        raise NotShareableError(why)

    def __repr__(self) -> str:
        if self.released:
            return "<SharedBuffer released>"
        ro = " read-only" if self.readonly else ""
        return f"<SharedBuffer id={self.id} nbytes={self.nbytes}{ro}>"


def _load_block(block: int, readonly: bool) -> SharedBuffer:
    buf = SharedBuffer.__new__(SharedBuffer)
    try:
        _native.BlockView.__init__(buf, block, readonly)  # takes a reference
    except LookupError:
        raise gone("SharedBuffer", block) from None
    return buf


class MappedBuffer(_Bytes):
    """A ``SharedBuffer`` as a pool's process worker sees it: the same memory, mapped
    from the pool's process (Linux), with the same methods.  Sent back (a task's
    result), it is that process's ``SharedBuffer`` again."""

    __slots__ = ("_map", "id", "nbytes", "readonly")

    def __init__(self, mapping: Any, block: int, nbytes: int, readonly: bool) -> None:
        self._map = mapping
        self.id = block
        self.nbytes = nbytes
        self.readonly = readonly

    def _live_id(self) -> int:
        return int(self.id)

    def __buffer__(self, flags: int, /) -> memoryview:
        view = memoryview(self._map)[: self.nbytes]
        return view.toreadonly() if self.readonly else view

    def __release_buffer__(self, view: memoryview, /) -> None:
        view.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_block, (self.id, self.readonly))  # the caller holds it meanwhile

    def __repr__(self) -> str:
        ro = " read-only" if self.readonly else ""
        return f"<SharedBuffer id={self.id} nbytes={self.nbytes}{ro} mapped in process {os.getpid()}>"


def _mapped_buffer(pid: int, fd: int, block: int, nbytes: int, readonly: bool) -> MappedBuffer:
    """In a process worker: map the memfd of process ``pid``'s block."""
    import mmap

    with open(f"/proc/{pid}/fd/{fd}", "rb" if readonly else "r+b") as f:
        mapping = mmap.mmap(f.fileno(), max(nbytes, 1), access=mmap.ACCESS_READ if readonly else mmap.ACCESS_WRITE)
    return MappedBuffer(mapping, block, nbytes, readonly)


_DTYPES = {
    "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d", "bool": "?",
    "b": "b", "B": "B", "h": "h", "H": "H", "i": "i", "I": "I", "l": "q", "L": "Q",
    "q": "q", "Q": "Q", "f": "f", "d": "d", "?": "?",
}
_NUMPY = {"b": "int8", "B": "uint8", "h": "int16", "H": "uint16", "i": "int32", "I": "uint32",
          "q": "int64", "Q": "uint64", "f": "float32", "d": "float64", "?": "bool"}


def _typecode(dtype: object) -> str:
    name = getattr(dtype, "name", dtype)  # a numpy dtype, or a numpy scalar type
    if isinstance(dtype, type):
        name = dtype.__name__
    code = _DTYPES.get(str(name))
    if code is None:
        raise TypeError(
            f"unsupported dtype {dtype!r}: use one of {', '.join(sorted(k for k in _DTYPES if len(k) > 1))} "
            "or an array typecode"
        )
    return code


def _empty_lists(shape: tuple[int, ...]) -> list[Any]:
    """``tolist()`` of an empty array of this shape (as numpy's: (2, 0) is [[], []])."""
    if len(shape) == 1 or shape[0] == 0:
        return []
    return [_empty_lists(shape[1:]) for _ in range(shape[0])]


class SharedArray:
    """A typed, shaped array over a ``SharedBuffer``; crosses interpreters without copying.

    Args:
        shape: an int or a tuple of ints.
        dtype: an array typecode ("d", "q", ...) or a numpy dtype name ("float64", ...).
        buffer: an existing ``SharedBuffer`` to view (default: a new zeroed one).
        offset: where the array starts in ``buffer``, in bytes.

    An array with a 0 in its shape is empty; its buffer protocol view is 1-D (a
    memoryview cannot have a 0 in its shape), ``numpy()`` and ``tolist()`` keep the shape.

    Raises:
        TypeError: unsupported dtype, or ``buffer`` is not a ``SharedBuffer``.
        ValueError: bad shape, or the array does not fit in ``buffer``.
    """

    __slots__ = ("_view", "buffer", "dtype", "offset", "shape")

    def __init__(
        self, shape: int | Iterable[int], dtype: object = "d", *, buffer: SharedBuffer | None = None, offset: int = 0
    ) -> None:
        given = shape
        shape = (shape,) if isinstance(shape, int) else tuple(shape) if isinstance(shape, Iterable) else ()
        if not shape or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in shape):
            raise ValueError(f"shape must be non-negative ints, got {given!r}")
        code = _typecode(dtype)
        count = 1
        for n in shape:
            count *= n
        nbytes = count * struct.calcsize(code)
        if buffer is None:
            buffer = SharedBuffer(nbytes)
        elif not isinstance(buffer, _Bytes):  # a MappedBuffer is one, in a process worker
            raise TypeError(
                f"SharedArray needs a SharedBuffer, got {type(buffer).__name__}: its memory is not shared "
                "with other interpreters; copy it into one with SharedBuffer.from_bytes(data)"
            )
        if offset < 0 or offset + nbytes > len(buffer):
            raise ValueError(
                f"an array of shape {shape} and dtype {_NUMPY[code]} needs {nbytes} bytes at offset {offset}; "
                f"the buffer has {len(buffer)}"
            )
        self.buffer = buffer
        self.shape = shape
        self.dtype = _NUMPY[code]
        self.offset = offset
        view = memoryview(buffer)[offset : offset + nbytes].cast("B")
        # a memoryview cannot have a 0 in its shape: an empty array's view is 1-D
        self._view = view.cast(code, shape) if count else view.cast(code)  # type: ignore[call-overload]

    @property
    def nbytes(self) -> int:
        """The size of the array in bytes."""
        return int(self._view.nbytes)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        """An element (``a[i]``, ``a[i, j]``) or, for a 1-D array, a view (``a[i:j]``)."""
        if isinstance(key, slice):
            if len(self.shape) != 1:
                raise TypeError("slicing is supported on 1-D arrays; index with a[i, j] or use .numpy()")
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("slices of a SharedArray must have step 1 (they are views)")
            itemsize = self._view.itemsize
            return SharedArray(max(0, stop - start), self.dtype, buffer=self.buffer, offset=self.offset + start * itemsize)
        return self._view[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, slice):
            target = self[key]
            values = list(value)
            if len(values) != len(target):
                raise ValueError(f"cannot assign {len(values)} values to a slice of {len(target)}")
            for i, v in enumerate(values):
                target._view[i] = v
            return
        self._view[key] = value

    def __buffer__(self, flags: int, /) -> memoryview:
        """The buffer protocol (PEP 688): ``memoryview(a)``, ``numpy.asarray(a)`` and
        ``numpy.frombuffer(a, ...)`` see the array's memory, typed and shaped."""
        return memoryview(self._view)

    def __release_buffer__(self, view: memoryview, /) -> None:
        view.release()

    def tolist(self) -> list[Any]:
        """The values as (nested) lists."""
        if not self._view.nbytes:
            return _empty_lists(self.shape)
        return self._view.tolist()  # type: ignore[no-any-return]

    def numpy(self) -> Any:
        """A numpy array on the same memory (no copy); only where numpy imports."""
        import numpy

        return numpy.frombuffer(self.buffer, dtype=self.dtype, count=self._view.nbytes // self._view.itemsize,
                                offset=self.offset).reshape(self.shape)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedArray, (self.shape, self.dtype), {"buffer": self.buffer, "offset": self.offset})

    def __setstate__(self, state: dict[str, Any]) -> None:
        SharedArray.__init__(self, self.shape, self.dtype, **state)

    def __repr__(self) -> str:
        return f"<SharedArray shape={self.shape} dtype={self.dtype} buffer id={self.buffer.id}>"


def _integer(value: int) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"a SharedValue holds an integer, got {value!r}") from None


def _int64(value: int) -> int:
    value = _integer(value)
    if not -(2**63) <= value < 2**63:
        raise OverflowError(f"a SharedValue holds a signed 64-bit integer, from -2**63 to 2**63 - 1; got {value}")
    return value


class SharedValue(Handle):
    """A 64-bit integer that every interpreter can read and update atomically.

    Raises:
        OverflowError: a value, or the result of ``add``, outside [-2**63, 2**63 - 1]
            (it never wraps).
    """

    __slots__ = ()

    def __init__(self, value: int = 0) -> None:
        self._own(_native.sync_create(_int64(value), -1))

    @property
    def value(self) -> int:
        """The current value."""
        return int(_native.sync_get(self._ids[0])[0])

    @value.setter
    def value(self, new: int) -> None:
        _native.sync_set(self._ids[0], _int64(new))

    def add(self, delta: int = 1) -> int:
        """Add ``delta`` atomically; returns the new value."""
        delta = _integer(delta)
        try:
            return int(_native.sync_add(self._ids[0], delta))
        except OverflowError:
            raise OverflowError(
                f"cannot add {delta} to {self!r}: the result would leave the range of a SharedValue, "
                "a signed 64-bit integer (-2**63 to 2**63 - 1)"
            ) from None

    def compare_and_set(self, expected: int, new: int) -> bool:
        """Set to ``new`` only if the value is ``expected``; whether it was set."""
        new, expected = _int64(new), _integer(expected)
        if not -(2**63) <= expected < 2**63:
            return False  # never the value
        return bool(_native.sync_cas(self._ids[0], expected, new))

    def __repr__(self) -> str:
        return f"<SharedValue {self.value}>"
