"""Objects made of native registry entries, which cross interpreters by their ids.

Each handle owns one reference to each of its entries and releases it when it is
garbage collected.  Crossing is by pickle, and every pickle that manygil makes for a
transport is a *payload* that owns its references ("pins")::

    dumps(obj) ─ collect() ─► (bytes, pins)   each handle inside: retain(id), pins += id
    loads(bytes)            ─► handle          takes a reference of its own: the same
                                               payload may be loaded many times (initargs)
    release_pins(pins)                         by whoever drops the payload: after its last
                                               load, or unloaded (cancelled, dropped, failed)

A channel item carries its pins natively: the getter receives them with the item, and
a channel freed with items still in it releases theirs.  A handle pickled outside a
manygil transport (``pickle.dumps`` by the user, ``copy.deepcopy``) holds no reference:
each load takes its own while the object lives, and fails with a ``LookupError`` that
says so once it is gone.  So such a pickle may be loaded any number of times, and one
never loaded keeps nothing alive.  (It used to own one reference that its one load
adopted: a second load took another handle's, and freed the object under it.)
"""

from __future__ import annotations

import _thread  # not threading: workers import this module, and would pay for threading's import

from . import _native

TYPE_CHECKING = False  # typing is not imported at run time: workers import this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ("Handle", "carry", "collect", "dump_foreign", "foreign_kept", "gone", "release_pins", "retain_all")

_local = _thread._local()  # threading.local


def carry(ids: tuple[int, ...]) -> None:
    """For a pickle that is being made: when a payload collects pins, take one
    reference per id for it; else (a pickle outside manygil's transports) take none.
    Either way each load takes its own."""
    if getattr(_local, "foreign", None) is not None:
        raise TypeError(
            "manygil's shared objects (SharedValue, Queue, the manygil.sync locks) live in "
            "this process and cannot reach a process worker"
        )
    pins = getattr(_local, "pins", None)
    if pins is None:
        return
    for i in ids:
        _native.retain(i)
    pins.extend(ids)


def gone(what: str, i: int) -> LookupError:
    """The error of a load whose object no longer exists."""
    return LookupError(
        f"cannot load a {what}: the object it was pickled from (id {i}) is gone; a pickle "
        "holds no reference of its own, so keep the object alive until the pickle is loaded"
    )


def retain_all(what: str, ids: tuple[int, ...]) -> None:
    """Take one reference per id for a handle being loaded, or none (``gone``)."""
    for n, i in enumerate(ids):
        try:
            _native.retain(i)
        except LookupError:
            release_pins(ids[:n])
            raise gone(what, i) from None


def dump_foreign(dump: Callable[[Any], T], obj: Any, kept: list[Any] | None = None) -> T:
    """``dump(obj)`` for another process: a manygil handle inside raises TypeError, but
    for shared buffers, which go as memory the process maps when ``kept`` is a list (the
    caller keeps them alive while the process may use them), else raise too."""
    _local.foreign = kept if kept is not None else ()
    try:
        return dump(obj)
    finally:
        _local.foreign = None


def foreign_kept() -> list[Any] | tuple[()] | None:
    """While ``dump_foreign`` runs: the list that keeps shared buffers alive, or () when
    they cannot go; None otherwise."""
    return getattr(_local, "foreign", None)


def collect(dump: Callable[[Any], T], obj: Any) -> tuple[T, tuple[int, ...]]:
    """``dump(obj)`` and the pins the result owns (see the module docstring)."""
    outer = getattr(_local, "pins", None)
    pins: list[int] = []
    _local.pins = pins
    try:
        out = dump(obj)
    except BaseException:
        release_pins(pins)
        raise
    finally:
        _local.pins = outer
    return out, tuple(pins)


def release_pins(pins: tuple[int, ...] | list[int]) -> None:
    """Drop a payload's references (after its last load, or instead of any)."""
    for i in pins:
        _native.release(i)


class Handle:
    """Base class: subclasses set ``_ids`` through :meth:`_own` and may add state."""

    __slots__ = ("__weakref__", "_ids")

    _ids: tuple[int, ...]

    def _own(self, *ids: int) -> None:
        """Take ownership of one reference to each id (already counted for us)."""
        import weakref

        self._ids = ids
        weakref.finalize(self, _release_all, ids)

    def _state(self) -> tuple[object, ...]:
        """Extra state that travels with the ids (override)."""
        return ()

    def _restore(self, state: tuple[object, ...]) -> None:
        """Set the extra state on an unpickled handle (override)."""

    def __reduce__(self) -> tuple[object, ...]:
        carry(self._ids)
        return (_load, (type(self), self._ids, self._state()))


