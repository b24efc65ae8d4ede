"""Dask distributed: run tasks in each worker's interpreter pool.

A ``WorkerPlugin`` (or ``dask worker --preload manygil.dask``) installs an
``InterpreterPoolExecutor`` on every worker under an executor name; tasks annotated
with that name run in own-GIL interpreters while the worker's bookkeeping (which
imports ``distributed``, and so ``psutil``, which refuses an own GIL) stays in the
main interpreter::

    from dask.distributed import Client
    import dask
    from manygil.dask import InterpreterPoolPlugin

    client = Client("tcp://scheduler:8786")
    client.register_plugin(InterpreterPoolPlugin())
    with dask.annotate(executor="interpreters"):
        futures = client.map(pure_python_function, items)

Only the task's own call crosses into an interpreter: ``distributed`` hands the
executor ``_run_task_simple(task, data, delay)``; this module runs ``task(data)`` in
the pool (``dask`` itself loads under an own GIL) and builds the message the worker
expects in the main interpreter.

Importing this module turns distributed's statistical profiler off
(``distributed.worker.profile.enabled``): it samples stacks with
``sys._current_frames()``, which on CPython 3.12 and 3.13 walks the frames of *every*
interpreter and frees them with the wrong allocator, crashing the process (seen here:
``free(): invalid pointer``).  Import it before the workers start (``--preload
manygil.dask`` does); a worker whose profiler already runs refuses the plugin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from .pool import InterpreterPoolExecutor

__all__ = ("InterpreterPoolPlugin", "WorkerInterpreterExecutor", "dask_setup")

EXECUTOR_NAME = "interpreters"
_PROFILER = "distributed.worker.profile.enabled"

try:
    import dask

    dask.config.set({_PROFILER: False})
except ImportError:  # pragma: no cover - dask is an optional extra
    pass


def run_graph_node(task: Any, data: dict[str, Any]) -> Any:
    """Runs in a worker interpreter: evaluate one dask task."""
    return task(data)


def _plain_call(task: Any, data: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
    """``(func, args, kwargs)`` of a task whose arguments are values or references to
    other tasks' results; None for anything more nested (it runs as a whole)."""
    try:
        from dask._task_spec import GraphNode, Task, TaskRef
    except ImportError:  # pragma: no cover - an older dask
        return None
    if type(task) is not Task:
        return None

    def value(a: Any) -> Any:
        if isinstance(a, TaskRef):
            return data[a.key]  # type: ignore[index]
        if isinstance(a, GraphNode):
            raise LookupError
        return a

    try:
        args = tuple(value(a) for a in task.args)
        kwargs = {k: value(v) for k, v in (task.kwargs or {}).items()}
    except (LookupError, AttributeError):
        return None
    return task.func, args, kwargs


class WorkerInterpreterExecutor(Executor):
    """The executor a Dask worker sees; tasks run in a manygil pool.

    (Its name must not contain "ThreadPoolExecutor": distributed gives such executors
    thread-local bookkeeping that cannot work across interpreters.)
    """

    def __init__(self, max_workers: int | None = None, **pool_options: Any) -> None:
        self.pool = InterpreterPoolExecutor(max_workers, **pool_options)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn`` in the pool; ``distributed``'s task runner is unwrapped so that
        only the task itself crosses into an interpreter."""
        if getattr(fn, "__name__", "") == "_run_task_simple" and "distributed" in getattr(fn, "__module__", ""):
            task, data, delay = args
            return self._run_task(task, data, delay)
        return self.pool.submit(fn, *args, **kwargs)

    def _run_task(self, task: Any, data: dict[str, Any], delay: float) -> Future[Any]:
        outer: Future[Any] = Future()
        outer.set_running_or_notify_cancel()
        start = time.time()
        call = _plain_call(task, data)
        if call is not None:
            # The common case: send the function and its resolved arguments, so the
            # interpreter never imports dask (a large import, in every interpreter).
            fn, args, kwargs = call
            inner = self.pool.submit(fn, *args, **kwargs)
        else:
            inner = self.pool.submit(run_graph_node, task, data)

        def done(f: Future[Any]) -> None:
            from distributed.core import error_message
            from distributed.sizeof import sizeof  # type: ignore[attr-defined]

            stop = time.time()
            msg: dict[str, Any]
            exc = f.exception()
            if exc is None:
                result = f.result()
                msg = {"op": "task-finished", "status": "OK", "result": result,
                       "nbytes": sizeof(result), "type": type(result) if result is not None else None}
            elif isinstance(exc, (SystemExit, KeyboardInterrupt)):
                outer.set_exception(exc)
                return
            else:
                msg = error_message(exc)  # type: ignore[assignment]
                msg["op"] = "task-erred"
                msg["actual_exception"] = exc
            msg["start"] = start + delay
            msg["stop"] = stop + delay
            msg["thread"] = threading.get_ident()
            outer.set_result(msg)

        inner.add_done_callback(done)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the pool down."""
        self.pool.shutdown(wait, cancel_futures=cancel_futures)


def _install(worker: Any, name: str, max_workers: int | None, options: dict[str, Any]) -> None:
    import threading as _threading

    profiler = getattr(getattr(worker, "io_loop", None), "profile", None)
    if isinstance(profiler, _threading.Thread) and profiler.is_alive():
        raise RuntimeError(
            "manygil.dask: distributed's profiler runs in this worker, and it crashes the process "
            "once interpreters run Python (sys._current_frames() walks every interpreter); start "
            "the workers with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False, or import "
            "manygil.dask before they start (dask worker --preload manygil.dask)"
        )
    worker.executors[name] = WorkerInterpreterExecutor(max_workers or worker.state.nthreads, **options)


try:
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - distributed is an optional extra
    _WorkerPlugin = object  # type: ignore[assignment, misc]


class InterpreterPoolPlugin(_WorkerPlugin):
    """Installs a manygil pool on every worker as the executor ``name``.

    Args:
        name: the executor name for ``dask.annotate(executor=...)``.
        max_workers: interpreters per worker (default: the worker's thread count).
        **pool_options: more ``InterpreterPoolExecutor`` arguments.
    """

    def __init__(self, name: str = EXECUTOR_NAME, max_workers: int | None = None, **pool_options: Any) -> None:
        self.name = f"manygil-{name}"
        self.executor_name = name
        self.max_workers = max_workers
        self.pool_options = pool_options

    def setup(self, worker: Any) -> None:
        """Called by distributed on each worker."""
        _install(worker, self.executor_name, self.max_workers, self.pool_options)

    def teardown(self, worker: Any) -> None:
        """Called by distributed when the worker closes."""
        executor = worker.executors.pop(self.executor_name, None)
        if executor is not None:
            executor.shutdown(wait=False)


def dask_setup(worker: Any) -> None:
    """``dask worker --preload manygil.dask``: install the ``interpreters`` executor."""
    _install(worker, EXECUTOR_NAME, None, {})
