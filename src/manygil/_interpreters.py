"""The PEP 734 API for 3.12 and 3.13 (re-exported by :mod:`manygil.interpreters`)."""

from __future__ import annotations

import atexit
import marshal
import os
import pickle
import sys
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from . import _backend, _native, _output, _tracebacks
from ._exceptions import (
    ExcInfo,
    ExcTypeInfo,
    ExecutionFailed,
    InterpreterError,
    InterpreterNotFoundError,
    ItemInterpreterDestroyed,
    NotShareableError,
    QueueEmpty,
    QueueError,
    QueueFull,
)
from ._handles import carry, gone, out_of_band, out_of_band_value, release_pins
from ._timeouts import check_timeout
from ._transport import describe, dumps, loads, main_extension_imports, main_hint

__all__ = (
    "UNBOUND",
    "UNBOUND_ERROR",
    "UNBOUND_REMOVE",
    "ExecutionFailed",
    "Interpreter",
    "InterpreterError",
    "InterpreterNotFoundError",
    "ItemInterpreterDestroyed",
    "NotShareableError",
    "Queue",
    "QueueEmpty",
    "QueueError",
    "QueueFull",
    "bootstrap",
    "create",
    "create_queue",
    "get_current",
    "get_main",
    "is_shareable",
    "list_all",
)

_BOOT = (
    "import sys\n"
    "sys.path[:] = _mg_path.split('\\0')\n"
    "import manygil._worker as _mg_worker\n"
    "_mg_worker.bootstrap(_mg_path, _mg_main_name, _mg_main_file, _mg_forward, _mg_log, _mg_main_first)\n"
    "del _mg_path, _mg_main_name, _mg_main_file, _mg_forward, _mg_log, _mg_main_first\n"
)
# What runs in an interpreter after its bootstrap depends on no name in its __main__,
# which is the user's: code there may clear it (globals().clear()) or rebind a name.
# Each source imports the worker module again (from sys.modules; an import statement
# takes __import__ from the builtins, not from __main__), and the channels it uses are
# numbers in its text, not names bound in __main__ before it runs, which another
# thread's call could rebind or delete first.
_WORKER = "import manygil._worker as _mg_worker\n"
_RESERVED = "_mg_worker"  # the one name of manygil's in __main__, bound again by each source
_START_AGENT = _WORKER + "_mg_worker.start_agent({control})\n"
_STOP_AGENT = _WORKER + "_mg_worker.stop_agent({control})\n"
_EXEC = _WORKER + "_mg_worker.exec_source({source}, {reply})\n"  # source: a literal
_CALL = _WORKER + "_mg_worker.call_once({inbox}, {reply})\n"
_PREPARE = _WORKER + (  # the values that cross by pickle: (tag, data) in the channel
    "_mg_worker.sys.modules['__main__'].__dict__.update("
    "_mg_worker.loads(*_mg_worker._native.chan_get({inbox}, 0)[:2]))\n"
)

# interpreter id -> its agent's control channel (interpreters made by create())
_agent_channels: dict[int, int] = {}

# Interpreters this process created through manygil and has not closed yet.
_owned: set[int] = set()
_booted: set[int] = set()
_owned_lock = threading.Lock()


# One thread at a time runs code in an interpreter, as in CPython 3.14's
# concurrent.interpreters: a call, exec or prepare_main that finds the interpreter
# running raises "already running" before anything of its own is done, and close()
# says it is running.  The threads of this interpreter meet in ``_entered`` (guarded by
# ``_entered_lock``, re-entrant: a collection may close an interpreter, through
# ``Interpreter.__del__``, while a thread holds it); code that another interpreter runs
# there is seen by ``is_running()``, and on 3.13+ ``_interpreters.exec`` refuses a
# running interpreter by itself, so nothing of a loser's runs even then.
_entered: set[int] = set()
_entered_lock = threading.RLock()


