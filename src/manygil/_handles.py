"""Objects made of native registry entries, which cross interpreters by their ids.

Each handle owns one reference to each of its entries and releases it when it is
garbage collected.  Pickling a handle (which is how it crosses to another interpreter:
pool arguments and results, ``Queue.put``, ``prepare_main``) takes one more reference
for the journey, which the unpickled handle adopts; so an object lives exactly as long
as a handle to it exists in any interpreter.
"""

from __future__ import annotations

import weakref

from . import _native

__all__ = ("Handle",)


class Handle:
    """Base class: subclasses set ``_ids`` through :meth:`_own` and may add state."""

    __slots__ = ("__weakref__", "_ids")

    _ids: tuple[int, ...]

    def _own(self, *ids: int) -> None:
        """Take ownership of one reference to each id (already counted for us)."""
        self._ids = ids
        weakref.finalize(self, _release_all, ids)

    def _state(self) -> tuple[object, ...]:
        """Extra state that travels with the ids (override)."""
        return ()

    def _restore(self, state: tuple[object, ...]) -> None:
        """Set the extra state on an unpickled handle (override)."""

    def __reduce__(self) -> tuple[object, ...]:
        for i in self._ids:
            _native.retain(i)  # owned by the pickle until it is loaded
        return (_adopt, (type(self), self._ids, self._state()))


def _release_all(ids: tuple[int, ...]) -> None:
    for i in ids:
        _native.release(i)


def _adopt(cls: type[Handle], ids: tuple[int, ...], state: tuple[object, ...]) -> Handle:
    self = cls.__new__(cls)
    self._own(*ids)
    self._restore(state)
    return self
