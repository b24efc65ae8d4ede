"""Locks, events, semaphores, conditions and barriers that work across interpreters.

Each object is process-wide: pass it to another interpreter (a pool task's argument,
``Queue.put``, ``prepare_main``) and both sides use the same lock.  The API is the
``threading`` one, and a broken ``Barrier`` raises ``threading``'s own
``BrokenBarrierError``.  Waiting releases the waiting interpreter's GIL and sleeps on a
POSIX condition variable or semaphore; nothing polls.

    >>> from manygil.sync import Lock
    >>> lock = Lock()
    >>> with lock:
    ...     lock.locked()
    True
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import _native
from ._handles import Handle, carry, gone
from ._timeouts import check_timeout

__all__ = ("Barrier", "BoundedSemaphore", "BrokenBarrierError", "Condition", "Event", "Lock", "RLock", "Semaphore")

BrokenBarrierError = threading.BrokenBarrierError

_INT64_MAX = 2**63 - 1  # the native counters are signed 64-bit integers


def _timeout(blocking: bool, timeout: float) -> float | None:
    """``threading``'s (blocking, timeout) as the native layer's timeout."""
    if not blocking:
        if timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return 0
    if timeout == -1:
        return None
    return check_timeout(timeout)


def _wait_timeout(timeout: float | None) -> float | None:
    """The timeout of a wait that ``threading`` lets return at once when it is negative."""
    return check_timeout(timeout, negative_is_zero=True)


class _Context:
    """``with`` support for anything with acquire() and release()."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _load_sync(cls: type[_SyncBase], sid: int, state: tuple[object, ...]) -> _SyncBase:
    obj = cls.__new__(cls)
    try:
        _native.Sync.__init__(obj, sid)  # takes a reference
    except LookupError:
        raise gone(cls.__name__, sid) from None
    obj._restore(state)
    return obj


class _SyncBase(_native.Sync):
    """A C handle (fast acquire/release) that crosses interpreters by id."""

    def _create(self, value: int, limit: int) -> None:
        sid = _native.sync_create(value, limit)
        try:
            _native.Sync.__init__(self, sid)
        finally:
            _native.release(sid)  # the handle holds its own reference now

    def _state(self) -> tuple[object, ...]:
        return ()

    def _restore(self, state: tuple[object, ...]) -> None:
        pass

    def __reduce__(self) -> tuple[object, ...]:
        carry((self.id,))
        return (_load_sync, (type(self), self.id, self._state()))


class Lock(_SyncBase):
    """A mutual-exclusion lock shared by every interpreter it is passed to.

    ``acquire(blocking=True, timeout=-1)``, ``release()`` and ``with`` are those of
    ``threading.Lock``; ``release()`` of an unlocked lock raises ``RuntimeError``.
    """

    def __init__(self) -> None:
        self._create(1, 1)

    def locked(self) -> bool:
        """Whether some thread, in any interpreter, holds the lock."""
        return bool(self._count == 0)

    def __repr__(self) -> str:
        return f"<manygil.sync.Lock {'locked' if self.locked() else 'unlocked'}>"


class RLock(Handle, _Context):
    """A re-entrant lock: the thread that holds it may take it again.

    Ownership is by OS thread, so a pool worker that holds it in its interpreter and
    takes it again in the main interpreter (same thread) does not deadlock.
    """

    __slots__ = ()

    def __init__(self) -> None:
        # the lock itself, the owner's thread id, the recursion count
        self._own(_native.sync_create(1, 1), _native.sync_create(0, -1), _native.sync_create(0, -1))

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (again, if this thread holds it)."""
        lock, owner, count = self._ids
        me = threading.get_ident()
        if _native.sync_get(owner)[0] == me:
            _native.sync_add(count, 1)
            return True
        if not _native.sync_acquire(lock, _timeout(blocking, timeout)):
            return False
        _native.sync_set(owner, me)
        _native.sync_set(count, 1)
        return True

    def release(self) -> None:
        """Undo one acquire.

        Raises:
            RuntimeError: this thread does not hold the lock.
        """
        lock, owner, count = self._ids
        if _native.sync_get(owner)[0] != threading.get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        if _native.sync_add(count, -1) == 0:
            _native.sync_set(owner, 0)
            _native.sync_release(lock, 1)

    def _is_owned(self) -> bool:
        return bool(_native.sync_get(self._ids[1])[0] == threading.get_ident())

    def _release_save(self) -> int:
        lock, owner, count = self._ids
        saved = int(_native.sync_get(count)[0])
        _native.sync_set(count, 0)
        _native.sync_set(owner, 0)
        _native.sync_release(lock, 1)
        return saved

    def _acquire_restore(self, saved: int) -> None:
        lock, owner, count = self._ids
        _native.sync_acquire(lock, None)
        _native.sync_set(owner, threading.get_ident())
        _native.sync_set(count, saved)

    def __repr__(self) -> str:
        owner, count = (_native.sync_get(i)[0] for i in self._ids[1:])
        return f"<manygil.sync.RLock owner={owner} count={count}>"


class Semaphore(_SyncBase):
    """A counter of free places, shared by every interpreter it is passed to."""

    _bounded = False

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if value > _INT64_MAX:
            raise OverflowError(f"semaphore initial value must be at most 2**63 - 1, got {value}")
        self._create(value, value if self._bounded else -1)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a place; ``False`` if none was free in time."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        wait = _wait_timeout(timeout)
        return bool(super().acquire(blocking, -1 if wait is None else wait))

    def release(self, n: int = 1) -> None:
        """Give back ``n`` places.

        Raises:
            ValueError: a ``BoundedSemaphore`` would go above its initial value.
            OverflowError: the count would pass 2**63 - 1.
        """
        if n < 1:
            raise ValueError("n must be one or more")
        try:
            released = _native.sync_release(self.id, n)
        except OverflowError:  # past 64 bits (or n itself is)
            if not self._bounded:
                raise OverflowError(f"cannot release this semaphore by {n}: its count would pass 2**63 - 1") from None
            released = False
        if not released:
            raise ValueError("Semaphore released too many times")

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def value(self) -> int:
        """The number of free places now."""
        return int(self._count)


class BoundedSemaphore(Semaphore):
    """A semaphore that refuses to be released above its initial value."""

    _bounded = True


class Event(Handle):
    """A flag that threads in any interpreter can set, clear and wait for."""

    __slots__ = ()

    def __init__(self) -> None:
        self._own(_native.sync_create(0, -1))

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return bool(_native.sync_get(self._ids[0])[0])

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        _native.sync_set(self._ids[0], 1)

    def clear(self) -> None:
        """Reset the flag."""
        _native.sync_set(self._ids[0], 0)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set; ``False`` on timeout."""
        return bool(_native.sync_wait_nonzero(self._ids[0], _wait_timeout(timeout)))


