"""Where a pool's task goes when it cannot run in an own-GIL interpreter.

A worker loads a task (its function and arguments) before running any of it.  When that
load needs an extension module that refuses an interpreter with its own GIL (CPython's
"does not support loading in subinterpreters", also when a package such as numpy wraps
it), the worker reports ``REFUSED`` instead of running anything.  The pool then runs the
task here, and sends later calls of the same function straight here::

    submit(fn) ─► interpreter worker ─► load fails: numpy refuses ─► REFUSED
                                                                     │
       future ◄── result ◄── process worker (ProcessPoolExecutor) ◄──┘ + routes[fn]

The process side is the standard library's ``ProcessPoolExecutor``, started on the first
fallback (a program that never falls back starts no process), with the pool's
``initializer``, ``initargs`` and ``max_tasks_per_worker``.  It uses ``forkserver`` where
there is one, else ``spawn``: never ``fork``, which CPython cannot do in a process that
runs interpreters.  ``fallback="shared-gil"`` uses a pool of interpreters that share the
main GIL instead (no process; one GIL for those tasks).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError
from typing import Any

__all__ = ("FALLBACKS", "Fallback", "FallbackWarning", "route_key")

FALLBACKS = ("process", "shared-gil", None)


class FallbackWarning(UserWarning):
    """A function's tasks run outside the own-GIL interpreters from now on (once per function)."""


def route_key(fn: object) -> str:
    """The name a function is routed by: ``module.qualname``."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def _interactive_main() -> bool:
    """``__main__`` is interactive (``python -c``, a REPL, a notebook) and cloudpickle,
    which sends its functions by value, is installed."""
    import importlib.util
    import sys

    main = sys.modules.get("__main__")
    return not getattr(main, "__file__", None) and importlib.util.find_spec("cloudpickle") is not None


def _call_pickled(data: bytes) -> Any:
    """Run a call pickled by value (in a process worker)."""
    import pickle

    fn, args, kwargs = pickle.loads(data)
    return fn(*args, **kwargs)


class Fallback:
    """The fallback pool of one ``InterpreterPoolExecutor`` and its routing table."""

    def __init__(
        self,
        kind: str,
        max_workers: int,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks_per_worker: int | None,
    ) -> None:
        self.kind = kind
        self.max_workers = max_workers
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks_per_worker
        self.lock = threading.Lock()
        self.pool: Executor | None = None
        self.closed = False
        self.routes: dict[str, str] = {}  # route_key -> why
        self.sent_by_value: set[str] = set()  # route_keys of __main__ functions sent by value
        self.resubmit: Callable[[], Callable[[Any], None] | None] | None = None  # the pool's, weakly

    def routed(self, fn: object) -> bool:
        return route_key(fn) in self.routes

    def route(self, fn: object, why: str) -> bool:
        """Send ``fn``'s calls here from now on; True the first time."""
        key = route_key(fn)
        with self.lock:
            if key in self.routes:
                return False
            self.routes[key] = why
            return True

    def by_value(self, item: Any) -> bool:
        """Importing the caller's script in the worker failed on a refusing module (a
        script that starts with ``import numpy``): send this function of ``__main__``
        again by value (cloudpickle), with only the globals it uses, so that a pure
        function of the script still runs in an interpreter.  False when it cannot."""
        key = route_key(item.fn)  # for a chunk of map(), the mapped function
        if (
            item.call is None
            or getattr(item.fn, "__module__", None) != "__main__"
            or key in self.sent_by_value
            or self.resubmit is None
            or (resubmit := self.resubmit()) is None
        ):
            return False
        try:
            import cloudpickle  # noqa: F401
        except ImportError:
            return False
        self.sent_by_value.add(key)
        try:
            resubmit(item)
        except Exception:  # noqa: BLE001 - shut down meanwhile, or it does not pickle by value
            return False
        return True

    def refused(self, fn: object, module: str) -> None:
        """A worker could not load a call of ``fn``: ``module`` refused its interpreter."""
        where = "a process worker" if self.kind == "process" else "a shared-GIL interpreter"
        if self.route(fn, f"{self.kind}: the extension module {module} refuses an own-GIL interpreter"):
            top = module.split(".")[0]
            try:
                warnings.warn(
                    f"manygil: {route_key(fn)} runs in {where} from now on: the extension module "
                    f"{module} refuses to load in an interpreter with its own GIL "
                    f"(see `python -m manygil check {top}`; pool.routes() lists every route)",
                    FallbackWarning,
                    stacklevel=2,
                )
            except Exception:  # noqa: BLE001 - warnings turned into errors, on a worker thread
                pass

    def _executor(self) -> Executor:
        with self.lock:
            if self.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self.pool is None:
                self.pool = self._start()
            return self.pool

    def _start(self) -> Executor:
        if self.kind == "process":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            extra: dict[str, Any] = {}
            if self.max_tasks is not None:
                extra["max_tasks_per_child"] = self.max_tasks
            return ProcessPoolExecutor(
                self.max_workers,
                mp_context=multiprocessing.get_context(method),
                initializer=self.initializer,
                initargs=self.initargs,
                **extra,
            )
        from ._pool import InterpreterPoolExecutor

        return InterpreterPoolExecutor(
            self.max_workers,
            initializer=self.initializer,
            initargs=self.initargs,
            max_tasks_per_worker=self.max_tasks,
            shared_gil=True,
            fallback=None,
        )

    def run(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run ``fn(*args, **kwargs)`` in the fallback pool and settle ``future`` (running)
        with its outcome; cancelling ``future`` cancels it there if it has not started."""
        executor = self._executor()
        if self.kind == "process" and _interactive_main():
            # A process cannot import an interactive __main__ (python -c, a notebook):
            # the call crosses by value.
            import cloudpickle

            inner = executor.submit(_call_pickled, cloudpickle.dumps((fn, args, kwargs)))
        else:
            inner = executor.submit(fn, *args, **kwargs)
        future._fallback = inner  # type: ignore[attr-defined]

        def settle(done: Future[Any]) -> None:
            if future.done():
                return
            try:
                if done.cancelled():
                    future.cancel()
                elif (exc := done.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(done.result())
            except InvalidStateError:
                pass  # cancelled meanwhile

        inner.add_done_callback(settle)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self.lock:
            self.closed = True
            pool = self.pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
