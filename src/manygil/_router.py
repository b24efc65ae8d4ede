"""Where each task of a pool goes: its own-GIL interpreters, or the other side.

The router is the only part of a pool that knows it has two sides.  It holds the route
table (the functions whose calls go to the other side, and why), what this process
learned of the modules that refuse an own-GIL interpreter, ``FallbackWarning``, and the
by-value resend of a script's functions.  A task whose loading a module refused comes to
it from the interpreter side, and goes on from it to the other side (``run``) or back to
the interpreters by value (``by_value``): side, router, side.

The other side is ``_process_side.ProcessSide`` (process workers) or
``_shared_side.SharedGilSide`` (a pool of shared-GIL interpreters); with
``fallback=None`` there is none, and the router still resends a script's functions by
value.  ``RouteTable.lock`` and ``Router.lock`` guard their own fields (each a leaf:
nothing else is locked while it is held, and neither inside the other; callers may hold
their side's lock when they call in).
"""

from __future__ import annotations

import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, Protocol, TypeVar

from . import _faults, _transport
from ._futures import settle
from ._refusals import learn_refusal, refused_count, refusing, script_refused_error
from ._transport import route_key, task_label

__all__ = ("FALLBACKS", "FallbackWarning", "InterpSide", "OtherSide", "Refused", "RouteTable", "Router", "learn_refusal", "route_key")

FALLBACKS = ("process", "shared-gil", None)


# What a pool learned, for the pools made after it in this process: the functions whose
# loading a module refused (route_key -> that module).  Which modules refuse an own-GIL
# interpreter does not change while a process runs, so a later pool sends those calls
# to its fallback side from the first (and starts its processes then).
_LEARNED: dict[str, str] = {}
# The caller's scripts (__main__.__file__) that a module refused: their functions go by
# value from a later pool's first call.
_SCRIPTS_REFUSED: dict[str, str] = {}  # script -> the module that refused it


def _code_names(code: types.CodeType) -> set[str]:
    """The global names a function's code may look up, its nested functions' included
    (what cloudpickle sends of its globals)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _needs_refusing(fn: types.FunctionType, seen: set[int]) -> str | None:
    """The extension module that refused a module which loading ``fn`` by value would
    import: a module among the globals, closure cells and defaults it sends, or the
    module of a function, class or object among them (pickled by reference, by the
    name of its module); functions of ``__main__`` that it uses go by value too."""
    if id(fn) in seen:
        return None
    seen.add(id(fn))
    glob = fn.__globals__
    values = [glob[name] for name in _code_names(fn.__code__) if name in glob]
    for cell in fn.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    values += fn.__defaults__ or ()
    values += (fn.__kwdefaults__ or {}).values()
    for value in values:
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            found = _needs_refusing(value, seen)
        elif isinstance(value, types.ModuleType):
            found = refusing(value.__name__)
        elif isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
            found = refusing(getattr(value, "__module__", None))
        else:
            found = refusing(type(value).__module__)
        if found is not None:
            return found
    return None


def _main_file() -> str:
    return str(getattr(sys.modules.get("__main__"), "__file__", None) or "")


class FallbackWarning(UserWarning):
    """A function's tasks run outside the own-GIL interpreters from now on (once per function)."""


FallbackWarning.__module__ = "manygil"  # its public name


class OtherSide(Protocol):
    """What the router needs of the other side (``ProcessSide`` or ``SharedGilSide``)."""

    kind: str

    def run(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        label: str = "",
    ) -> None: ...

    def in_flight(self) -> int: ...

    def cancel_all(self) -> None: ...

    def shutdown(self, wait: bool, cancel_futures: bool) -> None: ...