def _enter(interp_id: int) -> None:
    """Claim ``interp_id`` for this thread's code, or raise ``InterpreterError``."""
    with _entered_lock:
        if interp_id in _entered or _backend.is_running(interp_id):
            raise InterpreterError(
                f"interpreter {interp_id} already running (another thread is running code in it); "
                "wait for that call to return, or create another interpreter for this one"
            )
        _entered.add(interp_id)


def _leave(interp_id: int) -> None:
    with _entered_lock:
        _entered.discard(interp_id)


def _run(interp_id: int, source: str, shared: dict[str, object]) -> None:
    # What the code prints comes back on this thread (call_home) to our sys.stdout.
    _native.push_home(_output.home_callback)
    try:
        failed = _backend.run(interp_id, source, shared)
    finally:
        _native.pop_home()
    if failed is not None:
        name, msg = failed
        formatted = f"{name}: {msg}" if msg else name
        raise ExecutionFailed(ExcInfo(ExcTypeInfo(name, name, "builtins"), msg, formatted))


def bootstrap(interp_id: int, forward_output: bool = True) -> None:
    """Give an interpreter this one's import path and ``__main__`` (done by ``create``);
    with ``forward_output``, what it prints and logs comes to this interpreter."""
    name, file = main_hint()
    if file and not name and "__mg_main__" not in sys.modules and _backend.get_current()[0] == _backend.get_main()[0]:
        # Workers import the caller's script as __mg_main__ (as spawn does); objects made
        # there come back as this __main__'s own classes, so that `except MyError:` and
        # isinstance() work (multiprocessing does the same for __mp_main__).
        sys.modules["__mg_main__"] = sys.modules["__main__"]
    shared = {
        "_mg_path": "\0".join(sys.path),
        "_mg_main_name": name,
        "_mg_main_file": file,
        "_mg_main_first": _main_first(file),
        "_mg_forward": int(forward_output),
        "_mg_log": _output.log_level() if forward_output else -1,
    }
    _run(interp_id, _BOOT, shared)
    _booted.add(interp_id)


def _main_first(file: str) -> str:
    """``main_extension_imports()``, without parsing a script that cannot have any: one
    that writes no package with an extension module loaded here (but manygil itself,
    which every worker has imported by then) where a top-level import can name it.  The
    parse is on the first worker's way to its first task, its time grows with the
    script, and on 3.13 it imports ``ast`` too (3.14's concurrent.futures has imported
    it already)."""
    if file.endswith(".py"):
        key = (file, frozenset(_extension_packages()))
        if key not in _may_import:
            try:
                with open(file, "rb") as f:
                    text = f.read()
            except OSError:
                return main_extension_imports()
            _may_import[key] = any(_written_at_top_level(text, package) for package in key[1])
        if not _may_import[key]:
            return ""
    return main_extension_imports()


# (script, the packages with an extension module loaded) -> whether the script may
# import one at its top level; the script is read once, as main_extension_imports() does.
_may_import: dict[tuple[str, frozenset[str]], bool] = {}


_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _written_at_top_level(text: bytes, package: str) -> bool:
    """Whether ``package`` is written in ``text`` (a script's bytes) as a name, or the
    first part of a dotted one, on a line where a top-level statement can be: a line
    that starts at column 0 or holds a ``;``, or one that a backslash joins to such a
    line.  A name in a string or a comment there makes it say yes too; it never says no
    to a script that imports the package at its top level."""
    word = "manygil." if package == "manygil" else package  # its submodules: manygil.duckdb
    if not word.isascii():
        return True  # how it is written depends on the script's encoding
    needle = word.encode()
    at = text.find(needle)
    while at >= 0:
        after = text[at + len(needle) : at + len(needle) + 1]
        if (
            (at == 0 or (text[at - 1] not in _NAME_BYTES and text[at - 1] != ord(".")))
            and (needle.endswith(b".") or not after or after[0] not in _NAME_BYTES)
            and _on_top_level_line(text, at)
        ):
            return True
        at = text.find(needle, at + 1)
    return False


