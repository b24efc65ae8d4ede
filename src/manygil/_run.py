"""``python -m manygil run``: an unmodified program's process pools, on interpreters.

For the program's life, manygil's classes stand in the standard library's modules, so
every name a program reaches a process pool by finds them::

    concurrent.futures.ProcessPoolExecutor,  ──► ProcessPoolExecutor (below): a subclass
    concurrent.futures.process's too             of the standard library's, on an
                                                 InterpreterPoolExecutor made at the first task
    multiprocessing.pool.Pool, so                ──► Pool (below): a subclass of the standard
    multiprocessing.Pool and every context's        library's, on manygil.Pool (ThreadPool,
    Pool method (they import it when called)        which derives from that one, is untouched)
    joblib's default backend (when joblib is     ──► manygil.joblib's "manygil" backend
    imported)

    a class the program derives from one of them ──► served as its base, if it keeps to the
                                                     public API; else the standard library's
                                                     class as its base, and processes (_Swapped)

Each task is looked at before it is sent (the caller's thread, in ``submit`` or the
pool's method)::

    arguments hold a Manager proxy, a multiprocessing Lock, Queue, Value, Array or
    Connection, which work only between processes
        ──► this pool keeps real processes from now on (one notice on stderr)
    the function or an argument needs a package whose compiled modules crash or hang an
    own-GIL interpreter (``manygil check``, cached; mypyc-compiled packages do)
        ──► the function is routed to the pool's process workers (one notice)
    otherwise ──► an interpreter; a module that refuses one is the executor's fallback

Actors: the program's threads call the pools (and the checks above, under ``_lock``);
any thread that ends a task (a pool's worker or result thread) counts it in ``_REPORT``
(under the report's lock); ``--report`` prints at exit, after the pools' tasks are done.
Worker interpreters import only ``worker_setup`` from here (its imports are light).
"""

from __future__ import annotations

import abc
import functools
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator

TYPE_CHECKING = False  # not typing's: worker interpreters import this module, and typing costs them
if TYPE_CHECKING:
    from typing import Any

__all__ = ("run", "worker_setup")

_NOTICE = "manygil run: "
SERVED = ("concurrent.futures.ProcessPoolExecutor (from concurrent.futures or concurrent.futures.process), "
          "multiprocessing.Pool, multiprocessing.pool.Pool, a context's Pool, their subclasses that keep to "
          "the public API; joblib's default backend")  # said by --report


# -- in each worker (interpreter or process) ------------------------------------------


