"""The machinery of :class:`manygil.InterpreterPoolExecutor`.

One task's trip (nothing polls; every wait is a condition variable or a channel)::

    caller thread                 main interpreter                        worker k (own GIL)
    submit(fn, *a) ─ pickle ─► Future ─► idle worker? ── chan_put(inbox k) ─► serve(): fn(*a)
                                        └► else pending deque                    │
    Future.set_result ◄── collector thread ◄── chan_get(outbox) ◄── pickle(result)┘
                          └► the freed worker takes the next pending item at once

* A worker is a thread of the main interpreter that owns one interpreter and stays
  inside it, in ``_worker.serve``, for its whole life.
* One collector thread per pool reads the shared outbox, resolves futures and hands
  the next pending item to the worker that just became free.
* A time limit or ``cancel()`` of a running task sends the task id on the worker's
  control channel; a helper thread inside the worker's interpreter raises
  ``TaskInterrupted`` in the task.  The future ends at once; a worker that has not
  answered within ``grace_period`` is abandoned and replaced.
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures._base import RUNNING, CANCELLED_AND_NOTIFIED
from typing import Any

from . import _backend, _native, _worker
from ._exceptions import BrokenInterpreterPool, RemoteError, RemoteTraceback
from ._interpreters import bootstrap
from ._transport import describe, dumps

__all__ = ("InterpreterFuture", "InterpreterPoolExecutor")

_STOP = (0).to_bytes(8, "little")
_SERVE = "_mg_worker.serve(_mg_inbox, _mg_outbox, _mg_control, _mg_index, _mg_init)\n"

_pools: weakref.WeakSet[_PoolState] = weakref.WeakSet()
_global_shutdown = False
_global_lock = threading.Lock()


def _python_exit() -> None:
    global _global_shutdown
    with _global_lock:
        _global_shutdown = True
    for state in list(_pools):
        state.shutdown(wait=True, cancel_futures=False)


# Like ThreadPoolExecutor: finish the work in flight before non-daemon threads are
# joined at interpreter exit (atexit handlers would run too late).
threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


class InterpreterFuture(Future):  # type: ignore[type-arg]
    """A ``Future`` whose ``cancel()`` also stops a task that is already running.

    Cancelling a running task raises an exception inside its interpreter; the future
    is cancelled at once, whether or not the task notices.
    """

    _state_ref: weakref.ref[_PoolState] | None = None
    _tid: int = 0

    def cancel(self) -> bool:
        """Cancel the task, even while it runs; ``False`` only once it has finished."""
        with self._condition:
            if self._state != RUNNING:
                return super().cancel()
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()
        state = self._state_ref() if self._state_ref is not None else None
        if state is not None:
            state.interrupt(self._tid)
        return True


class _Item:
    __slots__ = ("future", "payload", "timeout", "worker", "label")

    def __init__(self, future: InterpreterFuture, payload: bytes, timeout: float | None, label: str) -> None:
        self.future = future
        self.payload = payload
        self.timeout = timeout
        self.worker: _WorkerHandle | None = None
        self.label = label


class _WorkerHandle:
    __slots__ = ("index", "inbox", "control", "thread", "tid", "done", "state", "interp_id", "__weakref__")

    def __init__(self, index: int) -> None:
        self.index = index
        self.inbox = _native.chan_create(0)
        self.control = _native.chan_create(0)
        self.thread: threading.Thread | None = None
        self.tid = 0
        self.done = 0
        self.state = "starting"  # starting | idle | busy | retiring | abandoned
        self.interp_id = -1

    def send(self, tid: int, payload: bytes) -> None:
        _native.chan_put(self.inbox, tid.to_bytes(8, "little") + payload, 0, None)

    def stop(self) -> None:
        self.state = "retiring"
        _native.chan_put(self.inbox, _STOP, 0, None)


def _rebuild_exception(status: int, payload: bytes) -> BaseException:
    """The task's own exception, chained to its remote traceback; else a RemoteError."""
    if status == _worker.RAISED:
        n = int.from_bytes(payload[:4], "little")
        info = pickle.loads(payload[4 : 4 + n])
        try:
            exc = pickle.loads(payload[4 + n :])
        except Exception:  # noqa: BLE001 - it pickled there but does not unpickle here
            exc = RemoteError(info)
    else:
        info = pickle.loads(payload)
        exc = RemoteError(info)
    exc.__cause__ = RemoteTraceback(info.errdisplay)
    return exc  # type: ignore[no-any-return]


