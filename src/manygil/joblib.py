"""joblib on interpreters: the ``"manygil"`` backend for ``joblib.Parallel``.

Importing this module registers the backend with joblib's public API
(``joblib.register_parallel_backend``); ``register()`` does it again, for instance as
joblib's default::

    import manygil.joblib                       # registers "manygil"
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend="manygil"):
        squares = Parallel(n_jobs=4)(delayed(pow)(x, 2) for x in range(100))

Each ``Parallel`` call (or ``with Parallel(...)`` block) gets an
``InterpreterPoolExecutor`` of ``n_jobs`` workers; keyword arguments given to
``parallel_config(backend="manygil", ...)`` go to that executor (``task_timeout``,
``max_tasks_per_worker``, ``fallback``, ``initializer``...).

joblib itself does not load in an interpreter with its own GIL (loky, which joblib
imports, imports ``faulthandler``, which refuses one), so joblib's batch object
(``BatchedCalls``) does not cross: its calls do, without joblib::

    Parallel ─ BatchedCalls ─► ManygilBackend.submit            (the caller's thread)
                                │ one task per function of the batch, routed by that
                                │ function, as the executor routes a chunk of map()
                                ▼
                   InterpreterPoolExecutor ─► own-GIL interpreter: _run_calls(fn, calls)
                                │          └► process worker, when fn or an argument
                                │             needs a module that refuses (numpy...)
                                ▼
    joblib's callback ◄─ the batch's future: its tasks' results in the batch's order
                         (set by the pool's result thread of the last task to finish)

Actors: the caller's thread (or the thread joblib starts to close a generator that
another thread collected) runs ``configure``, ``submit``, ``abort_everything`` and
``terminate``.  A pool thread runs a task's done callbacks, in this order: joblib's
callback (directly, or through ``_Joined._part_done`` for a batch of several
functions), which may ``submit`` the next batch; then ``ManygilBackend._forget``.
``abort_everything`` returns once every task's ``_forget`` has run, so no callback of an
aborted call runs into the next one.  ``ManygilBackend._lock`` (and its condition
``_idle``) guards the set of unfinished tasks, ``_Joined._lock`` a batch's partial
results; neither is held while a callback runs or while the other is taken.

In a process worker (the fallback) joblib loads, and a task runs under the nested
backend that joblib gives a batch (threads, then sequential), as under joblib's own
``BatchedCalls``; in an own-GIL interpreter joblib cannot load, so a task that calls
``Parallel`` there fails with an ``ImportError`` that says so.
"""

from __future__ import annotations

import queue
import sys
import threading
import types
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import CancelledError, Future
from typing import Any

from . import _backend

__all__ = ("ManygilBackend", "register")

BACKEND_NAME = "manygil"

# Keyword arguments that joblib's Parallel hands every backend's configure(): options of
# its own process backends (memory mapping of large arrays, the multiprocessing context,
# verbosity), which mean nothing to interpreters.
_JOBLIB_OPTIONS = frozenset({"max_nbytes", "temp_folder", "mmap_mode", "verbose", "context"})

# (module, class name, nesting level, n_jobs) of the backend that Parallel calls made by
# a task use; plain data, so that the task loads where joblib does not.
_Nested = tuple[str, str, "int | None", "int | None"]

_IN_MAIN = _backend.get_current()[0] == _backend.get_main()[0]


def _run_calls(fn: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
               nested: _Nested | None) -> list[Any]:
    """Runs in a worker: ``fn(*args, **kwargs)`` for each call, in order."""
    if nested is not None and "joblib" in sys.modules:
        # A process worker (this module imported joblib; it does not load in an own-GIL
        # interpreter): a Parallel call of the task uses the nested backend, as under
        # joblib's BatchedCalls.
        import importlib

        from joblib import parallel_config

        module, name, level, n_jobs = nested
        backend = getattr(importlib.import_module(module), name)(nesting_level=level)
        with parallel_config(backend=backend, n_jobs=n_jobs):
            return [fn(*args, **kwargs) for args, kwargs in calls]
    try:
        return [fn(*args, **kwargs) for args, kwargs in calls]
    except ImportError as exc:
        if not _IN_MAIN:
            from ._worker import refusing_module

            name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
            if _imports_joblib(exc):
                exc.add_note(
                    "manygil.joblib: joblib does not load in an interpreter with its own GIL (it "
                    "imports faulthandler), so a task that uses it must run in a process worker: "
                    f"parallel_config(backend=\"manygil\", in_processes=[{name}]), or import joblib "
                    "at the top of the task's module"
                )
            elif refusing_module(exc) is not None:
                exc.add_note(
                    f"manygil.joblib: to run {name} in process workers: "
                    f"parallel_config(backend=\"manygil\", in_processes=[{name}])"
                )
        raise


