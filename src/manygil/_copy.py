"""A value's bytes for another interpreter: the native copier (``_copier.c``) for trees of
built-in objects, pickle for what is not one.

    dumps(value) ─► copy_dumps walks the tree ─► [0xC7 header][records][leaves' pickle]
                    (None: a leaf itself, or a cycle through a tuple: the caller pickles)
    loads(data)  ─► the first byte: 0xC7 a copy (copy_loads), else a pickle (pickle.loads)

The leaves (objects of other types: functions, instances of the user's classes,
subclasses of built-ins) are pickled together, once, after the walk.  A leaf whose
pickle reaches into the tree (an object that holds a list the value also holds) would
come back with a copy of that list, not the list itself: the whole value is pickled
instead, which keeps every identity.

Imported by every worker interpreter: only ``_pickle`` and ``_native`` here.
"""

from __future__ import annotations

import _pickle as pickle  # the C module: importing pickle.py would cost every worker
import io

from . import _native

TYPE_CHECKING = False  # not typing's: importing typing would cost every worker
if TYPE_CHECKING:
    from typing import Any

# types' FunctionType, BuiltinFunctionType and ModuleType, without importing types in
# every worker
_FunctionType = type(lambda: None)
_BuiltinFunctionType = type(len)
_ModuleType = type(io)

MAGIC = 0xC7  # the first byte of a copy; a pickle's is 0x80 (PROTO)

__all__ = ("MAGIC", "dumps", "leaves_pickle", "loads")



def _by_name(leaf: object) -> bool:
    """Whether ``leaf`` pickles by name alone (module and qualified name), so that its
    pickle holds no object of the tree: a function, a class, a built-in function of a
    module; not a bound method of an object (``items.append`` pickles ``items``)."""
    kind = type(leaf)
    if kind is _FunctionType or kind is type:
        return True
    if kind is _BuiltinFunctionType:
        owner = getattr(leaf, "__self__", None)
        return owner is None or type(owner) is _ModuleType
    return False


def leaves_pickle(leaves: list[Any], shared: set[int] | None) -> bytes | None:
    """The leaves' pickle, or None when the whole value must be pickled instead: a leaf
    does not pickle with plain pickle (the caller's own fallbacks take over), or its
    pickle holds one of ``shared``, the ids of the tree's containers that may be
    referenced twice."""
    if shared is None or all(_by_name(leaf) for leaf in leaves):
        try:
            return pickle.dumps(leaves, protocol=5)
        except Exception:  # noqa: BLE001 - pickled again as a whole, which says why
            return None
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=5)
    try:
        pickler.dump(leaves)
    except Exception:  # noqa: BLE001 - as above
        return None
    if not shared.isdisjoint(pickler.memo.copy()):
        return None
    return buf.getvalue()


def dumps(obj: object) -> bytes | None:
    """``obj`` copied, or None when it must be pickled (see the module's docstring)."""
    return _native.copy_dumps(obj, leaves_pickle)


def loads(data: bytes | memoryview) -> Any:
    """A value from :func:`dumps`' bytes or from a pickle."""
    if data[0] == MAGIC:
        return _native.copy_loads(data, pickle.loads)
    return pickle.loads(data)