def _release_all(ids: tuple[int, ...]) -> None:
    for i in ids:
        _native.release(i)


def _load(cls: type[Handle], ids: tuple[int, ...], state: tuple[object, ...]) -> Handle:
    self = cls.__new__(cls)
    retain_all(cls.__name__, ids)
    self._own(*ids)
    self._restore(state)
    return self


# ---------------------------------------------------------------------- large buffers

BIG = 1 << 16  # bytes and bytearrays this large cross as a native block
_KINDS = {bytes: 0, bytearray: 1, memoryview: 2}


class _OutOfBand:
    """A large ``bytes``/``bytearray`` (or any ``memoryview``) on its way to another
    interpreter: a copy in a native block, which the payload owns as one of its pins,
    so the value is copied once each way instead of through pickle, the task record
    and the channel.

    ``borrow`` (a ``bytes`` only): the block is the object's own memory, and the one
    copy is made by the interpreter that loads it.  The sender keeps this object alive
    while a load may come; when it goes, a block still held by others takes a copy of
    its own, and one held by nobody else refuses to load, instead of reading memory that
    may be freed (``_native.block_disown``)."""

    __slots__ = ("block", "kind", "value")

    def __init__(self, value: bytes | bytearray | memoryview, kind: int, borrow: bool = False) -> None:
        self.value: bytes | None = None
        if borrow and type(value) is bytes:
            self.block = _native.block_borrow(value)
            self.value = value
        else:
            if isinstance(value, memoryview) and not value.c_contiguous:
                value = value.tobytes()
            self.block = _native.block_from(value)
        self.kind = kind

    def __reduce__(self) -> tuple[object, ...]:
        carry((self.block,))  # one reference for the payload, per pickle made
        return (_load_out_of_band, (self.block, self.kind))

    def __del__(
        self, release: Callable[[int], None] = _native.release, disown: Callable[[int], None] = _native.block_disown
    ) -> None:
        if self.value is not None:
            disown(self.block)  # before the value can go (the slot is cleared after __del__)
        release(self.block)


# What a pool worker's last large result lent (see ``_worker.serve``): let go of right
# before this interpreter makes its next large value, so that the allocator gives the
# new value the memory just freed.  Let go of earlier, small allocations in between
# (unpickling the next task) split that free memory, and the new value, no longer
# fitting, took fresh pages from the system: 4,096 page faults per 16 MiB, every other
# task, seen on CPython 3.14 with glibc 2.43.
lent: list[object] = []


def _load_out_of_band(block: int, kind: int) -> bytes | bytearray | memoryview:
    lent.clear()
    if kind == 0:
        return _native.block_bytes(block)
    data = _native.block_bytes(block, True)
    return data if kind == 1 else memoryview(data)


def out_of_band_value(value: object, keep: list[object] | None = None) -> object:
    """A stand-in that crosses as a native block for a large bytes-like value (or any
    memoryview); anything else as it is.  With ``keep``, a ``bytes`` is borrowed, not
    copied, and its stand-in goes into ``keep``, which the caller holds until no
    interpreter can load the value any more."""
    kind = _KINDS.get(type(value))  # type: ignore[call-overload]
    if kind is None or (kind < 2 and len(value) < BIG):  # type: ignore[arg-type]
        return value
    if keep is None:
        return _OutOfBand(value, kind)  # type: ignore[arg-type]
    stand_in = _OutOfBand(value, kind, borrow=True)  # type: ignore[arg-type]
    if stand_in.value is not None:  # borrowed (a bytes), not copied
        keep.append(stand_in)
    return stand_in


def out_of_band(args: tuple[Any, ...], keep: list[object] | None = None) -> tuple[Any, ...]:
    """``args`` with :func:`out_of_band_value` applied to each; ``args`` itself when
    there is nothing to replace."""
    for value in args:
        if type(value) in _KINDS:
            return tuple(out_of_band_value(v, keep) for v in args)
    return args