def worker_setup(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """Prepare a worker for the program's code, then run its own initializer.

    In an interpreter other than the main one ``signal.signal`` raises ValueError (only
    the main interpreter's main thread takes signals); a process pool's initializer often
    ignores SIGINT in its workers (flake8's does).  Here it is a no-op that returns the
    current handler: such a worker never receives a signal anyway."""
    import signal

    original = signal.signal
    if not getattr(original, "_mg_tolerant", False):
        def tolerant(signalnum: Any, handler: Any) -> Any:
            try:
                return original(signalnum, handler)
            except ValueError as exc:
                if "main interpreter" not in str(exc):
                    raise
                return signal.getsignal(signalnum)

        tolerant._mg_tolerant = True  # type: ignore[attr-defined]
        signal.signal = tolerant
    if initializer is not None:
        initializer(*initargs)


# -- what cannot go to an interpreter ---------------------------------------------------

_SCAN_ITEMS = 100  # items of a container, and calls of a map, looked at per task


def _process_only_types() -> list[tuple[type, str]]:
    """The multiprocessing objects that work only between processes, from the modules
    the program imported (nothing else can be one; a module another thread is importing
    may not have its classes yet)."""
    found: list[tuple[type, str]] = []
    for module, names, what in _PROCESS_ONLY:
        loaded = sys.modules.get(module)
        for name in names if loaded is not None else ():
            kind = getattr(loaded, name, None)
            if isinstance(kind, type):
                found.append((kind, what))
    return found


_PROCESS_ONLY = (
    ("multiprocessing.managers", ("BaseProxy",), "a multiprocessing.Manager proxy"),
    ("multiprocessing.synchronize", ("SemLock", "Condition", "Event", "Barrier"), "a multiprocessing lock"),
    ("multiprocessing.queues", ("Queue", "SimpleQueue"), "a multiprocessing queue"),
    ("multiprocessing.sharedctypes", ("SynchronizedBase",), "a shared multiprocessing.Value or Array"),
    ("multiprocessing.connection", ("Connection",), "a multiprocessing.Pipe end"),
)


def _values(obj: object, depth: int = 3) -> Iterator[object]:
    """``obj`` and what it holds (containers, partials), ``depth`` levels down."""
    yield obj
    if depth <= 0:
        return
    inner: Iterable[object]
    if isinstance(obj, functools.partial):
        inner = (obj.func, *obj.args, *obj.keywords.values())
    elif isinstance(obj, dict):
        inner = [v for pair in list(obj.items())[:_SCAN_ITEMS] for v in pair]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        inner = list(obj)[:_SCAN_ITEMS]
    elif isinstance(obj, types.MethodType):
        inner = (obj.__self__,)
    else:
        return
    for item in inner:
        yield from _values(item, depth - 1)


def needs_processes(*values: object) -> str | None:
    """What among ``values`` works only between processes, said for a notice; None when
    nothing does."""
    kinds = _process_only_types()
    if not kinds:
        return None
    for value in values:
        for obj in _values(value):
            for kind, what in kinds:
                if isinstance(obj, kind):
                    return f"{what} ({type(obj).__module__}.{type(obj).__qualname__})"
    return None


# Top-level packages checked with `manygil check`: (own-GIL status, why it fails).
_VERDICTS: dict[str, tuple[str, str]] = {}
_lock = threading.Lock()  # guards _VERDICTS and the checks (one subprocess survey at a time)


def _top(module: object) -> str:
    return module.split(".")[0] if isinstance(module, str) else ""


def _packages(values: Iterable[object], script: bool = False) -> set[str]:
    """The top-level packages that loading ``values`` in a worker imports: their modules,
    their types' modules, and for a function of the program's script, what the script
    imports (the worker imports the script to find it)."""
    tops: set[str] = _script_packages() if script else set()
    for value in values:
        for obj in _values(value, 2):
            module = getattr(obj, "__module__", None) if callable(obj) else type(obj).__module__
            if module == "__main__":
                tops |= _script_packages()
            else:
                tops.add(_top(module))
    return tops


_SCRIPT: tuple[int, int, set[str]] = (0, 0, set())  # id and size of __main__'s globals, what they need


def _script_packages() -> set[str]:
    """The top-level packages of the modules, functions and classes of ``__main__``."""
    global _SCRIPT
    main = sys.modules.get("__main__")
    names = vars(main) if main is not None else {}
    if _SCRIPT[:2] == (id(names), len(names)):
        return _SCRIPT[2]
    tops: set[str] = set()
    for value in list(names.values()):
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and name != "__main__":
            tops.add(_top(name))
    _SCRIPT = (id(names), len(names), tops)
    return tops


def _has_extensions(top: str) -> bool:
    """Whether the imported package ``top`` ships compiled modules (only those can crash
    an interpreter; pure Python ones and the standard library's are not checked)."""
    if not top or top in sys.stdlib_module_names or top in ("manygil", "builtins", "__main__"):
        return False
    module = sys.modules.get(top)
    if module is None:  # imported in a task's body only: find it without importing it
        import importlib.util

        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        file, path = spec.origin, spec.submodule_search_locations
    else:
        file, path = getattr(module, "__file__", None), getattr(module, "__path__", None)
    suffixes = (".so", ".pyd")
    if str(file or "").endswith(suffixes):
        return True
    for root in path or ():
        for _, _, files in os.walk(root):
            if any(f.endswith(suffixes) for f in files):
                return True
    return False


def crashing_package(values: Iterable[object], script: bool = False) -> str | None:
    """Why loading ``values`` in an own-GIL interpreter must not be tried: a package they
    need crashes or hangs one, or a function among them imports, in its body, a package
    that refuses one (the executor does not run a task again elsewhere once it has
    started); ``script``: or the program's script imports one that crashes.  Each
    package is checked once (``manygil check``, in subprocesses; cached on disk).  None
    when nothing is known to fail."""
    with _lock:
        body = _body_imports(values)
        for top in sorted(_packages(values, script) | body):
            status, why = _verdict(top)
            if status in ("crash", "hang") or (status == "refuses" and top in body):
                return why
    return None


def _verdict(top: str) -> tuple[str, str]:
    """(status, why) of ``top`` in an own-GIL interpreter (caller holds ``_lock``)."""
    if top not in _VERDICTS:
        _VERDICTS[top] = _check(top) if _has_extensions(top) else ("ok", "")
    return _VERDICTS[top]


def _body_imports(values: Iterable[object]) -> set[str]:
    """The top-level packages that the functions among ``values`` import in their body."""
    tops: set[str] = set()
    for value in values:
        for obj in _values(value, 2):
            code = getattr(getattr(obj, "__func__", obj), "__code__", None)
            if isinstance(code, types.CodeType):
                tops |= _code_imports(code)
    return tops


@functools.lru_cache(maxsize=1024)
def _code_imports(code: types.CodeType) -> frozenset[str]:
    import dis

    tops = {_top(i.argval) for i in dis.get_instructions(code) if i.opname == "IMPORT_NAME"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            tops |= _code_imports(const)
    return frozenset(t for t in tops if t)


def _check(top: str) -> tuple[str, str]:
    from .check import check_modules

    try:
        [report] = check_modules([top])
    except Exception:  # noqa: BLE001 - no answer: let the executor's own fallback decide
        return "ok", ""
    status = report.own.status if report.main.status == "ok" else "ok"
    found = f"(`python -m manygil check {top}`: {status}, {report.own.detail})"
    if status == "refuses":
        return status, f"it imports {top} in its body, which refuses interpreters with their own GIL {found}"
    return status, f"importing {top} {'crashes' if status == 'crash' else 'hangs'} an interpreter with its own GIL {found}"


def no_fork(context: Any) -> Any:
    """``context``, or the ``forkserver`` one (``spawn`` where there is none) in place of
    a ``fork`` context (None: the default context): a child forked from a process that
    runs interpreters exits at once (see manygil's fork guard), so a pool that keeps
    processes must not fork."""
    import multiprocessing

    from ._process_side import start_method

    ctx = multiprocessing.get_context() if context is None else context
    if ctx.get_start_method() == "fork":
        return multiprocessing.get_context(start_method())
    return context


def _notice(text: str) -> None:
    try:
        sys.stderr.write(_NOTICE + text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed stderr
        pass


# -- what ran where ---------------------------------------------------------------------


class _Report:
    """Calls counted per function and place, and why a function ran in processes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, dict[str, int]] = {}  # function -> place -> calls
        self.why: dict[str, str] = {}  # function -> why it ran in processes
        self.pools: dict[str, int] = {}  # "ProcessPoolExecutor on interpreters" -> count
        self.said: set[str] = set()  # notices given

    def count(self, key: str, where: str, calls: int, why: str | None = None) -> None:
        with self.lock:
            places = self.calls.setdefault(key, {})
            places[where] = places.get(where, 0) + calls
            if why and key not in self.why:
                self.why[key] = why

    def pool(self, kind: str) -> None:
        with self.lock:
            self.pools[kind] = self.pools.get(kind, 0) + 1

    def first(self, key: str) -> bool:
        with self.lock:
            first = key not in self.said
            self.said.add(key)
        return first

    def text(self) -> str:
        with self.lock:
            calls = {k: dict(v) for k, v in self.calls.items()}
            why, pools = dict(self.why), dict(self.pools)
        places = ("interpreters", "processes") + (("cancelled",) if any("cancelled" in c for c in calls.values()) else ())
        lines = ["manygil run --report: what ran where", "  served: " + SERVED]
        if pools:
            lines.append("  pools: " + "; ".join(f"{n} {kind}" for kind, n in sorted(pools.items())))
        if not calls:
            lines.append("  no task was sent to a pool")
            return "\n".join(lines) + "\n"
        rows = [["calls", *places, "function"]]
        for key in sorted(calls):
            counts = calls[key]
            rows.append([str(sum(counts.values())), *(str(counts.get(p, 0)) for p in places), key])
        widths = [max(len(r[i]) for r in rows) for i in range(len(places) + 1)]
        for row in rows:
            lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        explained = [k for k in sorted(calls) if calls[k].get("processes")]
        if explained:
            lines.append("  in processes, because:")
            for key in explained:
                lines.append(f"    {key}: {why.get(key, 'unknown')}")
        return "\n".join(lines) + "\n"


_REPORT = _Report()


def _count_on(executor: Any) -> None:
    """Count every task of ``executor`` (an InterpreterPoolExecutor) where it ran: the
    executor's ``_submit`` is the one door of ``submit``, ``map`` and manygil.Pool."""
    from . import _worker
    from ._router import route_key

    submit = executor._submit

    def counted(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None,
                route_fn: Callable[..., Any] | None = None) -> Any:
        future = submit(fn, args, kwargs, timeout, route_fn)
        target = route_fn or fn
        calls = len(args[1]) if fn is _worker.run_chunk or getattr(fn, "__name__", "") == "_run_calls" else 1
        key = route_key(target)

        def done(future: Any) -> None:
            if future.cancelled():
                _REPORT.count(key, "cancelled", calls)
            elif getattr(future, "_other_side", None) is not None:
                why = _ROUTED_WHY.get(key) or executor.routes().get(key)
                _REPORT.count(key, "processes", calls, why)
            else:
                _REPORT.count(key, "interpreters", calls)

        future.add_done_callback(done)
        return future

    executor._submit = counted


_ROUTED_WHY: dict[str, str] = {}  # route_key -> why run routed it (a crashing package)


def _route_if_crashing(executor: Any, fn: Callable[..., Any], values: Iterable[object]) -> None:
    """Route ``fn`` to ``executor``'s process workers when loading it or ``values`` would
    import a package that crashes an own-GIL interpreter."""
    from ._router import route_key

    router = executor._router
    if router is None or router.kind != "process" or router.routed(fn):
        return
    key = route_key(fn)
    why = _ROUTED_WHY.get(key) or crashing_package([fn, *values])
    if why is None:
        return
    _ROUTED_WHY[key] = why
    executor.route(fn, "process")
    if _REPORT.first("route " + key):
        _notice(f"{key} runs in process workers: {why}")


def _interpreter_pool(kind: str, make: Callable[[], Any], initializer: object,
                      initargs: tuple[Any, ...]) -> tuple[Any, str]:
    """``(make(), "")``: a pool of interpreters; or ``(None, why)``, said in a notice,
    when the pool must keep processes from the start: its initializer needs what only
    processes have, or it, or the program's script that its workers import first,
    needs a package that crashes an interpreter; or no interpreter pool can start here."""
    from ._pool import _preloads_main

    why = needs_processes(initializer, initargs)
    if why is None:
        why = crashing_package([initializer, *initargs], script=_preloads_main())
        if why is not None:
            why = "its workers would import a package that crashes interpreters: " + why
    else:
        why = f"its initializer's arguments include {why}, which works only between processes"
    if why is None:
        try:
            return make(), ""
        except RuntimeError as exc:  # tracemalloc on 3.14, a subinterpreter...
            why = f"no interpreter pool can start here ({exc})"
    _notice(f"this {kind} keeps real processes: {why}")
    _REPORT.pool(f"{kind} in processes")
    return None, why


# -- the classes in the standard library's place, and the program's subclasses ------------


class _Swapped(abc.ABCMeta):
    """The metaclass of the two classes ``install`` puts in the standard library's place
    (``ProcessPoolExecutor``, ``multiprocessing.pool.Pool``).

    ``isinstance(x, C)`` and ``issubclass(K, C)``, ``C`` one of the two, answer as with
    the standard library's class: a ``ThreadPool`` (which derives from the standard
    library's ``Pool``, and stays a thread pool) is a ``multiprocessing.pool.Pool``, and
    so is a pool that kept processes.

    A class the program derives from one of the two is decided when it is defined
    (``_internals``): one that keeps to the public API (``__init__``, ``submit``,
    ``map``...) is served as its base is; one that overrides or reads what only the
    standard library's class has (``Process``, ``_pool``, ``_adjust_process_count``) gets
    the standard library's class as its base in place of manygil's, and real processes
    (its tasks counted for ``--report``, with why).  manygil's own subclasses get the
    standard library's class, uncounted.  An ABCMeta, so that a subclass that mixes in
    an ABC meets no metaclass conflict."""

    _mg_root: _Swapped  # the class in the standard library's place
    _mg_original: type  # the standard library's class
    _mg_kept: type  # the standard library's class, counting for --report
    _mg_public: frozenset[str]  # what a subclass may override and read
    _mg_label: str  # "ProcessPoolExecutor", "multiprocessing.pool.Pool"

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any) -> Any:
        swapped = [b for b in bases if isinstance(b, _Swapped)]
        if not swapped:  # the class in the standard library's place itself
            return super().__new__(mcls, name, bases, ns, **kwargs)
        root = swapped[0]._mg_root
        module = str(ns.get("__module__", ""))
        why: str | None = ""
        if module == "manygil" or module.startswith("manygil."):
            base = root._mg_original
        else:
            why, base = _internals(root, ns), root._mg_kept
        if why is None:
            return super().__new__(mcls, name, bases, ns, **kwargs)
        if root not in bases:  # its base is a served subclass, too late to change
            if why:
                _notice(f"{module}.{name} derives from a served subclass of {root._mg_label} and {why}: "
                        "it is served too, and may fail")
            return super().__new__(mcls, name, bases, ns, **kwargs)
        cls: Any = type(name, tuple(base if b is root else b for b in bases), ns, **kwargs)
        if why:
            qualname = f"{module}.{ns.get('__qualname__', name)}"
            cls._mg_kept_kind = f"{root._mg_label} subclass {qualname}"
            cls._mg_kept_why = f"{qualname}, a subclass of {root._mg_label}, keeps real processes: {why}"
        return cls

    def __instancecheck__(cls, obj: object) -> bool:
        if cls is cls._mg_root:
            return isinstance(obj, cls._mg_original)
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        if cls is cls._mg_root:
            return issubclass(sub, cls._mg_original)
        return super().__subclasscheck__(sub)


def _swap(served: Any, original: type, kept: type, public: Iterable[str], label: str) -> None:
    served._mg_root, served._mg_original, served._mg_kept, served._mg_label = served, original, kept, label
    served._mg_public = frozenset(public)
    served.__module__, served.__qualname__ = original.__module__, original.__qualname__


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _internals(root: _Swapped, ns: dict[str, Any]) -> str | None:
    """What, in the namespace ``ns`` of a class derived from ``root``, only the standard
    library's class has: an override of, or a read of, a name of its other than the
    public API, said for a notice; None when there is none."""
    internal = _internal_names(root._mg_original) - root._mg_public
    overrides = sorted(k for k in ns if not _dunder(k) and k in internal)
    reads = sorted({n for value in ns.values() for n in _attributes(value)} & internal - set(overrides))
    said = []
    if overrides:
        said.append("it overrides " + ", ".join(overrides))
    if reads:
        said.append("its code reads " + ", ".join(reads))
    if not said:
        return None
    return " and ".join(said) + f", which only the standard library's {root._mg_label} has"


@functools.cache
def _internal_names(original: type) -> frozenset[str]:
    """The class's names, and the private attributes its code reads or sets."""
    names = {n for n in dir(original) if not _dunder(n)}
    for value in vars(original).values():
        names |= {n for n in _attributes(value) if n.startswith("_") and not _dunder(n)}
    for base in original.__mro__[1:-1]:
        for value in vars(base).values():
            names |= {n for n in _attributes(value) if n.startswith("_") and not _dunder(n)}
    return frozenset(names)


def _attributes(value: object) -> set[str]:
    """The attribute names that the code of ``value`` (a function, a static or class
    method, a property) reads, sets or deletes."""
    codes = []
    for fn in (value, getattr(value, "__func__", None), getattr(value, "fget", None),
               getattr(value, "fset", None), getattr(value, "fdel", None)):
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType):
            codes.append(code)
    names: set[str] = set()
    for code in codes:
        names |= _code_attributes(code)
    return names


@functools.lru_cache(maxsize=1024)
def _code_attributes(code: types.CodeType) -> frozenset[str]:
    import dis

    names = {str(i.argval) for i in dis.get_instructions(code)
             if i.opname.endswith("_ATTR") or i.opname == "LOAD_METHOD"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_attributes(const)
    return frozenset(names)


def _kind(pool: object, label: str) -> str:
    """``label``, or for a program's subclass, which one: for notices and the report."""
    cls = type(pool)
    if getattr(cls, "_mg_root", None) is cls:
        return label
    return f"{label} subclass {cls.__module__}.{cls.__qualname__}"


def _kept_pool(pool: object) -> str:
    """Say that ``pool``, of a program's subclass that kept processes, was made, and why."""
    why = str(getattr(pool, "_mg_kept_why", ""))
    if _REPORT.first("kept " + why):
        _notice(why)
    _REPORT.pool(f"{getattr(pool, '_mg_kept_kind', '')} in processes")
    return why


# -- concurrent.futures.ProcessPoolExecutor --------------------------------------------


def _executor_class(original: Any) -> type:
    """``concurrent.futures.ProcessPoolExecutor`` in the place of ``original``."""
    import concurrent.futures.process as process
    from concurrent.futures import _base

    from ._exceptions import BrokenInterpreterPool
    from ._router import route_key
    from ._pool import InterpreterPoolExecutor

    class _Chunk:
        """A chunk of ``map(chunksize>1)``: ``fn`` over a tuple of argument tuples."""

        def __init__(self, fn: Callable[..., Any]) -> None:
            self.fn = fn

        def __call__(self, chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
            return [self.fn(*args) for args in chunk]

    class Kept(original):  # type: ignore[misc]
        """The standard library's, for a program's subclass that keeps processes."""

        def __init__(self, max_workers: int | None = None, mp_context: Any = None, *args: Any,
                     **kwargs: Any) -> None:
            self._mg_why = _kept_pool(self)
            super().__init__(max_workers, no_fork(mp_context), *args, **kwargs)

        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            future = super().submit(fn, *args, **kwargs)
            chunk = isinstance(fn, functools.partial) and fn.func is process._process_chunk and args
            key = route_key(fn.args[0] if chunk else fn)  # type: ignore[attr-defined]
            calls = len(args[0]) if chunk else 1
            future.add_done_callback(lambda f: _REPORT.count(
                key, "cancelled" if f.cancelled() else "processes", calls, self._mg_why))
            return future

    class ProcessPoolExecutor(original, metaclass=_Swapped):  # type: ignore[misc]
        """``concurrent.futures.ProcessPoolExecutor`` under ``manygil run``: its tasks run
        in interpreters with their own GIL (an ``InterpreterPoolExecutor`` of
        ``max_workers``, made at the first task as the processes of the standard
        library's are), and in real processes what needs them."""

        def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                     initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
                     *, max_tasks_per_child: int | None = None) -> None:
            windows_limit = getattr(process, "_MAX_WINDOWS_WORKERS", 61)  # as the standard library's
            if max_workers is None:
                max_workers = getattr(os, "process_cpu_count", os.cpu_count)() or 1
                if sys.platform == "win32":
                    max_workers = min(windows_limit, max_workers)
            elif max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            elif sys.platform == "win32" and max_workers > windows_limit:
                raise ValueError(f"max_workers must be <= {windows_limit}")
            if initializer is not None and not callable(initializer):
                raise TypeError("initializer must be a callable")
            if max_tasks_per_child is not None:
                if not isinstance(max_tasks_per_child, int):
                    raise TypeError("max_tasks_per_child must be an integer")
                if max_tasks_per_child <= 0:
                    raise ValueError("max_tasks_per_child must be >= 1")
                if mp_context is not None and mp_context.get_start_method(allow_none=False) == "fork":
                    raise ValueError("max_tasks_per_child is incompatible with the 'fork' multiprocessing "
                                     "start method; supply a different mp_context.")
            self._max_workers = max_workers
            self._mg_args = (max_workers, mp_context, initializer, tuple(initargs), max_tasks_per_child)
            self._mg_lock = threading.Lock()
            self._mg_interp: InterpreterPoolExecutor | None = None
            self._mg_procs: Any = None  # the standard library's, once a task needs processes
            self._mg_why = ""
            self._mg_started = False  # the first task came: the pools are made
            self._mg_shutdown = False

        def __repr__(self) -> str:
            where = "processes" if self._mg_procs is not None else "interpreters"
            return f"<manygil run {self._mg_kind} max_workers={self._max_workers} on {where}>"

        @property
        def _mg_kind(self) -> str:
            return _kind(self, "ProcessPoolExecutor")

        def _mg_real(self, why: str, quiet: bool = False) -> Any:
            """The standard library's pool, made now (caller holds ``_mg_lock``)."""
            if self._mg_procs is None:
                max_workers, mp_context, initializer, initargs, max_tasks = self._mg_args
                self._mg_procs = original(max_workers, no_fork(mp_context), initializer, initargs,
                                          max_tasks_per_child=max_tasks)
                self._mg_why = why if quiet else f"its {self._mg_kind} switched to processes: {why}"
                if not quiet:
                    _notice(f"this {self._mg_kind} runs its tasks in processes from now on: {why}")
                    _REPORT.pool(f"{self._mg_kind} switched to processes")
            return self._mg_procs

        def _mg_target(self, fn: Callable[..., Any], values: tuple[object, ...]) -> Any:
            with self._mg_lock:
                if self._mg_shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if not self._mg_started:
                    self._mg_started = True
                    max_workers, _, initializer, initargs, max_tasks = self._mg_args
                    self._mg_interp, reason = _interpreter_pool(
                        self._mg_kind,
                        lambda: InterpreterPoolExecutor(max_workers, initializer=worker_setup,
                                                        initargs=(initializer, initargs),
                                                        max_tasks_per_worker=max_tasks),
                        initializer, initargs)
                    if self._mg_interp is None:
                        return self._mg_real(reason, quiet=True)
                    _count_on(self._mg_interp)
                    _REPORT.pool(f"{self._mg_kind} on interpreters")
                if self._mg_procs is not None:
                    return self._mg_procs
                why = needs_processes(fn, *values)
                if why is not None:
                    return self._mg_real(f"a task's arguments include {why}, which works only between processes")
                interp = self._mg_interp
            assert interp is not None
            _route_if_crashing(interp, fn, values)
            return interp

        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            """``fn(*args, **kwargs)`` in an interpreter, or a process when it needs one."""
            target_fn = fn.fn if isinstance(fn, _Chunk) else fn
            values = args[0][0] if isinstance(fn, _Chunk) and args and args[0] else args
            pool = self._mg_target(target_fn, (*values, *kwargs.values()))
            if isinstance(pool, InterpreterPoolExecutor):
                try:
                    if isinstance(fn, _Chunk):
                        return pool._submit(_worker_run_chunk(), (fn.fn, list(args[0])), {}, None, fn.fn)
                    return pool.submit(fn, *args, **kwargs)
                except BrokenInterpreterPool as exc:
                    raise process.BrokenProcessPool(str(exc)) from exc
            future = pool.submit(process._process_chunk, fn.fn, args[0]) if isinstance(fn, _Chunk) \
                else pool.submit(fn, *args, **kwargs)
            key = route_key(target_fn)
            calls = len(args[0]) if isinstance(fn, _Chunk) else 1
            future.add_done_callback(lambda f: _REPORT.count(
                key, "cancelled" if f.cancelled() else "processes", calls, self._mg_why))
            return future

        def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
                chunksize: int = 1, **kwargs: Any) -> Iterator[Any]:
            """As the standard library's: ``chunksize`` calls go as one task."""
            if chunksize < 1:
                raise ValueError("chunksize must be >= 1.")
            if chunksize == 1:
                return _base.Executor.map(self, fn, *iterables, timeout=timeout, **kwargs)
            results = _base.Executor.map(self, _Chunk(fn), _batched(zip(*iterables), chunksize),
                                         timeout=timeout, **kwargs)
            return process._chain_from_iterable_of_lists(results)  # type: ignore[no-any-return]

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            with self._mg_lock:
                self._mg_shutdown = True
                pools = [p for p in (self._mg_interp, self._mg_procs) if p is not None]
            for pool in pools:
                pool.shutdown(wait, cancel_futures=cancel_futures)

        def terminate_workers(self) -> None:
            """Stop every task now (3.14's ``terminate_workers``)."""
            with self._mg_lock:
                self._mg_shutdown = True
                interp, procs = self._mg_interp, self._mg_procs
            if interp is not None:
                interp._stop_all()
            if procs is not None:
                getattr(procs, "terminate_workers", procs.shutdown)()

        kill_workers = terminate_workers

    _swap(ProcessPoolExecutor, original, Kept, ("submit", "map", "shutdown", "terminate_workers", "kill_workers"),
          "ProcessPoolExecutor")
    return ProcessPoolExecutor


def _counted(iterable: Iterable[Any], key: str, why: str) -> Iterator[Any]:
    for item in iterable:
        _REPORT.count(key, "processes", 1, why)
        yield item


def _worker_run_chunk() -> Callable[..., Any]:
    from . import _worker

    return _worker.run_chunk


def _batched(items: Iterator[tuple[Any, ...]], size: int) -> Iterator[tuple[tuple[Any, ...], ...]]:
    import itertools

    while batch := tuple(itertools.islice(items, size)):
        yield batch


# -- multiprocessing.Pool -----------------------------------------------------------------


def _pool_class(original: Any) -> type:
    """``multiprocessing.pool.Pool`` in the place of ``original``."""
    from ._router import route_key
    from .mppool import Pool as ManygilPool

    class Kept(original):  # type: ignore[misc]
        """The standard library's, for a program's subclass that keeps processes."""

        def __init__(self, processes: int | None = None, initializer: Callable[..., object] | None = None,
                     initargs: Iterable[Any] = (), maxtasksperchild: int | None = None,
                     context: Any = None) -> None:
            self._mg_why = _kept_pool(self)
            super().__init__(processes, initializer, initargs, maxtasksperchild, no_fork(context))

        def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Any = None,
                        callback: Any = None, error_callback: Any = None) -> Any:
            result = super().apply_async(func, args, {} if kwds is None else kwds, callback, error_callback)
            _REPORT.count(route_key(func), "processes", 1, self._mg_why)
            return result

        def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any], *rest: Any) -> Any:
            items = iterable if hasattr(iterable, "__len__") else list(iterable)
            result = super()._map_async(func, items, *rest)
            _REPORT.count(route_key(func), "processes", len(items), self._mg_why)  # type: ignore[arg-type]
            return result

        def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Any:
            return super().imap(func, _counted(iterable, route_key(func), self._mg_why), chunksize)

        def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Any:
            return super().imap_unordered(func, _counted(iterable, route_key(func), self._mg_why), chunksize)

    class Pool(original, metaclass=_Swapped):  # type: ignore[misc]
        """``multiprocessing.Pool`` under ``manygil run``: ``manygil.Pool`` (interpreters
        with their own GIL), or the standard library's pool from the call whose
        arguments need processes on."""

        def __init__(self, processes: int | None = None, initializer: Callable[..., object] | None = None,
                     initargs: Iterable[Any] = (), maxtasksperchild: int | None = None,
                     context: Any = None) -> None:
            if Pool not in type(self).__mro__:
                # ThreadPool.__init__ calls multiprocessing.pool's global Pool, which this
                # class is now: a thread pool stays the standard library's.
                original.__init__(self, processes, initializer, initargs, maxtasksperchild, context)
                return
            if initializer is not None and not callable(initializer):
                raise TypeError("initializer must be a callable")
            initargs = tuple(initargs)
            self._mg_args = (processes, initializer, initargs, maxtasksperchild, context)
            self._mg_lock = threading.Lock()
            self._mg_procs: Any = None
            self._mg_why = ""
            self._mg: Any
            self._mg, why = _interpreter_pool(
                self._mg_kind,
                lambda: ManygilPool(processes, worker_setup, (initializer, initargs), maxtasksperchild, context),
                initializer, initargs)
            if self._mg is None:
                self._mg_real(why, quiet=True)
            else:
                _count_on(self._mg._executor)
                _REPORT.pool(f"{self._mg_kind} on interpreters")
            inner: Any = self._mg if self._mg is not None else self._mg_procs
            self._processes = inner._processes

        @property
        def _state(self) -> str:
            pool = self._mg_procs if self._mg_procs is not None else getattr(self, "_mg", None)
            return pool._state if pool is not None else "INIT"

        @_state.setter
        def _state(self, value: str) -> None:
            pass  # only multiprocessing's own __init__ sets it, which does not run here

        def __repr__(self) -> str:
            where = "processes" if self._mg_procs is not None else "interpreters"
            return f"<manygil run {self._mg_kind} state={self._state} pool_size={self._processes} on {where}>"

        @property
        def _mg_kind(self) -> str:
            return _kind(self, "multiprocessing.Pool")

        def __del__(self) -> None:
            pass  # the pool inside warns when it is left running

        def _mg_real(self, why: str, quiet: bool = False) -> Any:
            with self._mg_lock:
                if self._mg_procs is None:
                    processes, initializer, initargs, maxtasksperchild, context = self._mg_args
                    self._mg_procs = original(processes, initializer, initargs, maxtasksperchild, no_fork(context))
                    self._mg_why = why if quiet else f"its {self._mg_kind} switched to processes: {why}"
                    if not quiet:
                        _notice(f"this {self._mg_kind} runs its tasks in processes from now on: {why}")
                        _REPORT.pool(f"{self._mg_kind} switched to processes")
                return self._mg_procs

        def _mg_for(self, func: Callable[..., Any], values: tuple[object, ...], calls: int) -> Any:
            if self._mg_procs is None:
                why = needs_processes(func, *values)
                if why is None:
                    if self._mg._state == "RUN":
                        _route_if_crashing(self._mg._executor, func, values)
                    return self._mg
                self._mg_real(f"a task's arguments include {why}, which works only between processes")
            if self._mg_procs._state == "RUN":
                _REPORT.count(route_key(func), "processes", calls, self._mg_why)
            return self._mg_procs

        def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Any = None) -> Any:
            return self.apply_async(func, args, kwds).get()

        def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Any = None,
                        callback: Any = None, error_callback: Any = None) -> Any:
            args = tuple(args)
            kwds = {} if kwds is None else kwds
            pool = self._mg_for(func, (args, kwds), 1)
            return pool.apply_async(func, args, kwds, callback, error_callback)

        def _mg_map(self, name: str, func: Callable[..., Any], iterable: Iterable[Any], *rest: Any) -> Any:
            items = iterable if hasattr(iterable, "__len__") else list(iterable)
            sample = tuple(items[:_SCAN_ITEMS]) if isinstance(items, (list, tuple)) else ()
            pool = self._mg_for(func, sample, len(items))  # type: ignore[arg-type]
            return getattr(pool, name)(func, items, *rest)

        def map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> Any:
            return self._mg_map("map", func, iterable, chunksize)

        def map_async(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
                      callback: Any = None, error_callback: Any = None) -> Any:
            return self._mg_map("map_async", func, iterable, chunksize, callback, error_callback)

        def starmap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> Any:
            return self._mg_map("starmap", func, iterable, chunksize)

        def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
                          callback: Any = None, error_callback: Any = None) -> Any:
            return self._mg_map("starmap_async", func, iterable, chunksize, callback, error_callback)

        def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Any:
            return self._mg_imap("imap", func, iterable, chunksize)

        def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Any:
            return self._mg_imap("imap_unordered", func, iterable, chunksize)

        def _mg_imap(self, name: str, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int) -> Any:
            # The iterable is read later, by a thread of the pool: only func is looked at.
            pool = self._mg_for(func, (), 0)
            if pool is self._mg_procs:
                iterable = _counted(iterable, route_key(func), self._mg_why)
            return getattr(pool, name)(func, iterable, chunksize)

        def _mg_pools(self) -> list[Any]:
            with self._mg_lock:
                return [p for p in (getattr(self, "_mg", None), self._mg_procs) if p is not None]

        def close(self) -> None:
            for pool in self._mg_pools():
                pool.close()

        def terminate(self) -> None:
            for pool in self._mg_pools():
                pool.terminate()

        def join(self) -> None:
            for pool in self._mg_pools():
                pool.join()

        def __enter__(self) -> Any:
            for pool in self._mg_pools():
                pool.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.terminate()

    _swap(Pool, original, Kept, ("apply", "apply_async", "map", "map_async", "starmap", "starmap_async", "imap",
                                 "imap_unordered", "close", "join", "terminate", "_processes", "_state"),
          "multiprocessing.pool.Pool")
    return Pool


