"""``multiprocessing.pool.Pool``'s API, run on interpreters with their own GIL.

``manygil.Pool`` is the standard library's ``Pool`` (``apply``, ``map``, ``imap``,
``starmap`` and their ``_async`` forms, ``close``, ``join``, ``terminate``, the ``with``
block), built on :class:`manygil.InterpreterPoolExecutor`: each task, or each chunk of a
map, is one of the executor's tasks, so a function whose module refuses an own-GIL
interpreter runs in a process worker, as in the executor.  Results are the standard
library's too: ``AsyncResult.get(timeout)`` raises ``multiprocessing.TimeoutError``, a
task's exception is re-raised as itself, ``map`` and ``imap`` keep the input's order and
``imap_unordered`` gives results as they finish.

Examples:
    >>> from manygil import Pool
    >>> with Pool(2) as pool:
    ...     print(pool.map(abs, [-1, -2, 3]))
    [1, 2, 3]

One call's trip::

    caller: apply_async / map_async ──► chunks ──► executor ──► futures
    caller: imap ──► feeder thread ───────┘   (at most 2 x processes chunks in flight)
                                                       │ done (any thread)
    result._chunk(i, outcome) ◄──────────────────────────┘
        └─ complete: no callback ─► ready
                     callback ────► callback thread: callback(value) or
                                    error_callback(exc), then ready

Who runs what:

* the caller's thread: the pool's methods; ``get``, ``wait`` and ``next`` wait on the
  result's condition.
* a feeder thread per ``imap``/``imap_unordered`` call, as multiprocessing's task
  handler: it reads the iterable and submits its chunks, at most ``2 x processes`` of
  them unfinished at a time, so that the calls made after it are not queued behind all
  of it (multiprocessing queues the whole iterable first).  Like multiprocessing's, it
  reads on whether or not the results are taken, so that ``close(); join()`` never
  waits for the caller; an endless iterable reads on until ``terminate()``.
* whichever thread ends an executor future (a worker thread of the main interpreter, a
  thread of the process side, or the thread that cancels it): ``Pool._chunk_done``
  records the chunk's outcome in its result.
* the callback thread, one per pool, alive while a result with a callback is unfinished:
  it runs the callbacks one at a time, as multiprocessing's result-handler thread does;
  a result with a callback is ready once its callback has returned.

Locks: ``Pool._lock`` guards the pool's state and what is in flight (``_futures``,
``_jobs``, ``_feeders``); each result's ``_cond`` its outcome; each
``_Window``'s and ``_Callbacks``' condition their own fields.  No two are held at once,
and none is held while the executor is called or a callback runs.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import sys
import threading
import time
import types
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from typing import Any

from . import _worker
from ._waits import main_wait
from ._pool import InterpreterPoolExecutor
from ._timeouts import check_timeout

__all__ = ("ApplyResult", "AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult", "Pool")

INIT, RUN, CLOSE, TERMINATE = "INIT", "RUN", "CLOSE", "TERMINATE"  # multiprocessing.pool's states

_WINDOW_PER_WORKER = 2  # an imap's unfinished chunks: enough to keep every worker fed

# A result's outcome for one chunk: (True, list of values) or (False, exception); an
# apply's is (True, value).
_Outcome = tuple[bool, Any]


def _terminated() -> CancelledError:
    return CancelledError("the pool was terminated before this task finished")


class _Callbacks:
    """Runs the callbacks of a pool's results one at a time on one thread, as
    multiprocessing's result-handler thread does.  The thread lives while a result that
    has a callback is unfinished (``expect`` ... ``post``), so an idle pool has none; a
    thread that cannot start (CPython 3.12 at the program's end) is replaced by running
    each callback on the thread that posts it."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Callable[[], None]] = deque()
        self._expected = 0  # results whose callback is not done yet
        self._thread: threading.Thread | None = None  # running callbacks now
        self._last: threading.Thread | None = None  # the last one started, for join()
        self._inline = False
        self._name = name

    def expect(self) -> None:
        """A result with a callback was made: its ``post`` will come."""
        with self._cond:
            self._expected += 1
            if self._thread is not None or self._inline:
                return
            thread = threading.Thread(target=self._run, name=self._name)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                self._inline = True
                return
            self._thread = self._last = thread

    def post(self, deliver: Callable[[], None]) -> None:
        """Run ``deliver`` (which never raises) on the callback thread."""
        with self._cond:
            if not self._inline:
                self._queue.append(deliver)
                self._cond.notify()
                return
        deliver()
        with self._cond:
            self._expected -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and self._expected:
                    self._cond.wait()
                if not self._queue:
                    self._thread = None
                    return
                deliver = self._queue.popleft()
            try:
                deliver()
            finally:
                with self._cond:
                    self._expected -= 1

    def join(self) -> None:
        """Wait until every expected callback has run (not from the callback thread)."""
        me = threading.current_thread()
        while True:
            with self._cond:
                thread = self._last
            if thread is None or thread is me:
                return
            thread.join()
            with self._cond:
                if self._last is thread:
                    return


class _Window:
    """How many chunks an imap may have unfinished: its feeder takes a place for each
    chunk, the chunk's end gives it back; ``stop`` (terminate) frees the feeder."""

    def __init__(self, size: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._free = size
        self._stopped = False

    def take(self) -> bool:
        """Wait for a free place; False once stopped."""
        with self._cond:
            while not self._free and not self._stopped:
                main_wait(self._cond)
            if self._stopped:
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _Feeder:
    """An imap's feeder: its thread reads the iterable and submits its chunks, at most
    ``window`` of them unfinished, so that the iterable may be endless."""

    def __init__(self, pool: Pool, result: IMapIterator, func: Callable[..., Any], items: Iterator[Any],
                 chunksize: int, window: _Window) -> None:
        self.pool = pool
        self.result = result
        self.func = func
        self.items = items
        self.chunksize = chunksize
        self.window = window
        self.thread = threading.Thread(target=self.run)  # joined by terminate() and join()

    def run(self) -> None:
        """Submit the chunks (the feeder thread, or the caller's when none can start)."""
        index = 0
        try:
            while True:
                try:
                    chunk = [(x,) for x in itertools.islice(self.items, self.chunksize)]
                except Exception as exc:  # noqa: BLE001 - the iterable raised: at its place, then the end
                    self.result._chunk(index, (False, exc))
                    index += 1
                    break
                if not chunk or not self.window.take():
                    break
                taken = self.pool._submit(self.result, index, _chunk_call(self.pool._executor, self.func, chunk), self.window)
                index += 1
                if not taken:  # the executor takes no more (the program's end, broken)
                    break
        finally:
            self.result._set_length(index)
            self.pool._fed(self)


class _Job:
    """What the pool needs of a result: chunk outcomes in, and an end forced by
    ``terminate``."""

    def _chunk(self, index: int, outcome: _Outcome) -> None:
        raise NotImplementedError

    def _abort(self, exc: BaseException) -> None:
        raise NotImplementedError


class ApplyResult(_Job):
    """The result of ``apply_async`` (``AsyncResult``), as multiprocessing's: ``ready``,
    ``successful``, ``wait`` and ``get``."""

    __class_getitem__: Any = classmethod(types.GenericAlias)  # ApplyResult[int], as multiprocessing's

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool: Pool | None = pool  # kept alive until the result is ready, as there
        self._cond = threading.Condition(threading.Lock())
        self._finished = False  # the outcome is known (its callback may not have run yet)
        self._ready = False  # ...and its callback has returned
        self._success = True
        self._value: Any = None
        self._callback = callback
        self._error_callback = error_callback

    def ready(self) -> bool:
        """Whether the call has completed (its callback included)."""
        return self._ready

    def successful(self) -> bool:
        """Whether the call completed without raising.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self._ready:
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready, or ``timeout`` seconds."""
        with self._cond:
            _wait_for(self._cond, self.ready, timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The call's value, once ready; its exception is raised as itself.

        Raises:
            multiprocessing.TimeoutError: not ready within ``timeout`` seconds.
        """
        self.wait(timeout)
        if not self._ready:
            raise multiprocessing.TimeoutError(f"the result is not ready after {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def _chunk(self, index: int, outcome: _Outcome) -> None:
        with self._cond:
            if self._finished:
                return
            self._finished = True
            self._success, self._value = outcome
        self._complete()

    def _abort(self, exc: BaseException) -> None:
        self._chunk(0, (False, exc))

    def _complete(self) -> None:
        pool = self._pool
        assert pool is not None
        pool._job_done(self)
        if self._callback is None and self._error_callback is None:
            self._set_ready()
        else:
            pool._callbacks.post(self._deliver)

    def _deliver(self) -> None:
        """Run the callback, then make the result ready (callback thread)."""
        try:
            if self._success and self._callback is not None:
                self._callback(self._value)
            elif not self._success and self._error_callback is not None:
                self._error_callback(self._value)
        except BaseException:  # noqa: BLE001 - reported as a thread's uncaught exception
            # multiprocessing's result handler dies of it (and its pool hangs); here the
            # result is ready all the same.
            threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), threading.current_thread())))
        finally:
            self._set_ready()

    def _set_ready(self) -> None:
        with self._cond:
            self._ready = True
            self._pool = None
            self._cond.notify_all()


AsyncResult = ApplyResult  # the name multiprocessing.pool gives it too


class MapResult(ApplyResult):
    """The result of ``map_async`` and ``starmap_async``: the list of values in the
    input's order.  When a chunk fails, the first exception that arrives is the result's,
    and the result is ready once every chunk has finished."""

    def __init__(
        self,
        pool: Pool,
        chunksize: int,
        length: int,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._value = [None] * length
        self._chunksize = chunksize
        self._left = -(-length // chunksize) or 1  # chunks not finished; no items: one empty

    def _chunk(self, index: int, outcome: _Outcome) -> None:
        success, value = outcome
        with self._cond:
            if self._finished:
                return
            self._left -= 1
            if success and self._success:
                self._value[index * self._chunksize:(index + 1) * self._chunksize] = value
            elif not success and self._success:
                self._success, self._value = False, value  # the first exception only
            if self._left:
                return
            self._finished = True
        self._complete()

    def _abort(self, exc: BaseException) -> None:
        with self._cond:
            if self._finished:
                return
            self._finished = True
            if self._success:
                self._success, self._value = False, exc
        self._complete()


class IMapIterator(_Job):
    """The iterator of ``imap``: values in the input's order, each as soon as it and
    those before it have arrived.  A task's exception is raised at its place, and the
    iteration may go on after it (with ``chunksize > 1``, after its chunk).

    ``next(timeout)`` raises ``multiprocessing.TimeoutError`` when no value arrives in
    ``timeout`` seconds.
    """

    _ordered = True

    def __init__(self, pool: Pool) -> None:
        self._pool: Pool | None = pool
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[_Outcome] = deque()  # outcomes to hand out, in order
        self._unsorted: dict[int, _Outcome] = {}  # chunks that came before their turn
        self._index = 0  # chunks taken into _items
        self._length: int | None = None  # chunks in all, once the feeder is done
        self._aborted = False

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next value, waiting up to ``timeout`` seconds for it."""
        with self._cond:
            if not _wait_for(self._cond, lambda: bool(self._items) or self._index == self._length, timeout):
                raise multiprocessing.TimeoutError(f"no result within {timeout} s")
            if not self._items:
                raise StopIteration
            success, value = self._items.popleft()
        if success:
            return value
        raise value

    __next__ = next

    def _take(self, outcome: _Outcome) -> None:
        success, value = outcome
        if success:
            self._items.extend((True, v) for v in value)
        else:
            self._items.append(outcome)
        self._index += 1

    def _chunk(self, index: int, outcome: _Outcome) -> None:
        with self._cond:
            if self._aborted:
                return
            if not self._ordered or index == self._index:
                self._take(outcome)
                while self._index in self._unsorted:
                    self._take(self._unsorted.pop(self._index))
                self._cond.notify_all()
            else:
                self._unsorted[index] = outcome
            done = self._index == self._length
        if done:
            self._end()

    def _set_length(self, length: int) -> None:
        with self._cond:
            if self._aborted:
                return
            self._length = length
            self._cond.notify_all()
            done = self._index == length
        if done:
            self._end()

    def _abort(self, exc: BaseException) -> None:
        with self._cond:
            if self._aborted or self._index == self._length:
                return
            self._aborted = True
            self._items.append((False, exc))  # after the values that arrived in turn
            self._unsorted.clear()
            self._length = self._index
            self._cond.notify_all()
        self._end()

    def _end(self) -> None:
        pool, self._pool = self._pool, None  # once: whoever completes it (it is then done)
        if pool is not None:
            pool._job_done(self)


class IMapUnorderedIterator(IMapIterator):
    """The iterator of ``imap_unordered``: values as their tasks finish."""

    _ordered = False


class Pool:
    """A ``multiprocessing.pool.Pool`` whose workers are interpreters with their own GIL.

    The same methods, arguments, results and exceptions as the standard library's
    ``Pool``; tasks whose function needs an extension module that refuses an own-GIL
    interpreter run in process workers (see ``InterpreterPoolExecutor``'s ``fallback``).

    Args:
        processes: how many tasks run at once; default ``os.cpu_count()``.
        initializer: called as ``initializer(*initargs)`` in each worker before its
            first task; if it raises, the pool is broken: every task fails with
            ``BrokenInterpreterPool`` (multiprocessing starts new workers for ever).
        initargs: arguments for ``initializer``.
        maxtasksperchild: replace a worker's interpreter after this many tasks (a chunk
            of a map is one task, as in multiprocessing); the executor's
            ``max_tasks_per_worker``.
        context: accepted for multiprocessing's signature; a start method means nothing
            to interpreters, and the process workers of the fallback use manygil's.

    Raises:
        ValueError: ``processes`` is less than 1, ``maxtasksperchild`` is not a positive
            int or None.
        TypeError: ``processes`` is not an int, ``initializer`` is not callable,
            ``initargs`` is not iterable.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: object = None,
    ) -> None:
        self._state = INIT  # first: __del__ reads it if __init__ raises
        processes, initargs = _checked_arguments(processes, initializer, initargs, maxtasksperchild)
        self._processes = processes
        self._ctx = context
        self._executor = InterpreterPoolExecutor(
            processes,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=maxtasksperchild,
            thread_name_prefix=f"manygil-Pool-{id(self):x}-",
        )
        self._lock = threading.Lock()
        self._futures: set[Future[Any]] = set()  # unfinished, for terminate()
        self._jobs: set[_Job] = set()  # unfinished results, for terminate()
        self._feeders: set[_Feeder] = set()  # the imaps whose iterable is still read
        self._callbacks = _Callbacks(f"manygil-Pool-{id(self):x}-callbacks")
        self._feeder_names = itertools.count(1)
        self._state = RUN

    def __repr__(self) -> str:
        return f"<manygil.Pool state={self._state} pool_size={self._processes}>"

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self, _warn: Callable[..., None] = warnings.warn, RUN: str = RUN) -> None:
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running pool {self!r}: call close() and join(), or use a with block",
                  ResourceWarning, source=self)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Leaving the block terminates the pool, as multiprocessing's does: get the
        results you need inside it."""
        self.terminate()

    # -- submitting -------------------------------------------------------------------

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Mapping[str, Any] | None = None) -> Any:
        """Call ``func(*args, **kwds)`` in a worker and return its value."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> ApplyResult:
        """Start ``func(*args, **kwds)`` in a worker.

        ``callback(value)`` or ``error_callback(exception)`` runs once, on the pool's
        callback thread, before the result is ready.

        Raises:
            ValueError: the pool is closed or terminated ("Pool not running").
            TypeError: ``func`` or a callback is not callable, ``args`` is not iterable
                or ``kwds`` not a mapping.
        """
        self._check_call("apply_async", func, callback, error_callback)
        try:
            args = tuple(args)
        except TypeError:
            raise TypeError(f"apply_async() args must be a tuple of arguments, got {args!r}") from None
        if kwds is None:
            kwds = {}
        elif not isinstance(kwds, Mapping):
            raise TypeError(f"apply_async() kwds must be a dict of keyword arguments, got {kwds!r}")
        result = ApplyResult(self, callback, error_callback)
        self._start(result)
        self._submit(result, 0, functools.partial(self._executor.submit, func, *args, **kwds))
        return result

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``, the calls spread over the workers in chunks.

        The first exception raised by a call is raised, once every chunk has finished.
        ``chunksize`` defaults to about a quarter of the items per worker, as in
        multiprocessing.
        """
        values: list[Any] = self._map_async("map", func, iterable, False, chunksize).get()
        return values

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[Any]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult:
        """Start ``map``; ``callback`` gets the whole list."""
        return self._map_async("map_async", func, iterable, False, chunksize, callback, error_callback)

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(*args) for args in iterable]``, as ``map``."""
        values: list[Any] = self._map_async("starmap", func, iterable, True, chunksize).get()
        return values

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[Any]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult:
        """Start ``starmap``; ``callback`` gets the whole list."""
        return self._map_async("starmap_async", func, iterable, True, chunksize, callback, error_callback)

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """An iterator of ``func(x)`` for each item, in order.  The iterable is read by a
        thread of the pool as tasks finish, so it may be endless."""
        return self._imap("imap", IMapIterator, func, iterable, chunksize)

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapUnorderedIterator:
        """As ``imap``, the values in the order their tasks finish."""
        result = self._imap("imap_unordered", IMapUnorderedIterator, func, iterable, chunksize)
        assert isinstance(result, IMapUnorderedIterator)
        return result

    def _map_async(
        self,
        name: str,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        callback: Callable[[list[Any]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult:
        self._check_call(name, func, callback, error_callback)
        if chunksize is not None:
            _check_chunksize(name, chunksize)
        items = _as_list(name, iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), self._processes * 4)
            chunksize += bool(extra) or not chunksize  # at least 1
        result = MapResult(self, chunksize, len(items), callback, error_callback)
        self._start(result)
        if not items:
            # multiprocessing calls no callback then; here each call has its one call
            result._chunk(0, (True, []))
            return result
        for index, chunk in enumerate(_chunks(items, chunksize, star)):
            self._submit(result, index, _chunk_call(self._executor, func, chunk))
        return result

    def _imap(
        self, name: str, kind: type[IMapIterator], func: Callable[..., Any], iterable: Iterable[Any], chunksize: int
    ) -> IMapIterator:
        self._check_call(name, func)
        _check_chunksize(name, chunksize)
        try:
            items = iter(iterable)
        except TypeError:
            raise TypeError(f"{name}() needs an iterable, got {iterable!r}") from None
        result = kind(self)
        feeder = _Feeder(self, result, func, items, chunksize, _Window(_WINDOW_PER_WORKER * self._processes))
        feeder.thread.name = f"manygil-Pool-{id(self):x}-feeder-{next(self._feeder_names)}"
        with self._lock:
            self._check_running()
            self._jobs.add(result)
            self._feeders.add(feeder)
        try:
            feeder.thread.start()
        except RuntimeError:  # no thread can start (CPython 3.12 at the program's end)
            feeder.run()
        return result

    def _fed(self, feeder: _Feeder) -> None:
        """An imap's iterable is read to its end (its feeder thread): once the pool is
        closed and the last feeder is done, the executor shuts down."""
        with self._lock:
            self._feeders.discard(feeder)
            last = self._state == CLOSE and not self._feeders
        if last:
            self._executor.shutdown(wait=False)

    def _submit(self, job: _Job, index: int, call: Callable[[], Future[Any]], window: _Window | None = None) -> bool:
        """Submit one task of ``job``.  A task that cannot be sent (an argument that does
        not pickle, a broken pool) fails in its place, as in multiprocessing, where the
        task handler sets the error on its result.  False when the executor takes no
        more tasks: it is broken, or the program's end has begun (a RuntimeError)."""
        try:
            future = call()
        except Exception as exc:  # noqa: BLE001 - fails in its place (above)
            if window is not None:
                window.give()
            job._chunk(index, (False, exc))
            return not isinstance(exc, RuntimeError)
        with self._lock:
            late = self._state == TERMINATE
            if not late:
                self._futures.add(future)
        if late:
            future.cancel()
        future.add_done_callback(functools.partial(self._chunk_done, job, index, window))
        return True

    def _chunk_done(self, job: _Job, index: int, window: _Window | None, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)
        if window is not None:
            window.give()
        if future.cancelled():
            job._chunk(index, (False, _terminated()))
            return
        exc = future.exception()
        job._chunk(index, (True, future.result()) if exc is None else (False, exc))

    def _start(self, job: ApplyResult) -> None:
        with self._lock:
            self._check_running()
            self._jobs.add(job)
        if job._callback is not None or job._error_callback is not None:
            self._callbacks.expect()

    def _job_done(self, job: _Job) -> None:
        with self._lock:
            self._jobs.discard(job)

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _check_call(self, name: str, func: object, *callbacks: object) -> None:
        self._check_running()
        if not callable(func):
            raise TypeError(f"{name}() func must be callable, got {func!r}")
        for which, callback in zip(("callback", "error_callback"), callbacks):
            if callback is not None and not callable(callback):
                raise TypeError(f"{name}() {which} must be callable or None, got {callback!r}")

    # -- ending -----------------------------------------------------------------------

    def close(self) -> None:
        """Take no more tasks; those submitted still run (an imap's iterable is still
        read).  The workers end once they are done."""
        with self._lock:
            if self._state != RUN:
                return
            self._state = CLOSE
            idle = not self._feeders
        if idle:
            self._executor.shutdown(wait=False)

    def terminate(self) -> None:
        """Stop at once: running tasks are interrupted (their process ended, on the
        process side), the others never start.  A result that had not finished raises
        ``concurrent.futures.CancelledError`` (multiprocessing's never becomes ready),
        and its ``error_callback`` is called with it."""
        with self._lock:
            self._state = TERMINATE
            futures, jobs, feeders = list(self._futures), list(self._jobs), list(self._feeders)
        for feeder in feeders:
            feeder.window.stop()
        for job in jobs:
            job._abort(_terminated())
        for future in futures:
            future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
        _join([feeder.thread for feeder in feeders])
        self._callbacks.join()

    def join(self) -> None:
        """Wait for the workers to finish every task, and the callbacks to run.

        Raises:
            ValueError: the pool was neither closed nor terminated.
        """
        with self._lock:
            if self._state == RUN:
                raise ValueError("Pool is still running")
            feeders = list(self._feeders)
        _join([feeder.thread for feeder in feeders])
        self._executor.shutdown(wait=True)
        self._callbacks.join()


def _checked_arguments(
    processes: int | None, initializer: Callable[..., object] | None, initargs: Iterable[Any], maxtasksperchild: int | None
) -> tuple[int, tuple[Any, ...]]:
    """A new pool's arguments checked, with multiprocessing's words where it has them:
    ``processes`` (its default) and ``initargs`` as a tuple."""
    if processes is None:
        processes = os.cpu_count() or 1
    if isinstance(processes, bool) or not isinstance(processes, int):
        raise TypeError(f"processes must be an int or None, got {processes!r}")
    if processes < 1:
        raise ValueError("Number of processes must be at least 1")  # multiprocessing's words
    if maxtasksperchild is not None and (
        isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
    ):
        raise ValueError(f"maxtasksperchild must be a positive int or None, got {maxtasksperchild!r}")
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be a callable, got {initializer!r}")
    try:
        return processes, tuple(initargs)
    except TypeError:
        raise TypeError(f"initargs must be a tuple of arguments for the initializer, got {initargs!r}") from None


def _chunk_call(executor: InterpreterPoolExecutor, func: Callable[..., Any], chunk: list[Any]) -> Callable[[], Future[Any]]:
    """How to submit one chunk of a map: as one task of the executor, routed by ``func``
    (not by ``run_chunk``), as the executor's own ``map()`` routes it."""
    return functools.partial(executor._submit, _worker.run_chunk, (func, chunk), {}, None, func)


def _wait_for(cond: threading.Condition, done: Callable[[], bool], timeout: float | None) -> bool:
    """Wait on ``cond`` (held) until ``done()``, for ``timeout`` seconds at most (checked
    as every manygil wait checks it; negative: not at all); whether it is done."""
    seconds = check_timeout(timeout, negative_is_zero=True)
    end = None if seconds is None else time.monotonic() + seconds
    while not done():
        remaining = None if end is None else end - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        main_wait(cond, remaining)  # Ctrl-C friendly on the main thread
    return True


def _join(threads: list[threading.Thread]) -> None:
    me = threading.current_thread()
    for thread in threads:
        if thread is not me and thread.ident is not None:  # started (not run inline)
            thread.join()


def _check_chunksize(name: str, chunksize: object) -> None:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"{name}() chunksize must be an int, got {chunksize!r}")
    if chunksize < 1:
        raise ValueError(f"{name}() chunksize must be 1+, not {chunksize}")


def _as_list(name: str, iterable: Iterable[Any]) -> list[Any]:
    if isinstance(iterable, list):
        return iterable
    try:
        return list(iterable)
    except TypeError:
        if not hasattr(iterable, "__iter__"):
            raise TypeError(f"{name}() needs an iterable, got {iterable!r}") from None
        raise


def _chunks(items: list[Any], size: int, star: bool) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        part = items[start:start + size]
        yield part if star else [(x,) for x in part]