class Refused(Protocol):
    """A task the interpreter side could not load (``_interp_side._Item``), as the router sees it."""

    by_value_error: BaseException | None  # why a resend by value failed, set here

    @property
    def future(self) -> Future[Any]: ...

    @property
    def fn(self) -> object: ...

    @property
    def call(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None: ...

    @property
    def by_value(self) -> bool: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def label(self) -> str: ...


T = TypeVar("T", bound=Refused)


class InterpSide(Protocol[T]):
    """What the router needs of the interpreter side (``_interp_side.InterpSide``)."""

    def withdraw(self, pred: Callable[[T], bool]) -> list[T]: ...

    def resubmit(self, item: T) -> None: ...

    def requeue_by_value(self, item: T) -> BaseException | None: ...


class RouteTable:
    """What one pool knows of where its functions' calls go: its route table (the
    functions whose calls go to the other side, and why), whether the caller's script
    was refused (its functions then go by value), and the warnings said.

    ``routes``, ``warned`` and ``warned_args`` are guarded by ``lock`` (a leaf, held for
    a few instructions); ``routed`` reads ``routes`` without it (one dict lookup), and
    ``clean``, ``script_refusal`` and ``script_refused`` are hints written without it.
    Any thread: a caller's (``submit``, ``route()``), an interpreter worker's in
    ``call_home`` as refusals arrive, the router's ``flush``.
    """

    def __init__(self, kind: str | None) -> None:
        self.kind = kind  # None: no other side (fallback=None, or a shared-GIL pool's own)
        # Re-entrant: a garbage collection may run the executor's finalizer (which flushes)
        # on a thread that holds it, at any allocation.
        self.lock = threading.RLock()
        self.routes: dict[str, str] = {}  # route_key -> why
        if kind is not None:
            self.routes = {
                key: f"{kind}: the extension module {module} refuses an own-GIL interpreter (learned by an earlier pool)"
                for key, module in list(_LEARNED.items())
            }
        self.warned: set[str] = set()  # route_keys whose FallbackWarning was given
        self.warned_args: set[str] = set()  # ... for a call whose argument refused
        # Functions of __main__ that needs_refusing() found to need no refusing module,
        # with how many modules were known to refuse then.
        self.clean: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        # The caller's script does not import in an interpreter (numpy at its top): its
        # functions go by value from then on (cloudpickle).
        # (the set first: has_cloudpickle() searches sys.path, on every pool's cold start)
        self.script_refusal = _SCRIPTS_REFUSED.get(_main_file())  # the module that refused it
        self.script_refused = self.script_refusal is not None and _transport.has_cloudpickle()

    def routed(self, fn: object) -> bool:
        # Every submit and dispatch asks: no name is made while nothing is routed.
        return bool(self.routes) and route_key(fn) in self.routes

    def route(self, fn: object, why: str) -> bool:
        """Send ``fn``'s calls here from now on; True the first time."""
        key = route_key(fn)
        with self.lock:
            if key in self.routes:
                return False
            self.routes[key] = why
            return True

    def needs_refusing(self, fn: object, by_value: bool) -> str | None:
        """The extension module that refused an own-GIL interpreter earlier in this
        process when a module was imported that loading ``fn`` in a worker would import
        (its module; sent ``by_value``, as functions of a notebook or a REPL always are,
        what it uses): its calls go to this side at once.
        None when unknown, or with no side."""
        if not refused_count() or self.kind is None:
            return None
        module = getattr(fn, "__module__", None)
        if module != "__main__":
            return refusing(module)
        if not (by_value or _transport._interactive_main()) or not isinstance(fn, types.FunctionType):
            return None  # by reference: the caller's script, which loads or was refused
        if self.clean.get(fn) == refused_count():
            return None  # checked since the last refusal learned
        found = _needs_refusing(fn, set())
        if found is None:
            self.clean[fn] = refused_count()
        return found

    def refused_by_function(self, fn: object, by_value: bool) -> bool:
        """Whether a refusal just learned (``learn_refusal``) came from loading ``fn``
        itself, or cannot be told apart; False when ``fn``, a function or class, loads
        without any module known to refuse: one of its call's arguments refused, and
        only that call goes to this side."""
        if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
            return True
        if getattr(fn, "__module__", None) == "__main__" and not by_value and not _transport._interactive_main():
            return True  # by reference: its loading imports the caller's script
        return self.needs_refusing(fn, by_value) is not None

    def argument_refused(self, fn: object, module: str) -> None:
        """A call of ``fn`` could not load because an argument needs ``module``, which
        refused: that call runs here; ``fn`` stays where it is.  Said once per function."""
        key = route_key(fn)
        if self._first(self.warned_args, key):
            try:
                warnings.warn(
                    f"manygil: a call of {key} ran in {self._where()}: an argument of it needs the "
                    f"extension module {module}, which refuses to load in an interpreter with its "
                    "own GIL; its other calls still run in the interpreters",
                    FallbackWarning,
                    stacklevel=2,
                )
            except Exception:  # noqa: BLE001 - warnings turned into errors, on a worker thread
                pass

    def not_sent(self, fn: object, error: Exception, known: bool = True) -> BaseException | None:
        """A call of ``fn``, a function of the script a module refused, did not pickle by
        value (``error``): from ``submit()`` once an earlier pool learned the refusal
        (``known``), or from ``flush``: None when it runs on the other side
        (``not_by_value``); else the error its future fails with.

        Raises:
            Exception: ``error``, when the script was not refused or an argument of the
                call is at fault (the function pickles by value).
        """
        if not self.script_refused or _transport.pickles_by_value(fn):
            raise error
        if self.not_by_value(fn, known=known):
            return None
        return script_refused_error(self.script_refusal or "?", task_label(fn), error)

    def not_by_value(self, fn: object, known: bool) -> bool:
        """A function of the caller's script, which a module refused in the workers, does
        not pickle by value (``known``: the refusal came in an earlier pool): whether it
        runs on the other side, routed there with a warning, as a function that refused
        is; else its task fails with the refusal (``script_refused_error``)."""
        if self.kind is None:
            return False
        self.refused(fn, self.script_refusal or "?", known=known)
        return True

    def refuse_script(self, module: str) -> None:
        """``module`` refused the caller's script: its functions go by value from now on,
        in this pool and in those made after it."""
        self.script_refusal = module
        self.script_refused = _transport.has_cloudpickle()
        if self.script_refused and _main_file():
            _SCRIPTS_REFUSED[_main_file()] = module

    def route_refused(self, fn: object, module: str, known: bool = False) -> None:
        """Route ``fn`` here because ``module`` refused an interpreter: done by the pool
        as soon as the refusal arrives, before it hands its worker the next tasks
        (``known``: before any, ``module`` refused an earlier task, see ``needs_refusing``)."""
        why = f"{self.kind}: the extension module {module} refuses an own-GIL interpreter"
        self.route(fn, why + (" (it refused an earlier task)" if known else ""))
        if getattr(fn, "__module__", None) != "__main__" or _main_file():
            # Not a notebook's or a REPL's function: redefined there, the name may stand
            # for a pure function next time.
            _LEARNED[route_key(fn)] = module

    def _first(self, said: set[str], key: str) -> bool:
        """Whether ``key`` is said for the first time in ``said`` (one warning each)."""
        with self.lock:
            first = key not in said
            said.add(key)
        return first

    def _where(self) -> str:
        return "a process worker" if self.kind == "process" else "a shared-GIL interpreter"

    def refused(self, fn: object, module: str, known: bool = False) -> None:
        """A worker could not load a call of ``fn`` (``known``: would not, see
        ``needs_refusing``): ``module`` refused its interpreter.  Route it, and say so
        once per function."""
        _faults.point("router.refused", self, fn, module)
        self.route_refused(fn, module, known)
        if self._first(self.warned, route_key(fn)):
            where = self._where()
            top = module.split(".")[0]
            code = getattr(fn, "__code__", None)  # shown at the function, not in manygil
            try:
                warnings.warn_explicit(
                    f"manygil: {route_key(fn)} runs in {where} from now on: the extension module "
                    f"{module} refuses to load in an interpreter with its own GIL "
                    f"(see `python -m manygil check {top}`; pool.routes() lists every route)",
                    FallbackWarning,
                    code.co_filename if code else "<manygil>",
                    code.co_firstlineno if code else 0,
                    module=getattr(fn, "__module__", None) or "manygil",
                )
            except Exception:  # noqa: BLE001 - warnings turned into errors, on a worker thread
                pass


class Router(Generic[T]):
    """The way between one pool's two sides: a refused task's trip from the interpreter
    side to the other side, or back to the interpreters by value, and the other side's
    life.  What it knows of where calls go is its ``table`` (``RouteTable``).

    Threads: a caller (``submit``, ``shutdown``) and the interpreter workers, in
    ``call_home``, as refusals arrive.  ``diverted`` and ``resend`` are guarded by
    ``lock`` (a leaf).  The interpreter side calls in with its own lock held or not; the
    router takes that lock (``withdraw``) only where the side may hold it already (it is
    re-entrant), and calls the other side only from ``flush`` and ``take_refused``,
    which the side calls without its lock.
    """

    def __init__(self, other: OtherSide | None, interp: InterpSide[T]) -> None:
        self.other = other
        self._interp = weakref.ref(interp)
        self.table = RouteTable(other.kind if other is not None else None)
        # Re-entrant: a garbage collection may run the executor's finalizer (which flushes)
        # on a thread that holds it, at any allocation.
        self.lock = threading.RLock()
        # Tasks the interpreter side handed over with its lock held, sent on by flush():
        # to the other side (their function is routed there), or back by value.
        self.diverted: list[T] = []
        self.resend: list[T] = []

    # What the interpreter side asks of the table (see _interp_side.Upstream).

    @property
    def kind(self) -> str | None:
        """The other side's kind; None: no other side (fallback=None, or a shared-GIL
        pool's own)."""
        return self.table.kind

    def routed(self, fn: object) -> bool:
        return self.table.routed(fn)

    @property
    def script_refused(self) -> bool:
        return self.table.script_refused

    def refuse_script(self, module: str) -> None:
        self.table.refuse_script(module)

    def place(self, fn: object) -> tuple[bool, bool]:
        """Where a new call of ``fn`` goes (a caller's thread, from ``submit``): whether
        to the other side, and whether it goes by value: a function of a script that a
        module refused, or one defined under the script's main guard (the worker's import
        of the script does not define it)."""
        table = self.table
        if table.routed(fn):
            return True, False
        by_value = table.script_refused and getattr(fn, "__module__", None) == "__main__"
        by_value = by_value or (_transport.under_main_guard(fn) and _transport.has_cloudpickle())
        module = table.needs_refusing(fn, by_value)
        if module is not None:  # its loading would import a module known to refuse
            table.refused(fn, module, known=True)
            return True, by_value
        return False, by_value

    # ------------------------------------------------------------------ a refused task's trip

    def by_value(self, item: T, refusal: str) -> bool:
        """Importing the caller's script in the worker failed on a refusing module (a
        script that starts with ``import numpy``): send this function of ``__main__``
        again by value (cloudpickle), with only the globals it uses, so that a pure
        function of the script still runs in an interpreter.  Calls queued by reference
        before the first resend are each resent too, never routed away for it; one that
        uses a module known to refuse (``needs_refusing``) runs here instead.  False when
        it cannot.  ``refusal``: the module that refused the script."""
        if (
            item.call is None
            or item.by_value  # sent by value already: refused for what it uses itself
            or getattr(item.fn, "__module__", None) != "__main__"
            or (interp := self._interp()) is None
            or not _transport.has_cloudpickle()
        ):
            return False
        table = self.table
        table.refuse_script(refusal)
        module = table.needs_refusing(item.fn, by_value=True)
        if module is not None:  # what it uses refused too: no need to send it again
            table.refused(item.fn, module, known=True)
            fn, args, kwargs = item.call
            self.run(item.future, fn, args, kwargs, timeout=item.timeout, label=item.label)
            return True
        try:
            interp.resubmit(item)
        except Exception as exc:  # noqa: BLE001 - shut down meanwhile, or it does not pickle by value
            item.by_value_error = exc  # said with the refusal, should the task fail for it
            return False
        return True

    def take_refused(self, item: T, module: str, script: bool) -> bool:
        """A task the interpreter side could not load because ``module`` refused its
        interpreter (``script``: on importing the caller's script), with no lock held:
        sent again by value, or run on the other side.  False when neither can be done:
        the side fails the task with the refusal."""
        if item.call is None:
            return False
        if script and self.by_value(item, module):
            return True  # sent again with the function by value: only what it uses
        if self.kind is None:
            return False
        if self.table.refused_by_function(item.fn, item.by_value):
            self.table.refused(item.fn, module)
        else:  # only this call: an argument of it refused
            self.table.argument_refused(item.fn, module)
        fn, args, kwargs = item.call
        self.run(item.future, fn, args, kwargs, timeout=item.timeout, label=item.label)
        return True

    def learn(self, refused: list[tuple[T, str, bool]]) -> bool:
        """Route the functions of tasks just refused (the interpreter side's lock held),
        so that their calls still queued go to the other side at once instead of being
        refused one by one (``take_refused`` then sends the refused ones); whether some
        may come back by value, which the side keeps a worker for."""
        routed = resent = False
        for item, module, script in refused:
            if script:  # answered by a resend by value, for the queued calls too
                self.table.refuse_script(module)
                resent = True
            elif self.kind is not None and self.table.refused_by_function(item.fn, item.by_value):
                self.table.route_refused(item.fn, module)
                routed = True
        if routed:
            self.withdraw_routed()
        return resent

    def withdraw_routed(self) -> None:
        """Take the queued calls of routed functions off the interpreter side, for
        ``flush`` to send on: they go to the other side at once, rather than each waiting
        its turn behind the interpreters' tasks (which left the process side idle between
        them)."""
        interp = self._interp()
        if interp is None or not self.table.routes:
            return
        taken = interp.withdraw(lambda item: self.table.routed(item.fn))
        if taken:
            with self.lock:
                self.diverted += taken

    def divert(self, item: T) -> None:
        """The interpreter side found ``item``'s function routed as it was to start it
        (its lock held): ``flush`` runs it on the other side."""
        with self.lock:
            self.diverted.append(item)

    def resend_by_value(self, item: T) -> None:
        """The interpreter side found ``item`` queued by reference to a script that
        does not import there (its lock held): ``flush`` queues it again by value."""
        with self.lock:
            self.resend.append(item)

    def holds(self) -> bool:
        """Whether tasks wait here for ``flush`` (a hint, without the lock)."""
        return bool(self.diverted) or bool(self.resend)

    def flush(self) -> None:
        """Send on the tasks handed over: to the other side, or back to the interpreters
        by value.  The interpreter side calls this without its lock, since it pickles
        their arguments and may start a process."""
        if not self.diverted and not self.resend:
            return
        with self.lock:
            items, self.diverted = self.diverted, []
            again, self.resend = self.resend, []
        interp = self._interp()
        stop: KeyboardInterrupt | None = None  # Ctrl-C while one was pickled: raised once all are sent on
        for item in again:
            module = self.table.needs_refusing(item.fn, by_value=True)
            if module is not None:  # what it uses refused too: run it there at once
                self.table.refused(item.fn, module, known=True)
                items.append(item)
                self.withdraw_routed()  # and the calls of it still queued
                with self.lock:
                    items += self.diverted
                    self.diverted = []
            elif interp is not None:
                error = interp.requeue_by_value(item)
                if error is None:
                    continue
                if not isinstance(error, Exception):
                    if isinstance(error, KeyboardInterrupt):  # the main thread's: raised below
                        stop = stop or error
                    settle(item.future, exc=error)
                else:
                    try:
                        failure = self.table.not_sent(item.fn, error, known=False)
                    except Exception as exc:  # noqa: BLE001 - an argument does not pickle: this call fails
                        settle(item.future, exc=exc)
                    else:
                        if failure is None:
                            items.append(item)  # to the other side
                        else:
                            settle(item.future, exc=failure)
            else:  # the interpreter side is gone (only at the very end): its task fails, never hangs
                settle(item.future, exc=RuntimeError(f"task {item.label} was not sent again: its pool is gone"))
        for item in items:
            assert item.call is not None
            fn, args, kwargs = item.call
            try:
                self.run(item.future, fn, args, kwargs, timeout=item.timeout, label=item.label)
            except BaseException as exc:  # noqa: BLE001 - e.g. an argument cannot reach a process
                settle(item.future, exc=exc)
        if stop is not None:
            raise stop

    # ------------------------------------------------------------------ the other side

    def run(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        label: str = "",
    ) -> None:
        """Run a task on the other side and settle ``future`` (running) with its outcome."""
        assert self.other is not None, "no other side to run a task on"
        future._other_side = self.kind  # type: ignore[attr-defined]  # where it ran, for manygil run's report
        self.other.run(future, fn, args, kwargs, timeout=timeout, label=label)

    def in_flight(self) -> int:
        """How many tasks the other side has pending or running."""
        return self.other.in_flight() if self.other is not None else 0

    def cancel_all(self) -> None:
        """Cancel every task of the other side, running ones included."""
        if self.other is not None:
            self.other.cancel_all()

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Shut the other side down (after the interpreter side: a refusal may still send
        it a task until the interpreters' own tasks are done)."""
        if self.other is not None:
            self.other.shutdown(wait, cancel_futures)