# -- the command --------------------------------------------------------------------------


def install() -> None:
    """Put manygil's process pools in the standard library's place, for the rest of
    this process: every name the program reaches them by
    (``concurrent.futures.ProcessPoolExecutor``, the same from ``.process``,
    ``multiprocessing.Pool``, ``multiprocessing.pool.Pool``, each context's ``Pool``,
    which imports the latter when called) finds them.  Once per process."""
    import concurrent.futures
    import concurrent.futures.process as process
    import multiprocessing.pool as mp_pool

    if isinstance(mp_pool.Pool, _Swapped):
        return
    executor = _executor_class(process.ProcessPoolExecutor)
    pool = _pool_class(mp_pool.Pool)
    process.ProcessPoolExecutor = executor  # type: ignore[misc, assignment]
    concurrent.futures.ProcessPoolExecutor = executor  # type: ignore[misc, assignment]  # past its lazy __getattr__
    mp_pool.Pool = pool  # type: ignore[misc, assignment]
    _forkserver_default()
    _joblib_default()


def _forkserver_default() -> None:
    """Where ``fork`` is the default start method (Linux before 3.14), make it
    ``forkserver``, as 3.14 did: a Manager, a Process or a pool that keeps processes,
    started after the first interpreter, would fork a process that runs interpreters,
    whose child exits at once.  The program may still choose (``set_start_method``)."""
    import multiprocessing.context as context

    from ._process_side import start_method

    default: Any = context._default_context
    if default._actual_context is None and default._default_context.get_start_method() == "fork":
        default._default_context = context._concrete_contexts[start_method()]  # type: ignore[attr-defined]