class _PoolState:
    """Everything the pool's threads share; the executor is a thin facade over it."""

    def __init__(
        self,
        max_workers: int,
        init: bytes,
        max_tasks_per_worker: int | None,
        own_gil: bool,
        grace_period: float,
        name: str,
    ) -> None:
        self.max_workers = max_workers
        self.init = init
        self.max_tasks = max_tasks_per_worker
        self.own_gil = own_gil
        self.grace = grace_period
        self.name = name
        self.lock = threading.Lock()
        self.pending: deque[tuple[int, _Item]] = deque()
        self.idle: list[_WorkerHandle] = []
        self.workers: dict[int, _WorkerHandle] = {}
        self.running: dict[int, _Item] = {}
        self.outbox = _native.chan_create(0)
        self.tids = itertools.count(1)
        self.indexes = itertools.count(0)
        self.shutting_down = False
        self.broken: str | None = None
        self.collector: threading.Thread | None = None
        self.watchdog: threading.Thread | None = None
        self.deadlines: list[tuple[float, int, int]] = []
        self.watch = threading.Condition(self.lock)
        self.all_threads: list[threading.Thread] = []
        self.released = False
        self._broken_cause: BaseException | None = None
        _pools.add(self)

    # ------------------------------------------------------------ submitting

    def submit(self, item: _Item) -> None:
        with self.lock:
            if self.broken is not None:
                raise BrokenInterpreterPool(self.broken) from getattr(self, "_broken_cause", None)
            if self.shutting_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            tid = next(self.tids)
            item.future._tid = tid
            if self.collector is None:
                self.collector = threading.Thread(target=self._collect, name=f"{self.name}collector")
                self.collector.start()
            if not (self.idle and self._dispatch(self.idle.pop(), tid, item)):
                self.pending.append((tid, item))
                if len(self.workers) - len(self.idle) < len(self.pending) + len(self.running):
                    self._maybe_start_worker()

    def _dispatch(self, worker: _WorkerHandle, tid: int, item: _Item) -> bool:
        """Hand an item to an idle worker (lock held); False if it was cancelled."""
        if not item.future.set_running_or_notify_cancel():
            self.idle.append(worker)
            return False
        worker.tid = tid
        worker.state = "busy"
        item.worker = worker
        self.running[tid] = item
        if item.timeout is not None:
            self._add_deadline(time.monotonic() + item.timeout, tid, 0)
        worker.send(tid, item.payload)
        item.payload = b""
        return True

    def _feed(self, worker: _WorkerHandle) -> None:
        """Give a free worker the next pending item, or let it idle or stop (lock held)."""
        while self.pending:
            tid, item = self.pending.popleft()
            if self._dispatch(worker, tid, item):
                return
            self.idle.pop()  # _dispatch put it back; try the next item
        if self.shutting_down or self.broken is not None:
            worker.stop()
        else:
            worker.state = "idle"
            self.idle.append(worker)

    def _maybe_start_worker(self) -> None:
        live = sum(1 for w in self.workers.values() if w.state != "abandoned")
        if live >= self.max_workers:
            return
        worker = _WorkerHandle(next(self.indexes))
        _native.retain(self.outbox)  # the worker's own reference
        self.workers[worker.index] = worker
        # Daemon, so that an abandoned worker stuck in C cannot block interpreter exit;
        # _python_exit and shutdown(wait=True) join every worker that is not abandoned.
        thread = threading.Thread(
            target=self._run_worker, args=(worker,), name=f"{self.name}worker-{worker.index}", daemon=True
        )
        worker.thread = thread
        self.all_threads.append(thread)
        thread.start()

    # ------------------------------------------------------------ worker threads

    def _run_worker(self, worker: _WorkerHandle) -> None:
        error = b""
        interp_id = None
        try:
            interp_id = _backend.create(self.own_gil)
            worker.interp_id = interp_id
            bootstrap(interp_id)
            shared = {
                "_mg_inbox": worker.inbox,
                "_mg_outbox": self.outbox,
                "_mg_control": worker.control,
                "_mg_index": worker.index,
                "_mg_init": self.init,
            }
            failed = _backend.run(interp_id, _SERVE, shared)
            if failed is not None:
                error = ("%s: %s" % failed).encode()
        except BaseException as exc:  # noqa: BLE001 - reported to the collector
            error = f"{type(exc).__name__}: {exc}".encode()
        finally:
            if interp_id is not None:
                try:
                    _backend.destroy(interp_id)
                except Exception as exc:  # noqa: BLE001
                    error = error or f"cannot close interpreter {interp_id}: {exc}".encode()
            _native.chan_put(self.outbox, _worker.message(0, _worker.EXITED, worker.index, error), 0, None)
            # The worker owns its channels and a reference to the outbox, so that an
            # abandoned worker that returns after the pool is gone still has them.
            _native.release(worker.inbox)
            _native.release(worker.control)
            _native.release(self.outbox)

    # ------------------------------------------------------------ collector

    def _collect(self) -> None:
        get = _native.chan_get
        while True:
            data = get(self.outbox, None)[1]  # type: ignore[index]
            tid = int.from_bytes(data[:8], "little")
            status = data[8]
            index = int.from_bytes(data[9:13], "little")
            payload = data[13:]
            if tid:
                self._task_done(tid, status, index, payload)
            elif self._worker_event(status, index, payload):
                return

    def _task_done(self, tid: int, status: int, index: int, payload: bytes) -> None:
        with self.lock:
            item = self.running.pop(tid, None)
            worker = self.workers[index]
            worker.tid = 0
            worker.done += 1
            if worker.state == "abandoned":
                worker.stop()
            elif self.max_tasks is not None and worker.done >= self.max_tasks:
                worker.stop()
                self._maybe_start_worker()
            else:
                self._feed(worker)
        if item is None:
            return
        future = item.future
        if future.done():
            return  # timed out or cancelled while it ran
        try:
            if status == _worker.OK:
                future.set_result(pickle.loads(payload))
            elif status == _worker.INTERRUPTED:
                future.set_exception(CancelledError(f"task {item.label} was interrupted"))
            else:
                future.set_exception(_rebuild_exception(status, payload))
        except Exception as exc:  # noqa: BLE001 - e.g. the result does not unpickle here
            if not future.done():
                future.set_exception(exc)

    def _worker_event(self, status: int, index: int, payload: bytes) -> bool:
        """READY, INIT_FAILED or EXITED; True when the collector should end."""
        failed: list[InterpreterFuture] = []
        with self.lock:
            worker = self.workers[index]
            if status == _worker.READY:
                if worker.state == "starting":
                    self._feed(worker)
            elif status == _worker.INIT_FAILED:
                self.broken = "a worker's initializer raised; the pool is broken"
                self._broken_cause = _rebuild_exception(payload[0], payload[1:])
                worker.state = "retiring"  # serve() returns on its own
                failed = self._fail_pending()
                for other in self.workers.values():
                    if other.state == "idle":
                        other.stop()
                self.idle.clear()
            elif status == _worker.EXITED:
                del self.workers[index]
                if worker.thread in self.all_threads:
                    self.all_threads.remove(worker.thread)
                if worker.state == "starting" and payload and self.broken is None:
                    # The interpreter could not even start: trying again would loop.
                    self.broken = f"a worker interpreter could not start: {payload.decode()}"
                    self._broken_cause = RuntimeError(payload.decode())
                    failed.extend(self._fail_pending())
                if worker in self.idle:
                    self.idle.remove(worker)
                lost = self.running.pop(worker.tid, None) if worker.tid else None
                if lost is not None:
                    failed.append(lost.future)
                    self._broken_cause = RuntimeError(payload.decode() or "the worker stopped")
                if self.pending and not self.shutting_down and self.broken is None:
                    self._maybe_start_worker()
            done = self.shutting_down or self.broken is not None
            finished = done and all(w.state == "abandoned" for w in self.workers.values())
            if finished:
                failed.extend(self._fail_pending())
                self.watch.notify_all()
        for future in failed:
            if not future.done():
                err = BrokenInterpreterPool(self.broken or "the worker running this task stopped")
                err.__cause__ = self._broken_cause
                try:
                    future.set_exception(err)
                except Exception:  # noqa: BLE001 - cancelled in between
                    pass
        if finished:
            _native.release(self.outbox)
        return finished

    def _fail_pending(self) -> list[InterpreterFuture]:
        futures = [item.future for _, item in self.pending]
        self.pending.clear()
        return futures

    # ------------------------------------------------------------ time limits

    def _add_deadline(self, when: float, tid: int, stage: int) -> None:
        heapq.heappush(self.deadlines, (when, tid, stage))
        if self.watchdog is None:
            self.watchdog = threading.Thread(target=self._watch, name=f"{self.name}watchdog")
            self.all_threads.append(self.watchdog)
            self.watchdog.start()
        else:
            self.watch.notify()

    def _watch(self) -> None:
        with self.lock:
            while True:
                if self.shutting_down and all(w.state == "abandoned" for w in self.workers.values()):
                    return
                now = time.monotonic()
                if not self.deadlines:
                    self.watch.wait()
                    continue
                when, tid, stage = self.deadlines[0]
                if when > now:
                    self.watch.wait(when - now)
                    continue
                heapq.heappop(self.deadlines)
                item = self.running.get(tid)
                if item is None:
                    continue
                if stage == 0:
                    self._expire(tid, item)
                else:
                    self._abandon(item)

    def _expire(self, tid: int, item: _Item) -> None:
        future = item.future
        if not future.done():
            err = TimeoutError(f"task {item.label} exceeded its time limit of {item.timeout:g} s")
            # set_exception runs callbacks: do it without holding the pool lock.
            self.lock.release()
            try:
                try:
                    future.set_exception(err)
                except Exception:  # noqa: BLE001 - it finished in between
                    pass
            finally:
                self.lock.acquire()
        self._interrupt_locked(tid)

    def interrupt(self, tid: int) -> None:
        """Stop a running task in its interpreter (its future is already resolved)."""
        with self.lock:
            self._interrupt_locked(tid)

    def _interrupt_locked(self, tid: int) -> None:
        item = self.running.get(tid)
        if item is None or item.worker is None:
            return
        _native.chan_put(item.worker.control, tid.to_bytes(8, "little"), 0, None)
        self._add_deadline(time.monotonic() + self.grace, tid, 1)

    def _abandon(self, item: _Item) -> None:
        """The task ignored its interrupt (stuck in C): leave its worker, start another."""
        worker = item.worker
        if worker is None or worker.state == "abandoned":
            return
        worker.state = "abandoned"
        if self.pending and not self.shutting_down:
            self._maybe_start_worker()

    # ------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: list[InterpreterFuture] = []
        with self.lock:
            self.shutting_down = True
            if cancel_futures:
                cancelled = [item.future for _, item in self.pending]
                self.pending.clear()
            if not self.pending:
                for worker in self.idle:
                    worker.stop()
                self.idle.clear()
            # Workers still starting stop by themselves once READY arrives.
            self.watch.notify_all()
            collector = self.collector
            abandoned = {w.thread for w in self.workers.values() if w.state == "abandoned"}
            threads = [t for t in self.all_threads if t not in abandoned]
            if collector is None and not self.released:
                self.released = True  # no task ever came: nobody else owns the outbox
                _native.release(self.outbox)
        for future in cancelled:
            future.cancel()
        if wait:
            me = threading.current_thread()
            for thread in [collector, *threads]:
                if thread is not None and thread is not me and thread.ident is not None:
                    thread.join()


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class InterpreterPoolExecutor(Executor):
    """A ``concurrent.futures`` executor that runs tasks in interpreters with their own GIL.

    Args:
        max_workers: how many interpreters run tasks at once; default ``os.cpu_count()``.
        initializer: called in each worker interpreter before its first task.
        initargs: arguments for ``initializer``.
        max_tasks_per_worker: replace a worker's interpreter after this many tasks.
        task_timeout: a time limit in seconds for every task (see also ``with_timeout``).
        shared_gil: run the workers under the main GIL, for extension modules that
            refuse to load in an interpreter with its own GIL (no parallel speed-up).
        grace_period: seconds a task has to stop after its time limit or ``cancel()``
            before its worker is abandoned and replaced.
        thread_name_prefix: prefix for the names of the pool's threads.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_worker`` is not positive.
        TypeError: ``initializer`` is not callable.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
        task_timeout: float | None = None,
        shared_gil: bool = False,
        grace_period: float = 2.0,
        thread_name_prefix: str = "",
    ) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_worker is not None and max_tasks_per_worker <= 0:
            raise ValueError("max_tasks_per_worker must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        _check_timeout("task_timeout", task_timeout)
        init = b""
        if initializer is not None:
            init = dumps((initializer, tuple(initargs)))[1]
        self._timeout = task_timeout
        self._state = _PoolState(
            max_workers,
            init,
            max_tasks_per_worker,
            not shared_gil,
            grace_period,
            thread_name_prefix or f"manygil-pool-{id(self):x}-",
        )
        self._max_workers = max_workers
        weakref.finalize(self, self._state.shutdown, False, False)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> InterpreterFuture:
        """Schedule ``fn(*args, **kwargs)`` in a worker interpreter.

        Raises:
            NotShareableError: ``fn`` or an argument cannot be sent (the message says why).
            RuntimeError: the pool was shut down.
            BrokenInterpreterPool: the pool is broken.
        """
        return self._submit(fn, args, kwargs, self._timeout)

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> InterpreterFuture:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {describe(fn)}")
        payload = dumps((fn, args, kwargs))[1]  # a tuple: always a pickle
        future = InterpreterFuture()
        future._state_ref = weakref.ref(self._state)
        self._state.submit(_Item(future, payload, timeout, getattr(fn, "__qualname__", repr(fn))))
        return future

    def with_timeout(self, seconds: float | None) -> _TimedSubmitter:
        """A view of this pool whose ``submit``/``map``/``run`` give each task a time limit.

        ``pool.with_timeout(2).submit(fn, x)`` ends the future with ``TimeoutError`` and
        interrupts ``fn`` inside its interpreter if it runs longer than 2 s.
        """
        _check_timeout("seconds", seconds)
        return _TimedSubmitter(self, seconds)

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Like ``Executor.map``; ``chunksize > 1`` sends tasks in batches.

        Args:
            progress: show a tqdm progress bar (needs tqdm installed).
        """
        return self._map(fn, iterables, timeout, chunksize, progress, self._timeout)

    def _map(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        progress: bool,
        task_timeout: float | None,
    ) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        total = None
        if progress:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                raise ImportError("map(progress=True) needs tqdm: pip install tqdm") from None
            try:
                total = min(len(it) for it in iterables)  # type: ignore[arg-type]
            except TypeError:
                total = None
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            futures = [self._submit(fn, args, {}, task_timeout) for args in zip(*iterables)]
        else:
            futures = [
                self._submit(_worker.run_chunk, (fn, chunk), {}, task_timeout)
                for chunk in _chunks(iterables, chunksize)
            ]
        results = _results(futures, end, chunksize > 1)
        if progress:
            return _with_progress(results, total)
        return results

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` from asyncio; cancelling the await cancels the task
        in its interpreter, even while it runs."""
        return await _await(self.submit(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the pool: pending tasks still run unless ``cancel_futures``; with ``wait``
        return once every worker interpreter is closed."""
        self._state.shutdown(wait, cancel_futures)


class _TimedSubmitter:
    """The ``with_timeout`` view: submit/map/run with a per-task time limit."""

    def __init__(self, pool: InterpreterPoolExecutor, seconds: float | None) -> None:
        self._pool = pool
        self._seconds = seconds

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> InterpreterFuture:
        """``submit`` with this view's time limit."""
        return self._pool._submit(fn, args, kwargs, self._seconds)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        progress: bool = False,
    ) -> Iterator[Any]:
        """``map`` with this view's time limit for each task (each chunk)."""
        return self._pool._map(fn, iterables, timeout, chunksize, progress, self._seconds)

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``run`` with this view's time limit."""
        return await _await(self.submit(fn, *args, **kwargs))


async def _await(future: InterpreterFuture) -> Any:
    import asyncio

    # wrap_future cancels the concurrent future when the awaiting task is cancelled,
    # and InterpreterFuture.cancel() interrupts a running task.
    return await asyncio.wrap_future(future)


def _results(futures: list[InterpreterFuture], end: float | None, chunked: bool) -> Iterator[Any]:
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            remaining = None if end is None else end - time.monotonic()
            if chunked:
                yield from future.result(remaining)
            else:
                yield future.result(remaining)
    finally:
        for future in futures:
            future.cancel()


def _with_progress(results: Iterator[Any], total: int | None) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total) as bar:
        for value in results:
            bar.update(1)
            yield value


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