class Condition(Handle, _Context):
    """A condition variable over a manygil ``Lock`` or ``RLock`` (an ``RLock`` by default)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: Lock | RLock | None = None) -> None:
        if lock is None:
            lock = RLock()
        if not isinstance(lock, (Lock, RLock)):
            raise TypeError(
                f"Condition needs a manygil.sync.Lock or RLock, got {type(lock).__name__}: "
                "a threading lock cannot be shared with other interpreters"
            )
        self._lock = lock
        self._own(_native.sync_create(0, -1))

    def _state(self) -> tuple[object, ...]:
        return (self._lock,)

    def _restore(self, state: tuple[object, ...]) -> None:
        self._lock = state[0]  # type: ignore[assignment]

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the underlying lock."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Free the underlying lock."""
        self._lock.release()

    def _check_owned(self, action: str = "wait") -> None:
        owned = self._lock._is_owned() if isinstance(self._lock, RLock) else self._lock.locked()
        if not owned:
            raise RuntimeError(f"cannot {action} on un-acquired lock")

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify (or the timeout), take the lock again."""
        self._check_owned()
        cid = self._ids[0]
        _native.cond_enter(cid)  # counted as a waiter before the lock is let go
        if isinstance(self._lock, RLock):
            saved = self._lock._release_save()
            try:
                return bool(_native.cond_wait(cid, _wait_timeout(timeout)))
            finally:
                self._lock._acquire_restore(saved)
        self._lock.release()
        try:
            return bool(_native.cond_wait(cid, _wait_timeout(timeout)))
        finally:
            self._lock.acquire()

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (checked after each notify) or the timeout."""
        import time

        timeout = _wait_timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None
            if end is not None:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters, in any interpreter (none if ``n`` < 1, as ``threading``)."""
        self._check_owned("notify")
        if n > 0:  # the native -1 means all
            _native.cond_notify(self._ids[0], n)

    def notify_all(self) -> None:
        """Wake every waiter."""
        self._check_owned("notify")
        _native.cond_notify(self._ids[0], -1)


class Barrier(Handle):
    """``parties`` threads, in any interpreters, wait until all of them have arrived.

    Unlike ``threading.Barrier``, ``action`` runs in the thread that gets index 0 just
    after the barrier opens, not before the others are released.
    """

    __slots__ = ("_action", "_parties", "_timeout")

    def __init__(self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None) -> None:
        if not isinstance(parties, int) or isinstance(parties, bool):
            raise TypeError(f"parties must be an int, got {parties!r}")
        if parties < 1:
            raise ValueError("parties must be > 0")
        if parties > _INT64_MAX:
            raise ValueError(f"parties must be at most 2**63 - 1, got {parties}")
        self._parties = parties
        self._action = action
        self._timeout = _wait_timeout(timeout)
        self._own(_native.sync_create(0, -1))

    def _state(self) -> tuple[object, ...]:
        return (self._parties, self._action, self._timeout)

    def _restore(self, state: tuple[object, ...]) -> None:
        self._parties, self._action, self._timeout = state  # type: ignore[assignment]

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the others; returns an index in ``range(parties)``.

        Raises:
            BrokenBarrierError: the barrier was aborted, reset, or a wait timed out.
        """
        if timeout is None:
            timeout = self._timeout
        index = _native.barrier_wait(self._ids[0], self._parties, _wait_timeout(timeout))
        if index < 0:
            raise BrokenBarrierError
        if index == 0 and self._action is not None:
            try:
                self._action()
            except BaseException:
                self.abort()
                raise
        return int(index)

    def reset(self) -> None:
        """Back to the initial state; current waiters get ``BrokenBarrierError``."""
        _native.barrier_set(self._ids[0], False)

    def abort(self) -> None:
        """Break the barrier: current and future waiters get ``BrokenBarrierError``."""
        _native.barrier_set(self._ids[0], True)

    @property
    def parties(self) -> int:
        """How many threads must arrive."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """How many threads wait now."""
        return int(_native.sync_get(self._ids[0])[0])

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken."""
        return bool(_native.sync_get(self._ids[0])[2])