def _imports_joblib(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while importing joblib."""
    tb = exc.__traceback__
    while tb is not None:
        if "joblib" in tb.tb_frame.f_code.co_filename.replace("\\", "/").split("/"):
            return True
        tb = tb.tb_next
    return False


def _group_key(fn: object) -> Hashable:
    """Calls of one function go as one task; ``delayed(obj.method)`` makes a new bound
    method for each call, the same function of the same object."""
    if isinstance(fn, types.MethodType):
        return (id(fn.__self__), id(fn.__func__))
    return id(fn)


class _Joined(Future[list[Any]]):
    """A joblib batch sent as several tasks (one per function in it): their results in
    the batch's order, or the first exception that one of them ends with."""

    def __init__(self, size: int, parts: list[tuple[Future[list[Any]], list[int]]]) -> None:
        super().__init__()
        self.set_running_or_notify_cancel()
        self._lock = threading.Lock()
        self._results: list[Any] = [None] * size
        self._left = len(parts)
        for part, where in parts:
            part.add_done_callback(lambda part, where=where: self._part_done(part, where))  # type: ignore[misc]

    def _part_done(self, part: Future[list[Any]], where: list[int]) -> None:
        error = CancelledError() if part.cancelled() else part.exception()
        with self._lock:
            if self._left == 0:
                return  # an earlier part failed: this batch is settled
            if error is None:
                for i, value in zip(where, part.result()):
                    self._results[i] = value
                self._left -= 1
                if self._left:
                    return
            else:
                self._left = 0
        if error is None:
            self.set_result(self._results)
        else:
            self.set_exception(error)


if _IN_MAIN:
    # Only where joblib loads: a worker interpreter imports this module to find
    # _run_calls, and must not import joblib (it would refuse the task).
    import joblib
    from joblib.parallel import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
    )

    from ._waits import main_wait
    from ._pool import InterpreterPoolExecutor

    class ManygilBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
        """joblib's parallel backend on an ``InterpreterPoolExecutor``.

        Registered as ``"manygil"`` (``register()``).  ``n_jobs`` is the number of
        workers, as for joblib's process backends: ``-1`` all cores
        (``joblib.cpu_count()``), ``-2`` all but one, ``None`` and ``1`` run the calls in
        the caller, one after another (joblib's sequential backend).  Batches are sized by
        joblib (``batch_size="auto"``); ``return_as="generator"`` and
        ``"generator_unordered"`` work; the first error cancels the calls not finished,
        running ones included.

        Args:
            nesting_level: set by joblib.
            inner_max_num_threads: not supported (joblib refuses it for this backend).
            in_processes: functions to run in process workers from their first call: those
                that import a module refusing an own-GIL interpreter (numpy...) in their
                body, or call joblib (the executor's ``route(fn, "process")``).
            **executor_kwargs: passed to ``InterpreterPoolExecutor`` (not
                ``max_workers``: that is ``n_jobs``).
        """

        supports_retrieve_callback = True
        supports_inner_max_num_threads = False
        supports_sharedmem = False  # require="sharedmem" makes joblib use threads
        uses_threads = False  # prefer="threads" makes joblib use threads
        default_n_jobs = 1

        def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                     in_processes: Iterable[Callable[..., Any]] = (), **executor_kwargs: Any) -> None:
            super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
            self._in_processes = tuple(in_processes)
            self._executor_kwargs = executor_kwargs
            self._executor: InterpreterPoolExecutor | None = None
            self._nested: _Nested | None = None
            self._lock = threading.Lock()
            self._idle = threading.Condition(self._lock)  # notified when _unfinished empties
            self._unfinished: set[Future[Any]] = set()  # a task's until its callbacks ran

        def effective_n_jobs(self, n_jobs: int | None) -> int:
            """The number of workers for ``n_jobs``, as joblib's process backends count."""
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 in Parallel has no meaning")
            if n_jobs is None:
                return 1
            if n_jobs < 0:
                return max(int(joblib.cpu_count()) + 1 + n_jobs, 1)
            return n_jobs

        def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                      require: str | None = None, **kwargs: Any) -> int:
            """Start the executor for a ``Parallel`` call; the number of workers."""
            workers = self.effective_n_jobs(n_jobs)
            if workers == 1:
                raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
            options = {**self._executor_kwargs, **{k: v for k, v in kwargs.items() if k not in _JOBLIB_OPTIONS}}
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._executor = InterpreterPoolExecutor(workers, **options)
            for fn in self._in_processes:
                self._executor.route(fn, "process")
            nested, nested_jobs = self.get_nested_backend()
            self._nested = (type(nested).__module__, type(nested).__qualname__,
                            nested.nesting_level, nested_jobs)
            self.parallel = parallel
            return workers

        def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> Future[Any]:
            """Send a batch (joblib's ``BatchedCalls``): one task per function in it."""
            executor = self._executor
            if executor is None:
                raise RuntimeError("the manygil backend has no executor: joblib did not configure it")
            calls = getattr(func, "items", None)
            parts: list[tuple[Future[Any], list[int]]]
            if not isinstance(calls, list):  # not a batch: the callable is the task
                parts = [(executor.submit(func), [])]
            else:
                groups: dict[Hashable, tuple[Callable[..., Any], list[int], list[Any]]] = {}
                for i, (fn, args, kwargs) in enumerate(calls):
                    group = groups.setdefault(_group_key(fn), (fn, [], []))
                    group[1].append(i)
                    group[2].append((args, kwargs))
                # Routed by fn, not by _run_calls (as the executor's map() routes a chunk):
                # a function whose module needs numpy goes to processes, the others stay.
                parts = [
                    (executor._submit(_run_calls, (fn, chunk, self._nested), {}, executor._timeout, fn), where)
                    for fn, where, chunk in groups.values()
                ]
            future = parts[0][0] if len(parts) == 1 else _Joined(len(calls or ()), parts)
            if callback is not None:
                future.add_done_callback(callback)
            for part, _ in parts:  # after joblib's callback: see abort_everything
                with self._lock:
                    self._unfinished.add(part)
                part.add_done_callback(self._forget)
            return future

        def _forget(self, future: Future[Any]) -> None:
            with self._lock:
                self._unfinished.discard(future)
                if not self._unfinished:
                    self._idle.notify_all()

        def retrieve_result_callback(self, future: Future[Any]) -> Any:
            """The batch's results (a list), or its exception raised as the task's own."""
            return future.result()

        def abort_everything(self, ensure_ready: bool = True) -> None:
            """Cancel every call not finished, running ones too (joblib calls this on the
            first error, and when a generator of results is closed early), and return once
            joblib's callbacks for them have run: a late one would otherwise take the next
            ``Parallel`` call of a ``with Parallel()`` block for its own and dispatch the
            rest of this one's calls into it."""
            with self._lock:
                unfinished = list(self._unfinished)
            for future in unfinished:
                future.cancel()
            with self._lock:
                while self._unfinished:
                    main_wait(self._idle)
            # joblib 1.6 keeps the batches it had read ahead and not sent (its
            # _ready_batches) after an abort, and the next call of a `with Parallel()`
            # block sends them first: their results open its list (loky does the same).
            ready = getattr(self.parallel, "_ready_batches", None)
            if isinstance(ready, queue.Queue):
                while True:
                    try:
                        ready.get_nowait()
                    except queue.Empty:
                        break

        def terminate(self) -> None:
            """Shut the executor down, once its tasks are done or cancelled."""
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            self.reset_batch_stats()

    def register(make_default: bool = False) -> None:
        """Register the backend with joblib as ``"manygil"`` (importing this module does);
        with ``make_default``, ``Parallel`` uses it when no backend is given."""
        joblib.register_parallel_backend(BACKEND_NAME, ManygilBackend, make_default=make_default)

    register()
