"""The facade of :class:`manygil.InterpreterPoolExecutor`: it checks its arguments,
builds each task, and hands it to the router or the interpreter side; and the program's
end for every pool.

Imports point one way::

    _pool (facade) ──► _router ──► the sides: _interp_side, ──► services: _seats, _waits,
                                   _process_side, _shared_side     _futures, _refusals, _native

The facade makes the parts of a pool and wires them: the interpreter side
(``_interp_side.InterpSide``), the other side (``_process_side.ProcessSide``: process
workers; or ``_shared_side.SharedGilSide``: a pool of shared-GIL interpreters), the router between them (``_router.Router``), and the seats the two
sides share (``_seats.Seats``).  See docs/architecture.md for the actors and the locks.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

from . import _backend, _exit, _faults, _worker
from ._cpython import program_ending, run_atexit_handlers
from ._exceptions import BrokenInterpreterPool
from ._interp_side import InterpreterFuture, InterpSide, _Item, _payload, end_of_program
from ._process_side import ProcessSide
from ._router import FALLBACKS, Router, route_key
from ._seats import Seats
from ._shared_side import SharedGilSide
from ._timeouts import TIMEOUT_MAX, check_timeout
from ._transport import describe, dumps, has_cloudpickle, main_hint, task_label, under_main_guard

__all__ = ("InterpreterFuture", "InterpreterPoolExecutor")

# The router of each pool's interpreter side, for the program's end (which drains both).
_routers: weakref.WeakKeyDictionary[InterpSide, Router[_Item]] = weakref.WeakKeyDictionary()


def _other_in_flight(state: InterpSide) -> int:
    router = _routers.get(state)
    return router.in_flight() if router is not None else 0


def _python_exit() -> None:
    states = end_of_program()
    _faults.point("program.ending")
    # The shared-GIL sides' own pools last: their outer pools may send them refused
    # tasks until their own are done (on 3.12, which starts no thread at the end, their
    # workers must still be there for them).
    inner = _inner_sides()
    states = [s for s in states if s not in inner] + [s for s in states if s in inner]
    interrupted = False
    try:
        if isinstance(getattr(sys, "last_exc", None), KeyboardInterrupt):
            # The script ended by Ctrl-C, its traceback just printed: say why it waits.
            count = sum(s.in_flight() + _other_in_flight(s) for s in states)
            if count:
                sys.stderr.write(
                    f"manygil: waiting for the {count} task{'s' if count > 1 else ''} left in the pools "
                    "before exiting, as concurrent.futures does; Ctrl-C again cancels them\n"
                )
                sys.stderr.flush()
        for state in states:
            if state not in inner:
                state.shutdown(wait=True, cancel_futures=False)
        # The other sides last: an interpreter may hand one a task (a refusal) until its
        # own tasks are done.  Their tasks run too, as a ProcessPoolExecutor's do.
        for state in states:
            if (router := _routers.get(state)) is not None:
                router.shutdown(wait=True, cancel_futures=False)
        for state in states:
            if state in inner:  # shut down by its router above, unless that pool is gone
                state.shutdown(wait=True, cancel_futures=False)
    except KeyboardInterrupt:
        # Ctrl-C while the program's end waits for the tasks: stop them all, as leaving
        # a with block by Ctrl-C does (finalizing with a task running aborted the process).
        interrupted = True
        for state in states:
            state.cancel_all()
            if (router := _routers.get(state)) is not None:
                router.cancel_all()
        for state in states:
            state.shutdown(wait=True, cancel_futures=True)
            if (router := _routers.get(state)) is not None:
                router.shutdown(wait=True, cancel_futures=True)
    # A worker abandoned in C still runs inside its interpreter, and CPython cannot
    # finalize an interpreter with a running thread (3.13 waits forever, 3.12 aborts).
    stuck = _wait_for_abandoned(states)
    if stuck:
        _exit_without_finalizing(stuck)
    if interrupted:
        # Said in one line, not raised: raised here, it is only printed ("Exception
        # ignored on threading shutdown" and a traceback); the exit status is CPython's.
        sys.stderr.write("manygil: Ctrl-C at the program's end: the pools' tasks were cancelled\n")
        sys.stderr.flush()


def _inner_sides() -> set[InterpSide]:
    """The interpreter sides of the pools that serve as shared-GIL sides."""
    inner = set()
    for router in list(_routers.values()):
        if isinstance(router.other, SharedGilSide) and isinstance(router.other.pool, InterpreterPoolExecutor):
            inner.add(router.other.pool._side)
    return inner


def _wait_for_abandoned(states: list[InterpSide]) -> list[str]:
    """Wait for the workers abandoned in C (main thread, at the program's end), as Python
    waits at exit for work in flight: each pool's grace period once more, then, saying so
    on ``sys.stderr``, up to its ``exit_timeout`` in all; what still runs then, or at once
    on Ctrl-C."""
    try:
        waiting = [(s, w) for s in states for w in s.join_abandoned(min(s.limits.grace, s.exit_timeout))]
        for state, worker in waiting:
            sys.stderr.write(
                f"manygil: the program's end waits up to {state.exit_timeout:g} s for {worker.name}, "
                f"abandoned in {worker.abandoned_in}() after its time limit or cancel(), to return; "
                "Ctrl-C to exit now\n"
            )
        sys.stderr.flush()
        stuck = [w for s in states for w in s.join_abandoned(max(0.0, s.exit_timeout - s.limits.grace))]
    except KeyboardInterrupt:
        stuck = [w for s in states for w in s.join_abandoned(0.0)]
    return [f"{w.name} is still stuck in {w.abandoned_in}(), abandoned after its time limit or cancel()" for w in stuck]


def _exit_without_finalizing(stuck: list[str]) -> None:
    sys.stderr.write(
        "manygil: exiting with status 1 without finalizing the interpreter: "
        + "; ".join(stuck)
        + ". CPython cannot finalize an interpreter while one of its threads still runs; "
        "atexit handlers ran and the standard streams were flushed. Give such tasks a way "
        "to return (a timeout on the blocking call) to exit normally.\n"
    )
    run_atexit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing left to save
            pass
    os._exit(1)


# Like ThreadPoolExecutor: finish the work in flight before non-daemon threads are
# joined at interpreter exit (atexit handlers would run too late).
_exit.register(_python_exit)


def _shut_down(side: InterpSide, router: Router[_Item] | None) -> None:
    """An executor dropped without ``shutdown()`` (its finalizer): both sides stop taking
    tasks, without waiting.  Dropped by a garbage collection, which runs on whatever
    thread allocated, maybe one that holds a lock of this pool (the process side's, the
    seats'), the shutdown runs on a thread of its own: run here it would take the
    interpreter side's lock after that one, the reverse of their order, and deadlock
    with a worker that takes them in order."""
    if _collecting:
        thread = threading.Thread(target=_shut_down_now, args=(side, router), name="manygil-finalizer", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            if program_ending():  # CPython 3.12: its exit hook (_python_exit) shuts every pool down
                return
            _shut_down_now(side, router)  # no thread to be had (a thread limit): here, as before
        return
    _shut_down_now(side, router)


def _shut_down_now(side: InterpSide, router: Router[_Item] | None) -> None:
    side.shutdown(False, False)
    if router is not None:
        router.shutdown(False, False)


_collecting = False  # a garbage collection runs (its finalizers among them)


def _gc_phase(phase: str, info: dict[str, int]) -> None:
    global _collecting
    _collecting = phase == "start"


gc.callbacks.append(_gc_phase)


def _preloads_main() -> bool:
    """Whether a new pool's workers import the caller's script as they start: when it is
    a ``.py`` file or a module run with ``-m`` (not an installed command such as
    ``pytest``, nor a package's ``__main__``, whose functions are not tasks), and not on
    3.12, where a keyword call of some C functions made first in an own-GIL interpreter
    (a script's imports may make one) makes the process abort at exit (see
    ``_transport``)."""
    if sys.version_info < (3, 13) or _backend.get_current()[0] != _backend.get_main()[0]:
        return False
    name, file = main_hint()
    if name:
        return not name.endswith(".__main__")
    return file.endswith(".py")


def _checked_arguments(
    max_workers: int | None,
    initializer: Callable[..., object] | None,
    max_tasks_per_worker: int | None,
    task_timeout: float | None,
    grace_period: float,
    exit_timeout: float | None,
    fallback: str | None,
) -> tuple[int, float | None, float, float]:
    """A new pool's arguments checked (a clear error for each), with their defaults:
    ``max_workers``, ``task_timeout``, ``grace_period``, ``exit_timeout``."""
    if fallback not in FALLBACKS:
        raise ValueError(
            f"fallback must be \"process\", \"shared-gil\" or None, got {fallback!r}"
        )
    if max_workers is None:
        max_workers = os.cpu_count() or 1
    _check_count("max_workers", max_workers)
    if max_tasks_per_worker is not None:
        _check_count("max_tasks_per_worker", max_tasks_per_worker)
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    task_timeout = _check_timeout("task_timeout", task_timeout)
    grace_period = _check_seconds("grace_period", grace_period)
    exit_timeout = _default_exit_timeout() if exit_timeout is None else _check_seconds("exit_timeout", exit_timeout)
    return max_workers, task_timeout, grace_period, exit_timeout


def _other_side(
    side: InterpSide,
    max_workers: int,
    fallback: str | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks_per_worker: int | None,
    forward_output: bool,
) -> ProcessSide | SharedGilSide | None:
    """The side where the tasks that a module refused go: process workers on the seats
    they share with the interpreters of ``side``, a pool of shared-GIL interpreters (made
    on its first task), or none."""
    if fallback == "process":
        seats = Seats(max_workers)
        side.attach(seats=seats)
        seats.attach("interp", side.wants_seat, side.seat_freed)
        deadlines = side.deadlines  # one watchdog for the time limits of both sides
        return ProcessSide(max_workers, initializer, initargs, max_tasks_per_worker, forward_output, seats, deadlines)
    if fallback == "shared-gil":
        return SharedGilSide(functools.partial(
            InterpreterPoolExecutor,
            max_workers,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_worker,
            shared_gil=True,
            fallback=None,
            forward_output=forward_output,
        ))
    return None


def _checked_map(iterables: tuple[Iterable[Any], ...], chunksize: int, progress: bool, buffersize: int | None) -> int | None:
    """``map``'s arguments checked; with ``progress``, how many tasks it runs, if known."""
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an int, got {chunksize!r}")
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    if buffersize is not None and (not isinstance(buffersize, int) or isinstance(buffersize, bool)):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")
    if not progress:
        return None
    try:
        import tqdm  # noqa: F401
    except ImportError:
        raise ImportError("map(progress=True) needs tqdm: pip install tqdm") from None
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class InterpreterPoolExecutor(ThreadPoolExecutor):
    """A ``concurrent.futures`` executor that runs tasks in interpreters with their own GIL.

    Args:
        max_workers: how many tasks run at once, in interpreters and process workers
            together; default ``os.cpu_count()``.
        initializer: called in each worker interpreter before its first task.
        initargs: arguments for ``initializer``.
        max_tasks_per_worker: replace a worker's interpreter after this many tasks.
        task_timeout: a time limit in seconds for every task (see also ``with_timeout``).
        shared_gil: run the workers under the main GIL, for extension modules that
            refuse to load in an interpreter with its own GIL (no parallel speed-up).
        grace_period: seconds a task has to stop after its time limit or ``cancel()``
            before its worker is abandoned and replaced.
        exit_timeout: at the program's end, how long to wait for a worker abandoned in a
            C call to return (Python waits at exit for work in flight; CPython cannot
            finalize an interpreter whose thread runs): then, or on Ctrl-C, the process
            exits with status 1 without finalizing.  Default ``$MANYGIL_EXIT_TIMEOUT``,
            else 30 s.
        thread_name_prefix: prefix for the names of the pool's threads.
        dump_on_timeout: when a task hits its time limit, write its interpreter's
            stacks (see ``manygil.dump_tracebacks``) to ``sys.stderr``, or to this file.
        forward_output: send what tasks print to the caller's ``sys.stdout`` and
            ``sys.stderr``, and their logging records to the caller's handlers (on by
            default); off, workers write straight to the process's file descriptors.
        fallback: where a task goes that cannot run in an own-GIL interpreter because
            loading its function or arguments imports an extension module that refuses
            one (numpy, for one): ``"process"`` (default) runs it in a process worker,
            ``"shared-gil"`` in an interpreter that shares the main GIL, ``None`` raises
            the ImportError.  Later calls of that function go there directly; see
            ``routes()`` and ``route()``.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_worker`` is not positive, a time
            argument is not a number of seconds, or ``fallback`` is not one of the above.
        TypeError: ``initializer`` is not callable.
        RuntimeError: created inside an interpreter other than the main one, or while
            tracemalloc traces on CPython 3.14 (or, without ``shared_gil``, on 3.12).
    """

    # A ThreadPoolExecutor by type only, as the standard library's InterpreterPoolExecutor
    # is one: asyncio's loop.set_default_executor() accepts nothing else.  None of its
    # threads or queue are used: __init__, submit, map and shutdown are this pool's own.
    BROKEN = BrokenInterpreterPool

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
        exit_timeout: float | None = None,
        thread_name_prefix: str = "",
        dump_on_timeout: bool | TextIO = False,
        forward_output: bool = True,
        fallback: str | None = "process",
    ) -> None:
        _worker.check_not_importing_main()
        here, main = _backend.get_current()[0], _backend.get_main()[0]
        if here != main:
            # Its workers would be daemon threads, which an interpreter other than the
            # main one cannot start; refused before anything is registered, so that no
            # shutdown() waits for a worker that never started.
            raise RuntimeError(
                f"cannot create an InterpreterPoolExecutor inside interpreter {here}, only in the "
                "main interpreter: a task that needs more tasks can return them to its caller, "
                "which can submit from the main interpreter"
            )
        _backend.check_tracemalloc(own_gil=not shared_gil)
        max_workers, task_timeout, grace_period, exit_timeout = _checked_arguments(
            max_workers, initializer, max_tasks_per_worker, task_timeout, grace_period, exit_timeout, fallback
        )
        _exit.run_first()  # the program's end waits for this pool before process pools stop
        init: bytes = b""
        init_pins: tuple[int, ...] = ()
        if initializer is not None:
            _, init, init_pins = dumps((initializer, tuple(initargs)))
        self._timeout = task_timeout
        self._side = InterpSide(
            max_workers,
            init,
            init_pins,
            max_tasks_per_worker,
            not shared_gil,
            grace_period,
            exit_timeout,
            thread_name_prefix or f"manygil-pool-{id(self):x}-",
            dump_on_timeout,
            forward_output,
        )
        self._max_workers = max_workers
        self._side_ref = weakref.ref(self._side)
        # The routing table, and the by-value resend of a script's functions (which
        # fallback=None keeps); with shared_gil every task may import anything.
        self._router: Router[_Item] | None = None
        if not shared_gil:
            other = _other_side(self._side, max_workers, fallback, initializer, tuple(initargs), max_tasks_per_worker, forward_output)
            # The side, not this object: the pool still runs its tasks once the executor
            # is dropped (`del pool` before the program's end); held weakly.
            self._router = Router(other, self._side)
            self._side.attach(router=self._router)
            _routers[self._side] = self._router
        # Dropped without shutdown: the interpreter side first (a refusal may still send a
        # task to the other side until its own tasks are done), as the program's end does.
        weakref.finalize(self, _shut_down, self._side, self._router)
        if _preloads_main():
            # A script a module refused in an earlier pool is not imported again: its
            # functions go by value (see RouteTable.refuse_script).
            refused = self._router is not None and self._router.script_refused
            self._side.warm_up(min(max_workers, os.cpu_count() or 1), preload=not refused)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> InterpreterFuture:
        """Schedule ``fn(*args, **kwargs)`` in a worker interpreter.

        Raises:
            NotShareableError: ``fn`` or an argument cannot be sent (the message says why).
            RuntimeError: the pool was shut down.
            BrokenInterpreterPool: the pool is broken.
        """
        return self._submit(fn, args, kwargs, self._timeout)

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        route_fn: Callable[..., Any] | None = None,
        *,
        resend: bool = False,
    ) -> InterpreterFuture:
        """Submit ``fn(*args, **kwargs)`` with a time limit, routed (to the interpreters
        or the processes) as ``route_fn`` is: a chunk of a ``map`` goes where the mapped
        function goes.  Runs in the caller's thread.  The one entry of every submission:
        ``submit``, ``map``, and manygil's own integrations (``manygil.Pool``, the joblib
        backend, ``manygil run``), which call it with their chunk runners.  ``resend``:
        a task another pool took before it shut down (the shared-GIL side's), which runs
        even though this pool is shutting down or the program ends."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {describe(fn)}")
        route_fn = route_fn or fn  # a chunk of map() is routed by the mapped function
        call = None
        if self._router is None:
            by_value = under_main_guard(route_fn) and has_cloudpickle()  # see Router.place
        else:
            elsewhere, by_value = self._router.place(route_fn)
            if elsewhere:
                return self._submit_fallback(fn, args, kwargs, timeout, route_fn)
            call = (fn, args, kwargs)
        try:
            payload, pins, keep = _payload(fn, args, kwargs, by_value)
        except Exception as exc:
            if not by_value or self._router is None or under_main_guard(route_fn):
                raise
            failure = self._router.table.not_sent(route_fn, exc)  # or raises exc
            if failure is None:
                return self._submit_fallback(fn, args, kwargs, timeout, route_fn)
            return self._failed(failure)
        future = InterpreterFuture()
        future._side_ref = self._side_ref
        item = _Item(future, payload, pins, timeout, route_fn, call, by_value, keep)
        try:
            self._side.submit(item, resend=resend)
        except BaseException:
            item.drop()  # now, not when the traceback that holds it is collected
            raise
        return future

    def _submit_fallback(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        route_fn: Callable[..., Any],
    ) -> InterpreterFuture:
        assert self._router is not None
        self._side.check_open()
        future = InterpreterFuture()
        future.set_running_or_notify_cancel()
        self._router.run(future, fn, args, kwargs, timeout=timeout, label=task_label(route_fn))
        return future

    def _failed(self, exc: BaseException) -> InterpreterFuture:
        """A future failed with ``exc`` at once: a task that can run nowhere."""
        self._side.check_open()
        future = InterpreterFuture()
        future.set_running_or_notify_cancel()
        future.set_exception(exc)
        return future

    def routes(self) -> dict[str, str]:
        """The functions whose tasks run outside the own-GIL interpreters, and why:
        ``{"module.qualname": "process: the extension module numpy... refuses ..."}``."""
        if self._router is None or self._router.kind is None:
            return {}
        table = self._router.table
        with table.lock:
            return dict(table.routes)

    def route(self, fn: Callable[..., Any], where: str = "process") -> None:
        """Run ``fn``'s tasks in the fallback pool from now on (``where`` must be this
        pool's ``fallback``), e.g. for a function that imports numpy inside its body."""
        if self._router is None or self._router.kind is None or where != self._router.kind:
            raise ValueError(
                f"route({route_key(fn)}, {where!r}): this pool's fallback is "
                f"{self._router.kind if self._router else None!r}; create the pool with "
                f"InterpreterPoolExecutor(fallback={where!r})"
            )
        self._router.table.route(fn, f"{where}: pool.route()")
        self._router.withdraw_routed()  # its calls already queued go there too
        self._router.flush()

    def with_timeout(self, seconds: float | None) -> _TimedSubmitter:
        """A view of this pool whose ``submit``/``map``/``run`` give each task a time limit.

        ``pool.with_timeout(2).submit(fn, x)`` ends the future with ``TimeoutError`` and
        interrupts ``fn`` inside its interpreter if it runs longer than 2 s.
        """
        return _TimedSubmitter(self, _check_timeout("seconds", seconds))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Like ``Executor.map``; ``chunksize > 1`` sends tasks in batches.

        Args:
            buffersize: at most this many tasks (chunks) submitted and not yet yielded,
                as in 3.14's ``Executor.map``: the iterables are read as results are
                consumed, so they may be endless.
            progress: show a tqdm progress bar (needs tqdm installed).
        """
        return self._map(fn, iterables, timeout, chunksize, progress, self._timeout, buffersize)

    def _map(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        progress: bool,
        task_timeout: float | None,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        total = _checked_map(iterables, chunksize, progress, buffersize)
        end = None if timeout is None else time.monotonic() + timeout
        calls: Iterator[Any] = zip(*iterables) if chunksize == 1 else _chunks(iterables, chunksize)

        def submit(call: Any) -> InterpreterFuture:
            if chunksize == 1:
                future = self._submit(fn, call, {}, task_timeout)
            else:
                future = self._submit(_worker.run_chunk, (fn, call), {}, task_timeout, fn)
            future._awaited = True  # its result is loaded by the thread that takes it
            return future

        window = itertools.islice(calls, buffersize) if buffersize is not None else calls
        futures = deque(submit(call) for call in window)
        more = (calls, submit) if buffersize is not None else None
        results = _results(futures, end, chunksize > 1, more)
        if progress:
            return _with_progress(results, total)
        return results

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` from asyncio; cancelling the await cancels the task
        in its interpreter, even while it runs."""
        return await _await(self.submit(fn, *args, **kwargs))

    @property
    def _broken(self) -> str | bool:  # type: ignore[override]  # read-only: ThreadPoolExecutor's is set
        """Why the pool is broken, else False: the attribute the standard library's pools
        have, which code written for them (CPython's own tests among it) reads."""
        return self._side.broken or False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the pool: pending tasks still run unless ``cancel_futures``; with ``wait``
        return once every worker interpreter is closed."""
        self._side.shutdown(wait, cancel_futures)
        if self._router is not None:
            self._router.shutdown(wait, cancel_futures)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Leaving the block waits for the tasks; leaving it by Ctrl-C (``KeyboardInterrupt``),
        ``SystemExit`` or another ``BaseException`` that is not an ``Exception`` cancels them
        all, running ones included, so that the program stops promptly; so does Ctrl-C
        while the block waits for them."""
        if exc_type is None or issubclass(exc_type, Exception):
            try:
                self.shutdown(True)
                return
            except BaseException:  # Ctrl-C while the block waits for the tasks: the same
                self._stop_all()
                raise
        self._stop_all()

    def _cancel_all(self) -> None:
        """Cancel every task, pending or running, on both sides (any thread)."""
        self._side.cancel_all()
        if self._router is not None:
            self._router.cancel_all()

    def _stop_all(self) -> None:
        self._cancel_all()
        self.shutdown(True, cancel_futures=True)


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
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """``map`` with this view's time limit for each task (each chunk)."""
        return self._pool._map(fn, iterables, timeout, chunksize, progress, self._seconds, buffersize)

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``run`` with this view's time limit."""
        return await _await(self.submit(fn, *args, **kwargs))


async def _await(future: InterpreterFuture) -> Any:
    import asyncio

    # wrap_future cancels the concurrent future when the awaiting task is cancelled,
    # and InterpreterFuture.cancel() interrupts a running task.
    return await asyncio.wrap_future(future)


def _results(
    futures: deque[InterpreterFuture],
    end: float | None,
    chunked: bool,
    more: tuple[Iterator[Any], Callable[[Any], InterpreterFuture]] | None = None,
) -> Iterator[Any]:
    """Yield the results in order; with ``more`` (buffersize), submit the next call as
    each result is taken, so at most the window's size is in flight."""
    try:
        while futures:
            future = futures.popleft()
            if more is not None:
                call = next(more[0], _DONE)
                if call is not _DONE:
                    futures.append(more[1](call))
            remaining = None if end is None else end - time.monotonic()
            if chunked:
                yield from future.result(remaining)
            else:
                yield future.result(remaining)
    finally:
        for future in futures:
            future.cancel()


_DONE = object()


def _with_progress(results: Iterator[Any], total: int | None) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total) as bar:
        for value in results:
            bar.update(1)
            yield value


def _check_timeout(name: str, value: float | None) -> float | None:
    """A time limit: a positive number of seconds, or None (inf too) for no limit."""
    try:
        seconds = check_timeout(value, name)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be a positive number of seconds or None, got {value!r}") from None
    if seconds == 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return seconds


def _check_count(name: str, value: object) -> None:
    """A count of workers or tasks: an int greater than 0 (NaN, 1.5 and True were taken)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0")  # the standard library's words


def _default_exit_timeout() -> float:
    text = os.environ.get("MANYGIL_EXIT_TIMEOUT", "")
    try:
        seconds = float(text) if text.strip() else 30.0
    except ValueError:
        raise ValueError(f"MANYGIL_EXIT_TIMEOUT must be a number of seconds, got {text!r}") from None
    return _check_seconds("MANYGIL_EXIT_TIMEOUT", seconds)


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if not 0 <= value < TIMEOUT_MAX:  # NaN fails this too
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)