def _joblib_default() -> None:
    """Make manygil.joblib's backend joblib's default when the program imports joblib."""
    if "joblib" in sys.modules:
        _register_joblib()
        return
    import importlib.abc
    import importlib.machinery

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name != "joblib":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            loader = getattr(spec, "loader", None)
            if spec is None or loader is None or not hasattr(loader, "exec_module"):
                return None
            exec_module = loader.exec_module

            def exec_then_register(module: Any) -> None:
                exec_module(module)
                sys.meta_path[:] = [f for f in sys.meta_path if f is not finder]
                _register_joblib()

            loader.exec_module = exec_then_register
            return spec

    finder = _Finder()
    sys.meta_path.insert(0, finder)


def _register_joblib() -> None:
    """manygil.joblib's backend, as joblib's default; each batch's functions are looked
    at as the pools' tasks are (``_route_if_crashing``), and counted."""
    try:
        import joblib

        from .joblib import BACKEND_NAME, ManygilBackend
    except Exception as exc:  # noqa: BLE001 - joblib stays as it is
        _notice(f"joblib keeps its own default backend: {exc}")
        return

    class RunBackend(ManygilBackend):
        def configure(self, *args: Any, **kwargs: Any) -> int:
            workers: int = super().configure(*args, **kwargs)
            if self._executor is not None:
                _count_on(self._executor)
            return workers

        def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> Any:
            for fn, args, kwargs in getattr(func, "items", None) or ():
                if self._executor is not None:
                    _route_if_crashing(self._executor, fn, (*args, *kwargs.values()))
            return super().submit(func, callback)

    joblib.register_parallel_backend(BACKEND_NAME, RunBackend, make_default=True)
    _REPORT.pool("joblib's default backend: manygil")


def _print_report() -> None:
    try:
        sys.stdout.flush()  # the program's output first
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.write(_REPORT.text())
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def run(target: str, args: list[str], *, module: bool = False, report: bool = False) -> None:
    """Run a script (``runpy.run_path``) or a module (``runpy.run_module``) as
    ``__main__`` with ``sys.argv`` set for it, its process pools on interpreters.
    SystemExit and the program's exceptions go through."""
    import atexit
    import runpy

    install()
    if report:
        atexit.register(_print_report)
    if module:
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