def _on_top_level_line(text: bytes, at: int) -> bool:
    """Whether position ``at`` of ``text`` is on a line where a top-level statement can be."""
    while True:
        start = max(text.rfind(b"\n", 0, at), text.rfind(b"\r", 0, at)) + 1
        ends = [i for i in (text.find(b"\n", at), text.find(b"\r", at)) if i >= 0]
        line = text[start : min(ends, default=len(text))]
        if b";" in line or line.lstrip(b"\f")[:1] not in (b"", b" ", b"\t", b"#"):
            return True
        end = start - 1  # the previous line's end: joined to this one by a backslash?
        if end > 0 and text[end - 1 : end + 1] == b"\r\n":
            end -= 1
        if end <= 0 or text[end - 1] != ord("\\"):
            return False
        at = end - 1


def _extension_packages() -> set[str]:
    """The top-level packages of the extension modules loaded in this interpreter."""
    import _imp

    suffixes = tuple(_imp.extension_suffixes())
    found = set()
    for name, module in list(sys.modules.items()):
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(origin, str) and origin.endswith(suffixes):
            found.add(name.partition(".")[0])
    return found


def _ensure_booted(interp_id: int) -> None:
    if interp_id not in _booted:
        bootstrap(interp_id)


class Interpreter:
    """A single Python interpreter in this process.

    Attributes:
        id: the interpreter's process-wide id.
        whence: where it was created ("runtime init", "_interpreters module", ...).
    """

    _known: weakref.WeakValueDictionary[int, Interpreter] = weakref.WeakValueDictionary()

    _id: int
    _whence: str
    _owner: bool  # made by create(): closed when the last reference goes

    def __new__(cls, id: int, /, _whence: str | None = None) -> Interpreter:
        if not isinstance(id, int) or isinstance(id, bool):
            raise TypeError(f"interpreter id must be an int, got {id!r}")
        try:
            return cls._known[id]
        except KeyError:
            pass
        if _whence is None:
            _whence = _backend.whence(id)
        self = super().__new__(cls)
        self._id = id
        self._whence = _whence
        self._owner = False
        cls._known[id] = self
        return self

    def __del__(self) -> None:
        # As on 3.14: the last reference to an interpreter made by create() is dropped,
        # so the interpreter is closed (unless code is running in it: then exit does it).
        if self._owner:
            try:
                if not _backend.is_running(self._id):
                    _close_quietly(self._id)
            except Exception:  # noqa: BLE001 - already closed, or this interpreter is finalizing
                pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id})"

    def __hash__(self) -> int:
        return hash(self._id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._id,))

    @property
    def id(self) -> int:
        """The interpreter's process-wide id."""
        return self._id

    @property
    def whence(self) -> str:
        """Where the interpreter was created."""
        return self._whence

    def is_running(self) -> bool:
        """Whether the interpreter is running code right now (in any thread)."""
        return bool(_backend.is_running(self._id))

    def close(self) -> None:
        """Finalize and destroy the interpreter.

        Raises:
            InterpreterError: it is running code, or it is the current interpreter.
            InterpreterNotFoundError: it was already closed.
        """
        if self._id == _backend.get_current()[0]:
            raise InterpreterError(
                f"cannot close interpreter {self._id}: it is the current interpreter; close it from another one"
            )
        try:
            _destroy(self._id)
        except InterpreterError as exc:
            if type(exc) is InterpreterError and "running" in str(exc):
                raise InterpreterError(
                    f"cannot close interpreter {self._id}: it is running; "
                    "wait for the running call to return first"
                ) from None
            raise

    def prepare_main(self, ns: dict[str, object] | None = None, /, **kwargs: object) -> None:
        """Bind the given values into the interpreter's ``__main__``.

        Shareable values cross as they are, others by pickle.

        Raises:
            NotShareableError: a value is neither shareable nor picklable.
            ValueError: a name is ``_mg_worker``, which manygil keeps there.
            InterpreterError: another thread runs code in the interpreter ("already running").
        """
        values = dict(ns, **kwargs) if ns is not None else kwargs
        if not values:
            raise ValueError("prepare_main() needs at least one name to bind, e.g. prepare_main(x=1)")
        if _RESERVED in values:
            raise ValueError(
                f"cannot bind {_RESERVED} in interpreter {self._id}'s __main__: manygil keeps its "
                "worker module under that name there; choose another name"
            )
        shared: dict[str, object] = {}
        pickled: dict[str, object] = {}
        for name, value in values.items():
            if _backend.is_shareable(value):
                shared[name] = value
            else:
                pickled[name] = value
        pins: tuple[int, ...] = ()
        inbox = 0
        try:
            if pickled:
                tag, data, pins = dumps(pickled)
                inbox = _native.chan_create(0)
                _native.chan_put(inbox, data, tag, 0, ())  # the pins stay ours
            self._ensure_ready()
            _enter(self._id)
            try:
                _ensure_booted(self._id)
                _run(self._id, _PREPARE.format(inbox=inbox) if pickled else "pass", shared)
            finally:
                _leave(self._id)
        finally:
            if inbox:
                _native.release(inbox)
            release_pins(pins)  # loaded there by now, or never will be

    def _ensure_ready(self) -> None:
        if self._id == _backend.get_current()[0]:
            raise InterpreterError(f"interpreter {self._id} is the current interpreter; call the code directly")

    def exec(self, code: str | types.FunctionType | types.CodeType, /) -> None:
        """Run source code (or a function's body) in the interpreter's ``__main__``.

        Raises:
            ExecutionFailed: the code raised; ``excinfo`` carries its type, message and
                traceback text.
            InterpreterError: another thread runs code in the interpreter ("already running").
        """
        if isinstance(code, str):
            src: str | bytes = code
        elif isinstance(code, types.FunctionType):
            if code.__code__.co_argcount or code.__code__.co_kwonlyargcount or code.__closure__:
                raise ValueError(
                    f"cannot exec {describe(code)}: it takes arguments or is a closure; "
                    "use Interpreter.call() instead"
                )
            src = marshal.dumps(code.__code__)
        elif isinstance(code, types.CodeType):
            src = marshal.dumps(code)
        else:
            raise TypeError(f"exec() takes source code or a function, got {describe(code)}")
        self._ensure_ready()
        _enter(self._id)
        try:
            _ensure_booted(self._id)
            reply = _native.chan_create(0)
            try:
                # str's own repr: a subclass's could say anything
                literal = str.__repr__(src) if isinstance(src, str) else repr(src)
                _run(self._id, _EXEC.format(source=literal, reply=reply), {})
                item = _native.chan_get(reply, 0)
            finally:
                _native.release(reply)
        finally:
            _leave(self._id)
        if item is not None:
            raise ExecutionFailed(pickle.loads(item[1]))

    def call(self, callable: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``callable(*args, **kwargs)`` in the interpreter and return its result.

        The callable, arguments and result cross by pickle (functions by reference).

        Raises:
            NotShareableError: the callable, an argument or the result cannot cross.
            ExecutionFailed: the call raised.
            InterpreterError: another thread runs code in the interpreter ("already running").
        """
        tag, data, pins = dumps((callable, out_of_band(args), kwargs))
        try:
            self._ensure_ready()
            _enter(self._id)
        except BaseException:
            release_pins(pins)
            raise
        try:
            inbox = _native.chan_create(0)
            reply = _native.chan_create(0)
            try:
                _put(inbox, data, tag, 0, pins)  # the inbox owns the pins now
                _ensure_booted(self._id)
                _run(self._id, _CALL.format(inbox=inbox, reply=reply), {})
                item = _native.chan_get(reply, 0)
            finally:
                _native.release(inbox)
                _native.release(reply)
        finally:
            _leave(self._id)
        if item is None:
            raise InterpreterError(f"interpreter {self._id} returned no result")
        try:
            answer = pickle.loads(item[1])
            if answer[0]:
                return loads(answer[1], answer[2])
            if answer[0] is None:
                raise NotShareableError(
                    f"the result of {describe(callable)} cannot come back from interpreter "
                    f"{self._id}: {answer[1].msg}"
                )
            raise ExecutionFailed(answer[1])
        finally:
            release_pins(item[2])

    def call_in_thread(self, callable: Callable[..., Any], /, *args: Any, **kwargs: Any) -> threading.Thread:
        """Start a thread that calls ``callable(*args, **kwargs)`` in the interpreter.

        The result is discarded; an exception is reported by ``threading.excepthook``.
        """
        thread = threading.Thread(target=self.call, args=(callable, *args), kwargs=kwargs)
        thread.start()
        return thread


def create() -> Interpreter:
    """Create a new interpreter with its own GIL, ready to run code."""
    if "manygil._worker" in sys.modules:
        sys.modules["manygil._worker"].check_not_importing_main()
    if _agent_channels:
        _forget_closed({i for i, _ in _backend.list_all()})
    interp_id = _backend.create()
    with _owned_lock:
        _owned.add(interp_id)
    try:
        _enter(interp_id)  # another thread may find it in list_all() already
        try:
            bootstrap(interp_id)
            control = _native.chan_create(0)
            _agent_channels[interp_id] = control
            _run(interp_id, _START_AGENT.format(control=control), {})
            _tracebacks.register(interp_id, control, "interpreters.create()")
        finally:
            _leave(interp_id)
    except BaseException:
        _close_quietly(interp_id)
        raise
    interp = Interpreter(interp_id, "_interpreters module")
    interp._owner = True
    return interp


def _stop_agent(interp_id: int) -> None:
    control = _agent_channels.get(interp_id)
    if control is not None:
        _run(interp_id, _STOP_AGENT.format(control=control), {})


def _forget(interp_id: int) -> None:
    with _owned_lock:
        _owned.discard(interp_id)
    _booted.discard(interp_id)
    _tracebacks.unregister(interp_id)
    control = _agent_channels.pop(interp_id, None)
    if control is not None:
        _native.release(control)


def _destroy(interp_id: int) -> None:
    """Stop the agent thread (an interpreter with threads cannot be closed), destroy
    the interpreter and forget it; a running interpreter raises and is kept."""
    _enter(interp_id)
    try:
        if interp_id in _agent_channels:
            _stop_agent(interp_id)
        _backend.destroy(interp_id)
    finally:
        _leave(interp_id)
    _forget(interp_id)


def _close_quietly(interp_id: int) -> None:
    try:
        _destroy(interp_id)
    except InterpreterError:
        _forget(interp_id)


def _warn_before_fork() -> None:
    count = len(_backend.list_all()) - 1
    # The child of this fork ends at once if interpreters run (see _native's fork_guard).
    _native.set_fork_guard(count > 0)
    if count > 0:
        import warnings

        warnings.warn(
            f"manygil: os.fork() while this process runs {count} interpreter{'s' * (count > 1)} "
            "besides the main one: the child process exits at once (with status 1), because "
            "CPython cannot go on in the child of a process that has subinterpreters; "
            "fork before creating interpreters, or use multiprocessing's 'forkserver' or 'spawn' "
            "start method (ProcessPoolExecutor(mp_context=multiprocessing.get_context('forkserver')))",
            RuntimeWarning,
            stacklevel=2,
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_warn_before_fork, after_in_parent=lambda: _native.set_fork_guard(False))


@atexit.register
def _close_owned() -> None:
    # Interpreters left open would be finalized by the runtime in any order; close
    # them here, while the modules they use are all still alive.
    for interp_id in sorted(_owned):
        _close_quietly(interp_id)


def list_all() -> list[Interpreter]:
    """All interpreters that exist in this process."""
    found = [Interpreter(i, w) for i, w in _backend.list_all()]
    # A collection while the objects were made may have closed an unreferenced one.
    alive = {i for i, _ in _backend.list_all()}
    _forget_closed(alive)
    return [interp for interp in found if interp.id in alive]


def _forget_closed(alive: set[int]) -> None:
    """Forget interpreters this one made that another one closed (their agent's channel)."""
    stale = [i for i in list(_agent_channels) if i not in alive]
    if stale:
        # Listed again after reading the ids (never reused), so that one another thread
        # created since ``alive`` was taken is not forgotten.
        now = {i for i, _ in _backend.list_all()}
        for interp_id in stale:
            if interp_id not in now:
                _forget(interp_id)


def get_current() -> Interpreter:
    """The interpreter this code runs in."""
    i, w = _backend.get_current()
    return Interpreter(i, w)


def get_main() -> Interpreter:
    """The main interpreter."""
    i, w = _backend.get_main()
    return Interpreter(i, w)


# ---------------------------------------------------------------------- queues


class _Unbound:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


UNBOUND = _Unbound("UNBOUND")
UNBOUND_ERROR = _Unbound("UNBOUND_ERROR")
UNBOUND_REMOVE = _Unbound("UNBOUND_REMOVE")
# As the native channels (and CPython 3.14's queues) number them; 0 is "kept".
_UNBOUND_CODES = {UNBOUND_REMOVE: 1, UNBOUND_ERROR: 2, UNBOUND: 3}
_UNBOUND_BY_CODE = {code: choice for choice, code in _UNBOUND_CODES.items()}


def _unbound_code(unbounditems: object) -> int:
    """The native code of an ``unbounditems`` choice; -1 for None (the queue's own)."""
    if unbounditems is None:
        return -1
    try:
        return _UNBOUND_CODES[unbounditems]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"unbounditems must be UNBOUND, UNBOUND_ERROR or UNBOUND_REMOVE, got {unbounditems!r}"
        ) from None


class Queue:
    """A FIFO that is the same queue in every interpreter it is passed to.

    Items are copied in: bytes and str as they are, anything else by pickle.
    Blocking ``put``/``get`` wait on a condition variable with the GIL released.
    """

    _known: weakref.WeakValueDictionary[int, Queue] = weakref.WeakValueDictionary()
    _id: int

    def __new__(cls, id: int, /) -> Queue:
        """The handle of an existing queue (taking a new reference to it)."""
        if not isinstance(id, int) or isinstance(id, bool):
            raise TypeError(f"queue id must be an int, got {id!r}")
        try:
            return cls._known[id]
        except KeyError:
            pass
        try:
            _native.chan_info(id)
            _native.retain(id)
        except LookupError:
            raise QueueError(f"queue {id} not found (it was never created or all handles were released)") from None
        return cls._adopt(id)

    @classmethod
    def _adopt(cls, qid: int) -> Queue:
        self = super().__new__(cls)
        self._id = qid
        cls._known[qid] = self
        weakref.finalize(self, _native.release, qid)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        carry((self._id,))
        return (_queue_from_transit, (self._id,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id})"

    def __hash__(self) -> int:
        return hash(self._id)

    @property
    def id(self) -> int:
        """The queue's process-wide id."""
        return self._id

    @property
    def maxsize(self) -> int:
        """The most items the queue holds (0 or less: no limit)."""
        return int(_native.chan_info(self._id)[1])

    @property
    def unbounditems(self) -> object:
        """What ``get()`` gives for an item whose interpreter was closed, unless its
        ``put()`` said otherwise: ``UNBOUND`` (returned instead), ``UNBOUND_ERROR``
        (``ItemInterpreterDestroyed`` raised) or ``UNBOUND_REMOVE`` (it leaves the queue)."""
        return _UNBOUND_BY_CODE.get(_native.chan_info(self._id)[2], UNBOUND)

    def qsize(self) -> int:
        """The number of items in the queue now."""
        return int(_native.chan_info(self._id)[0])

    def empty(self) -> bool:
        """Whether the queue is empty now."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether the queue is full now."""
        count, maxsize, _ = _native.chan_info(self._id)
        return maxsize > 0 and count >= maxsize

    def put(
        self, obj: object, block: bool = True, timeout: float | None = None, *, unbounditems: object = None
    ) -> None:
        """Add an item, waiting for room if the queue is full.

        The item is a copy, but as in CPython 3.14, once the interpreter that put it is
        closed, ``get()`` gives what ``unbounditems`` says (None: the queue's own, see
        ``Queue.unbounditems``) in its place.

        Raises:
            QueueFull: no room before the timeout (or at once when ``block`` is false).
            NotShareableError: the item can neither be shared nor pickled.
        """
        timeout = check_timeout(timeout)  # NaN: ValueError; inf: wait forever
        unbound = _unbound_code(unbounditems)
        tag, data, pins = dumps(out_of_band_value(obj))  # a memoryview crosses too
        if not _put(self._id, data, tag, timeout if block else 0, pins, unbound):
            raise QueueFull(f"queue {self._id} is full")

    def put_nowait(self, obj: object, *, unbounditems: object = None) -> None:
        """Add an item or raise ``QueueFull`` at once."""
        self.put(obj, block=False, unbounditems=unbounditems)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting for one if the queue is empty.

        Raises:
            QueueEmpty: nothing arrived before the timeout (or at once when ``block`` is false).
            ItemInterpreterDestroyed: the item's interpreter was closed, and it was put
                with ``unbounditems=UNBOUND_ERROR``.
        """
        timeout = check_timeout(timeout)  # NaN: ValueError; inf: wait forever
        item = _native.chan_get(self._id, timeout if block else 0)
        if item is None:
            raise QueueEmpty(f"queue {self._id} is empty")
        tag, data, pins = item
        if tag < 0:  # its interpreter was closed: -unbounditems
            if _UNBOUND_BY_CODE.get(-tag) is UNBOUND_ERROR:
                raise ItemInterpreterDestroyed(
                    f"the interpreter that put this item in queue {self._id} was closed "
                    "(it was put with unbounditems=UNBOUND_ERROR)"
                )
            return UNBOUND
        try:
            return loads(tag, data)
        finally:
            release_pins(pins)

    def get_nowait(self) -> Any:
        """Remove and return the oldest item or raise ``QueueEmpty`` at once."""
        return self.get(block=False)


def _put(
    chan: int, data: bytes, tag: int, timeout: float | None, pins: tuple[int, ...], unbound: int = -1
) -> bool:
    """Put an item that owns ``pins`` on a channel; if the channel does not take it (full
    at the deadline, or an error), the pins are released here."""
    try:
        taken = bool(_native.chan_put(chan, data, tag, timeout, pins, unbound))
    except BaseException:
        release_pins(pins)
        raise
    if not taken:
        release_pins(pins)
    return taken


def _queue_from_transit(qid: int) -> Queue:
    known = Queue._known.get(qid)
    if known is None:
        try:
            _native.retain(qid)
        except LookupError:
            raise gone("Queue", qid) from None
        known = Queue._adopt(qid)
    return known


def create_queue(maxsize: int = 0, *, unbounditems: object = UNBOUND) -> Queue:
    """Create a cross-interpreter queue holding at most ``maxsize`` items (0: no limit)."""
    if not isinstance(maxsize, int) or isinstance(maxsize, bool):
        raise TypeError(f"maxsize must be an int, got {maxsize!r}")
    if unbounditems is None:
        raise ValueError("unbounditems must be UNBOUND, UNBOUND_ERROR or UNBOUND_REMOVE, got None")
    return Queue._adopt(_native.chan_create(maxsize, _unbound_code(unbounditems)))


def is_shareable(obj: object) -> bool:
    """Whether the object is shareable in 3.14's sense (it crosses without pickling
    there): ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, a tuple of such
    objects, a ``Queue``, or what this CPython's low-level module shares natively."""
    if isinstance(obj, tuple):
        return type(obj) is tuple and all(is_shareable(item) for item in obj)
    return type(obj) in (bool, float) or bool(_backend.is_shareable(obj)) or isinstance(obj, Queue)


