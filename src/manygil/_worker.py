"""Code that runs *inside* an interpreter that manygil created.

Imported once per interpreter by :func:`bootstrap`; everything else here is called
from small source strings that the main interpreter runs there.  Messages travel on
native channels (see ``_native_chan.c``); the pool's protocol is:

    batch    (main → worker)  one or more [8-byte task id][4-byte n][n bytes: pickle (fn, args,
             kwargs)]; task id 0 = stop.  The answer of call_home(), or from the inbox
             channel when the worker was idle.
    result   (worker → main)  [8-byte task id][1-byte status][payload], one per task: the
             batch's last one as the argument of call_home(), earlier ones in the worker's
             results channel
    event    (worker → main)  call_home([8 zero bytes][READY]), answered like a result, or
             with PRELOAD: import the caller's script now, then call_home([8 zero
             bytes][PRELOADED][refusal() of the module that refused it, if one did]),
             call_home([8 zero bytes][INIT_FAILED][status][payload]) or
             call_home([8 zero bytes][OUTPUT][kind][payload]) for what a task printed
    control  (main → worker)  [8-byte task id]  interrupt that task if it still runs or
             has not started yet; 0 = stop
"""

from __future__ import annotations

import _thread  # not threading, whose import every worker would pay: see _start_thread
import sys
import time


_ModuleType = type(sys)  # types.ModuleType, without importing types in every worker


def _import_pickle() -> None:
    """Import ``_pickle`` (the C module: importing pickle.py would cost every worker
    more) without the ``functools`` that its initialization imports for
    ``functools.partial`` alone: functools imports collections, which was half of the
    imports of a worker's start.  ``partial`` is ``_functools``' class, which functools
    re-exports; a task that imports functools gets the whole module.

    Only in an interpreter other than the main one, where no thread started by Python
    runs yet (a new worker's): another thread's ``import functools`` meanwhile would
    get the stand-in."""
    if "_pickle" in sys.modules or "functools" in sys.modules:
        return
    if _thread._is_main_interpreter() or _thread._count():  # type: ignore[attr-defined]
        return
    try:
        import _functools  # type: ignore[import-not-found]  # no stub: functools re-exports it
    except ImportError:  # pragma: no cover - a build without it: the plain import
        return
    stand_in = _ModuleType("functools")
    stand_in.partial = _functools.partial  # type: ignore[attr-defined]
    sys.modules["functools"] = stand_in
    try:
        import _pickle  # noqa: F401 - imported for its initialization, here
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]


_import_pickle()  # before anything of manygil's imports _pickle

import _pickle as pickle

from . import _copy, _native
from ._handles import collect, lent, out_of_band_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types

    from ._excinfo import ExcInfo  # imported by the error paths: most workers never need it
    from collections.abc import Iterator
    from typing import Any

TAG_PICKLE = 0  # as in _transport, which only the interpreters API needs here

# result statuses
OK = 0
RAISED = 1          # payload: [4-byte n][pickle ExcInfo: n bytes][pickle exception]
RAISED_INFO = 2     # payload: pickle ExcInfo (the exception itself did not pickle)
INTERRUPTED = 3     # the task was interrupted by a time limit or cancel()
READY = 4           # the worker is up (task id 0)
INIT_FAILED = 5     # the initializer raised (task id 0); payload as RAISED
OUTPUT = 6          # event: [kind][payload]: what a task wrote, for the caller's streams
REFUSED = 7         # loading the task needs a module that refuses this interpreter:
                    # [2-byte n][n bytes: refusal()] + a RAISED payload
PRELOADED = 8       # event: the caller's script is imported here (payload: b""), or a
                    # module refused it (payload: refusal())
PRELOAD = b"preload"  # answer to READY: no task yet, import the caller's script meanwhile
OUT_STDOUT, OUT_STDERR, OUT_LOG = 1, 2, 3
LENT = 0x40         # status flag: the result is a large bytes that this worker lends (its
                    # only pin): the pool reads it when the caller asks for the result
PINNED = 0x80       # status flag: [2-byte n][n 8-byte ids] precede the payload: the
                    # references the payload's manygil objects hold (see _handles)
_EVENT = bytes(8)   # the task id of events: results always have a task id > 0
_IDLE_SPIN = 50e-6  # seconds a worker polls its inbox before it sleeps (a wake-up costs more)...
_SHORT_BATCH = 1e-3  # ...after a batch that took less than this (tasks come often, then)...
_IDLE_SPIN_MAX = 1e-3  # ...or longer, to this, when the last batch came that soon after
_LENT_KEPT = 0.05  # seconds an idle worker keeps the object of its last large result

_user_main: types.ModuleType | None = None
_main_failed: tuple[BaseException, Any] | None = None  # importing it failed, and where
_main_hint: tuple[str, str] = ("", "")
_main_first: tuple[str, ...] = ()  # _transport.main_extension_imports()


class TaskInterrupted(BaseException):
    """Raised inside a task by a time limit or by cancelling its future."""


TaskInterrupted.__module__ = "manygil"  # its public name (manygil/__init__.py)


def _load_user_main() -> types.ModuleType:
    """Import the caller's main script here under another name (as spawn does)."""
    global _user_main, _main_failed
    if _main_failed is not None:
        raise _main_failed[0].with_traceback(_main_failed[1])
    if _user_main is None:
        name, file = _main_hint
        if name:
            import importlib

            try:
                _refuse_early()
                _user_main = importlib.import_module(name)
            except BaseException as exc:
                _main_failed = _failed_main(exc)
                raise
        elif file:
            import runpy

            global _importing_main
            module = _ModuleType("__mg_main__")
            module.__file__ = file
            _importing_main = True
            try:
                _refuse_early()
                module.__dict__.update(runpy.run_path(file, run_name="__mg_main__"))
            except BaseException as exc:
                _main_failed = _failed_main(exc)
                if isinstance(exc, ImportError):
                    exc.__mg_script__ = True  # type: ignore[attr-defined]  # refused by the script's imports
                    exc.add_note(
                        f"manygil: to find a function of your main script here, the worker imported "
                        f"{file} (as multiprocessing's spawn does), and that import failed; move imports "
                        "that only the main interpreter needs under `if __name__ == \"__main__\":`, or "
                        "define the function in a module of its own"
                    )
                raise
            finally:
                _importing_main = False
            sys.modules["__mg_main__"] = module  # so that its classes pickle back by name
            _user_main = module
        else:
            raise AttributeError("the caller's __main__ is interactive")
    return _user_main


_importing_main = False


def _refuse_early() -> None:
    """Import first the modules that the caller's script imports unconditionally at its
    top and that load extension modules (``_main_first``), and raise the refusal of one
    of them: the script would raise it at that statement, after its other imports.  Any
    other failure is left for the script's own import to meet, or not."""
    import importlib

    for name in _main_first:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if refusing_module(exc) is not None:
                raise
            return
        except Exception:  # noqa: BLE001 - the script's own import decides
            return


def _failed_main(exc: BaseException) -> tuple[BaseException, Any] | None:
    """Keep a failed import of the caller's script to raise it again, as it was, to the
    next task that needs the script, rather than run the script again; not when a time
    limit or cancel interrupted it."""
    if isinstance(exc, TaskInterrupted):
        return None
    return exc, exc.__traceback__


def preload_main() -> bytes:
    """Import the caller's script now, while no task waits (as spawn imports it in each
    child), so that the first call of one of its functions does not pay for it; the name
    of the module that refused it, if one did.  Any other failure is raised again to the
    first task that needs the script."""
    try:
        _load_user_main()
    except BaseException as exc:  # noqa: BLE001 - kept for the task that needs the script
        return refusal(exc).encode()
    return b""


NO_MAIN_GUARD = (
    "manygil: a pool or an interpreter was started while a worker interpreter imported "
    "your main script to find a function in it (as multiprocessing's spawn does). The "
    "script has no `if __name__ == \"__main__\":` guard: put the code that starts the pool "
    "(and everything that should run once) under it:\n\n"
    "    if __name__ == \"__main__\":\n"
    "        with InterpreterPoolExecutor() as pool:\n"
    "            ..."
)


def check_not_importing_main() -> None:
    """Refuse to start a pool or an interpreter from the import of the caller's script,
    in a worker interpreter or in a process worker that multiprocessing is preparing."""
    if _importing_main:
        raise RuntimeError(NO_MAIN_GUARD)
    mp = sys.modules.get("multiprocessing.process")
    if mp is not None and getattr(mp.current_process(), "_inheriting", False):
        raise RuntimeError(NO_MAIN_GUARD.replace("a worker interpreter", "a process worker"))


def _main_getattr(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(_load_user_main(), name)
    except AttributeError:
        raise AttributeError(f"module '__main__' has no attribute {name!r}") from None


def bootstrap(
    path: str, main_name: str, main_file: str, forward: int = 1, log_level: int = -1, main_first: str = ""
) -> None:
    """Make this interpreter see the caller's import path and its ``__main__`` (and the
    modules to import before it, see ``_load_user_main``), and (``forward``) send what it
    prints to the caller's ``sys.stdout``/``sys.stderr`` and, with ``log_level`` >= 0,
    its logging records to the caller's handlers."""
    global _main_hint, _main_first
    sys.path[:] = path.split("\0")
    _main_hint = (main_name, main_file)
    _main_first = tuple(main_first.split("\0")) if main_first else ()
    if sys.version_info < (3, 13):
        # CPython 3.12: the thread that first imported threading here counts as this
        # interpreter's main thread, and closing the interpreter waits for it to end:
        # forever when it is another OS thread than the closing one (a bug 3.13 fixed).
        import threading

        shutdown_locks = threading._shutdown_locks  # type: ignore[attr-defined]
        shutdown_locks.discard(threading._main_thread._tstate_lock)  # type: ignore[attr-defined]
    main = sys.modules["__main__"]
    main.__getattr__ = _main_getattr  # type: ignore[method-assign]
    if forward:
        sys.stdout = _Forward(OUT_STDOUT, sys.stdout)
        sys.stderr = _Forward(OUT_STDERR, sys.stderr)
        if log_level >= 0:
            _forward_logging(log_level)


class _Forward:
    """A text stream that sends what is written to the caller's stream.

    Text is sent home (``call_home``, on this same thread, in order) when the task ends,
    on ``flush()``, at a newline at most every 0.2 s, or past 64 KiB.  A thread with no
    home (one the task started itself) writes to the interpreter's own stream.
    """

    encoding = "utf-8"
    errors = "surrogatepass"

    def __init__(self, kind: int, fallback: Any) -> None:
        self.kind = kind
        self.fallback = fallback
        self.parts: list[str] = []
        self.size = 0
        self.last = 0.0

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.parts.append(text)
        self.size += len(text)
        if self.size > 65536 or ("\n" in text and time.monotonic() - self.last > 0.2):
            self.flush()
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.parts:
            return
        text = "".join(self.parts)
        self.parts.clear()
        self.size = 0
        self.last = time.monotonic()
        send_output(self.kind, text.encode("utf-8", "surrogatepass"), self.fallback, text)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return int(self.fallback.fileno())

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def send_output(kind: int, payload: bytes, fallback: Any = None, text: str = "") -> None:
    try:
        _native.call_home(_EVENT + bytes((OUTPUT, kind)) + payload)
    except RuntimeError:  # a thread with no home: write here
        if fallback is not None:
            fallback.write(text)
            fallback.flush()


def flush_output() -> None:
    """Send what the current task wrote (called at the end of every task)."""
    out, err = sys.stdout, sys.stderr
    if isinstance(out, _Forward):
        out.flush()
    if isinstance(err, _Forward):
        err.flush()


def _forward_logging(level: int) -> None:
    import logging

    class _Home(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                data = dict(record.__dict__)
                data["msg"] = record.getMessage()
                data["args"] = None
                if record.exc_info:
                    data["exc_text"] = data.get("exc_text") or logging.Formatter().formatException(record.exc_info)
                data["exc_info"] = None
                data["interpreter"] = _interp_id()
                send_output(OUT_LOG, pickle.dumps({k: v for k, v in data.items() if _plain(v)}))
            except Exception:  # noqa: BLE001 - logging must never break the task
                self.handleError(record)

    root = logging.getLogger()
    root.addHandler(_Home())
    root.setLevel(level)


def _plain(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, tuple))


def _interp_id() -> int:
    from . import _backend

    return _backend.get_current()[0]


def _excinfo(exc: BaseException, skip: int) -> ExcInfo:
    from ._excinfo import ExcInfo

    return ExcInfo.from_exception(exc, skip=skip)


def exec_source(source: str | bytes, reply: int) -> None:
    """Run source (or marshalled code) in ``__main__``; report an uncaught exception."""
    main = sys.modules["__main__"]
    try:
        if isinstance(source, bytes):
            import marshal

            code = marshal.loads(source)
        else:
            code = compile(source, "<string>", "exec")
        exec(code, main.__dict__)
    except BaseException as exc:  # noqa: BLE001 - any failure goes to the caller
        flush_output()
        _native.chan_put(reply, pickle.dumps(_excinfo(exc, 1)), TAG_PICKLE, None)
    else:
        flush_output()


def loads(tag: int, data: bytes) -> Any:
    """``_transport.loads``, imported only when the interpreters API needs it."""
    from ._transport import loads as transport_loads

    return transport_loads(tag, data)




def _call_in_main(fn: Any, args: Any, kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` from a frame whose globals and locals are ``__main__``'s
    namespace, as 3.14's ``Interpreter.call`` does: ``call(eval, "x")``, ``call(globals)``
    and ``call(dir)`` see ``__main__`` and nothing of manygil's.  The names this needs are
    popped from the namespace while the call's arguments are evaluated, before it runs."""
    global _in_main
    if _in_main is None:
        # Compiled at the first call, not at import: an interpreter's first compile()
        # is not cheap, and every pool worker would pay for it at its start.
        _in_main = compile(
            '__mg_pop__("__mg_f__")(*__mg_pop__("__mg_a__"), **__mg_pop__("__mg_pop__")("__mg_k__"))',
            "<interpreter call>",
            "eval",
        )
    ns = sys.modules["__main__"].__dict__
    ns.update(__mg_pop__=ns.pop, __mg_f__=fn, __mg_a__=args, __mg_k__=kwargs)
    try:
        return eval(_in_main, ns)
    finally:
        for name in ("__mg_pop__", "__mg_f__", "__mg_a__", "__mg_k__"):
            ns.pop(name, None)


_in_main: Any = None  # a code object


def call_once(inbox: int, reply: int) -> None:
    """Run one pickled call from ``inbox``; reply ``(True, tag, data)``, ``(False, ExcInfo)``
    when it raised, or ``(None, ExcInfo)`` when its result cannot be sent back."""
    from ._handles import release_pins
    from ._transport import dumps

    item = _native.chan_get(inbox, 0)
    assert item is not None
    try:
        try:
            fn, args, kwargs = loads(item[0], item[1])
        finally:
            release_pins(item[2])
        try:
            result = _call_in_main(fn, args, kwargs)
        finally:
            flush_output()
    except BaseException as exc:  # noqa: BLE001 - the task's failure
        info = _excinfo(exc, 3)  # call_once, _call_in_main and the <interpreter call> frame
        _native.chan_put(reply, pickle.dumps((False, info)), TAG_PICKLE, None)
        return
    try:
        tag, data, pins = dumps(out_of_band_value(result))
    except BaseException as exc:  # noqa: BLE001 - a result that cannot be sent back: the caller is told why
        info = _excinfo(exc, 0)
        _native.chan_put(reply, pickle.dumps((None, info)), TAG_PICKLE, None)
        return
    _native.chan_put(reply, pickle.dumps((True, tag, data)), TAG_PICKLE, None, pins)


# ---------------------------------------------------------------------- the pool loop


_REFUSED = "does not support loading in subinterpreters"


def pack(status: int, data: bytes, pins: tuple[int, ...]) -> bytes:
    """A status byte and its payload, with the payload's pins when it has any."""
    if not pins:
        return bytes((status,)) + data
    ids = b"".join(i.to_bytes(8, "little") for i in pins)
    return bytes((status | PINNED,)) + len(pins).to_bytes(2, "little") + ids + data


def unpack(record: bytes | memoryview, at: int = 0) -> tuple[int, bytes | memoryview, tuple[int, ...]]:
    """``(status, payload, pins)`` of a record made by :func:`pack` from offset ``at``."""
    status = record[at]
    if not status & PINNED:
        return status & ~LENT, record[at + 1 :], ()
    n = int.from_bytes(record[at + 1 : at + 3], "little")
    start = at + 3
    pins = tuple(int.from_bytes(record[start + 8 * k : start + 8 * k + 8], "little") for k in range(n))
    return status & ~(PINNED | LENT), record[start + 8 * n :], pins


def refusing_module(exc: BaseException) -> str | None:
    """The extension module that refused to load in this interpreter, if ``exc`` is (or
    was caused by) CPython's refusal: numpy, for one, wraps it in its own ImportError."""
    import re

    for cur in _chain(exc):
        if isinstance(cur, ImportError) and _REFUSED in str(cur):
            found = re.search(r"module (\S+) " + _REFUSED, str(cur))
            return found.group(1) if found else (cur.name or "an extension module")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from (or while handling), 10 at most."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            return
        yield cur
        cur = cur.__cause__ or cur.__context__


def refusal(exc: BaseException) -> str:
    """What a REFUSED record and a PRELOADED event say of a refusal: the module that
    refused, then after a "|" the modules whose import it failed here, space-separated
    (the module-level frames in its traceback and in those of the errors it was raised
    from: for ``import numpy`` in a script, numpy, numpy._core, ...).  Each of them
    fails the same way in every interpreter with its own GIL of this process, so the
    pool sends a task that needs one of them straight to its fallback side (see
    ``_refusals.learn_refusal``).  "" if ``exc`` is not a refusal."""
    name = refusing_module(exc)
    if name is None:
        return ""
    chain: list[str] = []
    for cur in _chain(exc):
        tb = cur.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            module = frame.f_globals.get("__name__")
            if (
                frame.f_code.co_name == "<module>"
                and isinstance(module, str)
                and not module.startswith("__")  # the caller's script
                and module not in chain
            ):
                chain.append(module)
            tb = tb.tb_next
    return name.replace("|", "?") + "|" + " ".join(chain[:50])


def _pack_error(exc: BaseException, loading: bool = False, explain: int = 1) -> bytes:
    """A RAISED record; REFUSED when loading the task (before any of it ran) needed a
    module that refuses this interpreter, so the pool may run it elsewhere.  Without
    ``explain`` (the pool runs such a task elsewhere), a REFUSED record's traceback is
    left out: formatting it costs the worker an import of traceback and a read of the
    sources, for a traceback nobody sees."""
    status = RAISED
    name = refusing_module(exc)
    module = b""
    brief = False
    if name is not None:
        top = name.split(".")[0]
        if loading:
            status = REFUSED
            brief = not explain
            # "script:" when importing the caller's main script failed, not the task's own needs.
            module = (("script:" if getattr(exc, "__mg_script__", False) else "") + refusal(exc)).encode()
        else:
            explanation = (
                f"manygil: the extension module {name} refuses to load in an interpreter with "
                f"its own GIL, and this task imported it while running, so it was not run again "
                f"elsewhere; send this function to a process worker with "
                f"pool.route(fn, \"process\") (or import {top} at the top of its module), run "
                f"such tasks under the main GIL with InterpreterPoolExecutor(shared_gil=True), "
                f"or see `python -m manygil check {top}`"
            )
            if type(exc) is ImportError and isinstance(exc.msg, str):
                # First, before the module's own text (numpy's is 25 lines of advice on
                # a broken install, which does not apply).
                exc.msg = f"{explanation}\n\nThe import's own message:\n{exc.msg}"
                exc.args = (exc.msg,)
            else:
                exc.add_note(explanation)
    from ._excinfo import ExcInfo

    info = pickle.dumps(ExcInfo.brief(exc) if brief else _excinfo(exc, 1), protocol=5)
    exc.__traceback__ = None
    try:
        data, pins = collect(_dump_error, exc)
    except Exception:  # noqa: BLE001 - an exception that does not pickle goes as its ExcInfo
        data, pins = pickle.dumps(None), ()  # rebuilt from its ExcInfo as a RemoteError
        if status == RAISED:
            return bytes((RAISED_INFO,)) + info
    payload = len(info).to_bytes(4, "little") + info + data
    if status == REFUSED:
        payload = len(module).to_bytes(2, "little") + module + payload
    return pack(status, payload, pins)


def _result_error(fn: Any, result: object, exc: BaseException) -> BaseException:
    """The error for a result that cannot be sent back: it names the function and what
    to return instead, with no traceback into manygil."""
    if not isinstance(exc, Exception):
        return exc  # KeyboardInterrupt, TaskInterrupted...
    from ._exceptions import NotShareableError
    from ._transport import _unsendable_kind, describe

    import types

    if isinstance(result, types.GeneratorType):
        hint = "return a list of its items instead (list(...))"
    else:
        hint = _unsendable_kind(result) or "return a picklable value: built-in types, or objects of module-level classes"
        hint = hint.replace("send ", "return ", 1)
    return NotShareableError(
        f"the result of {getattr(fn, '__qualname__', None) or describe(fn)}(), a "
        f"{describe(result)}, cannot come back from its interpreter "
        f"({type(exc).__name__}: {exc}); {hint}"
    )


class _ErrorPickler(pickle.Pickler):
    """Pickles exceptions as ``_excinfo.rebuild_exception(cls, args, state)`` (those
    whose class keeps ``BaseException``'s reduce), so that one whose ``__init__`` takes
    other arguments than its ``args`` is still rebuilt as itself, not as a RemoteError."""

    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, BaseException) and type(obj).__reduce_ex__ is BaseException.__reduce_ex__ and (
            type(obj).__reduce__ is BaseException.__reduce__
        ):
            from ._excinfo import rebuild_exception

            return rebuild_exception, (type(obj), obj.args, obj.__dict__ or None)
        return NotImplemented


def _dump_error(exc: BaseException) -> bytes:
    """A task's exception for the caller (see ``_ErrorPickler``), else as ``_dump5``."""
    import io

    buf = io.BytesIO()
    try:
        _ErrorPickler(buf, protocol=5).dump(exc)
    except Exception:  # noqa: BLE001 - its class is not importable there, say: by value
        return _dump5(exc)
    return buf.getvalue()


def _dump5(obj: object) -> bytes:
    """A result or an exception for the caller: a tree of built-ins copied (``_copy``);
    what pickle cannot send by reference (a class a notebook defined, sent here by
    value) goes by value with cloudpickle."""
    copied = _copy.dumps(obj)
    if copied is not None:
        return copied
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception as exc:  # noqa: BLE001 - pickle runs the object's code: anything
        from ._transport import _pickle_fallback

        return _pickle_fallback(obj, exc)


def run_chunk(fn: Any, chunk: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` over a chunk of argument tuples (``map`` with ``chunksize > 1``)."""
    return [fn(*args) for args in chunk]


class _Current:
    __slots__ = ("early", "last", "lock", "tid")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.tid = 0          # the task running now (0: none)
        self.last = 0         # the last task that started
        self.early: set[int] = set()  # interrupts that came before their task started


_thread_names: dict[int, str] = {}  # the pool's task thread, which threading may not know
DUMP = (1 << 63) - 1  # control message: [DUMP][8-byte reply channel] -> stack text


def format_stacks() -> str:
    """The Python stack of every thread of this interpreter but the caller."""
    import traceback

    me = _thread.get_ident()
    threading = sys.modules.get("threading")  # not imported: no thread but the pool's has a name
    names = {t.ident: t.name for t in threading.enumerate()} if threading is not None else {}
    names.update(_thread_names)
    out = []
    for ident, frame in _native.current_frames().items():
        if ident == me:
            continue
        out.append(f"  thread {ident} ({names.get(ident, 'not started by threading')}), most recent call last:\n")
        out.extend("    " + line for line in "".join(traceback.format_stack(frame)).splitlines(True))
    return "".join(out) or "  (no other thread)\n"


def agent(control: int, current: _Current | None, worker_thread: int) -> None:
    """A helper thread inside an interpreter: interrupts tasks, reports stacks."""
    while True:
        item = _native.chan_get(control, None)
        assert item is not None
        data = item[1]
        tid = int.from_bytes(data[:8], "little")
        if tid == 0:
            return
        if tid == DUMP:
            reply = int.from_bytes(data[8:16], "little")
            try:
                text = format_stacks()
            except BaseException as exc:  # noqa: BLE001 - report, never die
                text = f"  (could not format the stacks: {exc!r})\n"
            try:
                _native.chan_put(reply, text.encode(), 2, None)
            except LookupError:
                pass  # the asker gave up and released the channel
            continue
        if current is None:
            continue
        with current.lock:
            if current.tid == tid:
                _native.set_async_exc(worker_thread, TaskInterrupted)
            elif tid > current.last:
                current.early.add(tid)  # dispatched, but not started yet


def _start_thread(target: Any, args: tuple[Any, ...], name: str) -> Any:
    """Start a thread of this interpreter; its ``join``.  On 3.13+ through ``_thread``
    (so unnamed, and not in ``threading.enumerate()`` of a task that imports threading):
    importing threading would lengthen every worker's start.  On 3.12
    ``bootstrap`` imports threading anyway."""
    if sys.version_info >= (3, 13):
        # daemon=False: an interpreter with its own GIL allows no daemon thread.
        return _thread.start_joinable_thread(lambda: target(*args), daemon=False).join
    import threading

    thread = threading.Thread(target=target, args=args, name=name)
    thread.start()
    return thread.join


_agent_thread: Any = None  # a threading.Thread


def start_agent(control: int) -> None:
    """Start the helper thread of an interpreter made by ``interpreters.create()``."""
    import threading

    global _agent_thread
    _agent_thread = threading.Thread(target=agent, args=(control, None, 0), name="manygil-agent")
    _agent_thread.start()
    # Closed by another interpreter (a sibling, or a thread the creator does not know
    # about): finalization waits for non-daemon threads, so the agent stops itself first.
    threading._register_atexit(stop_agent, control)  # type: ignore[attr-defined]


def stop_agent(control: int) -> None:
    """Stop and join it (an interpreter cannot be closed while it has threads)."""
    global _agent_thread
    if _agent_thread is not None:
        _native.chan_put(control, bytes(8), 0, None)
        _agent_thread.join()
        _agent_thread = None


def idle_spin(batch_time: float, gap: float) -> float:
    """How long a worker polls its inbox for the next batch before it sleeps, in
    seconds, after a batch that took ``batch_time`` and came ``gap`` after the one
    before it.  Tasks that come one at a time (a caller's round trips) leave the
    worker idle while the caller reads a result and sends the next: polling through
    about that gap spares a wake-up each time.  Bounded by ``_IDLE_SPIN_MAX`` and by the
    process's spin budget (``_native.spin_state``): a pool left idle stops polling
    within a millisecond."""
    if batch_time >= _SHORT_BATCH:
        return 0.0
    if gap < _IDLE_SPIN_MAX:
        return min(_IDLE_SPIN_MAX, max(_IDLE_SPIN, 1.5 * gap))
    return _IDLE_SPIN


def serve(inbox: int, results: int, control: int, started: int, index: int, init: bytes, explain: int = 1) -> None:
    """The worker loop: run batches of tasks until told to stop.

    A batch is one or more task records.  Each task's result record goes into the
    ``results`` channel as soon as it is known; after the batch, ``call_home`` tells the
    pool (in the main interpreter, on this same thread) to collect them, and answers
    with the next batch, or ``None``: wait on ``inbox``.  ``started`` (a sync value)
    holds the id of the task running now, or minus the last one once it finished, so
    the pool can tell a task stuck in C from one that has finished or not started yet.
    """
    get = _native.chan_get
    put = _native.chan_put
    home = _native.call_home
    clear = _native.set_async_exc
    mark = _native.sync_set
    monotonic = time.monotonic  # loaded with the interpreter: no import cost
    me = _thread.get_ident()
    _thread_names[me] = "runs the tasks"
    current = _Current()
    task: memoryview | None
    forwarding = isinstance(sys.stdout, _Forward) or isinstance(sys.stderr, _Forward)
    join_control = _start_thread(agent, (control, current, me), f"manygil-control-{index}")

    def finished() -> None:
        # Called with current.lock held: no interrupt can be requested after this,
        # and one already requested but not yet raised is dropped.
        current.tid = 0
        mark(started, -current.last)  # finished: not running, but started
        clear(me, None)

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        # An interrupt that lands in a weakref callback or a __del__ cannot leave it:
        # Python prints it as "Exception ignored" and the task runs on.  The control
        # thread raises it again once this thread is back in the task (raised here, it
        # would land in this hook, which cannot raise either).
        if info.exc_type is TaskInterrupted:
            with current.lock:
                tid = current.tid
            if tid:
                put(control, tid.to_bytes(8, "little"), 0, None)
            return
        previous_hook(info)

    sys.unraisablehook = unraisable

    try:
        if init:
            try:
                fn, args = _copy.loads(init)
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported, never raised here
                home(_EVENT + bytes((INIT_FAILED,)) + _pack_error(exc))
                return
        batch = home(_EVENT + bytes((READY,)))
        if batch == PRELOAD:
            batch = home(_EVENT + bytes((PRELOADED,)) + preload_main())
        spin = gap = 0.0
        done: object = None  # the batch's last result, until it is home
        while True:
            waited = monotonic()
            if batch is None and lent:
                # The last result's object is let go of as the next task loads (see
                # _handles.lent), or once idle for a while.
                got = get(inbox, _LENT_KEPT, spin)
                if got is None:
                    lent.clear()
                    got = get(inbox, None)  # polled already
                batch = got[1]  # type: ignore[index]
            elif batch is None:
                batch = get(inbox, None, spin)[1]  # type: ignore[index]
            began = monotonic()
            gap = began - waited
            view = memoryview(batch)
            pos = 0
            end = len(batch)
            while pos < end:
                head = batch[pos : pos + 8]
                tid = int.from_bytes(head, "little")
                size = int.from_bytes(batch[pos + 8 : pos + 12], "little")
                task = view[pos + 12 : pos + 12 + size]
                pos += 12 + size
                if tid == 0:
                    return
                loading = False
                try:
                    try:
                        with current.lock:
                            current.tid = current.last = tid
                            mark(started, tid)
                            if current.early:
                                early = tid in current.early
                                current.early = {t for t in current.early if t > tid}
                                if early:
                                    raise TaskInterrupted
                        loading = True
                        fn, args, kwargs = _copy.loads(task)
                        lent.clear()  # if no large argument did (the pool has loaded it)
                        loading = False
                        task = None
                        result = fn(*args, **kwargs)
                        args = kwargs = None  # freed within the task's time (its limit covers them)
                        with current.lock:
                            finished()
                        try:
                            # The batch's last result goes home on this thread: a large
                            # bytes is lent (kept in ``lent``) and copied once, by the
                            # pool now or by the caller's result() (see _pool._Lent).
                            value = out_of_band_value(result, lent if pos >= end else None)
                            encoded, pins = collect(_dump5, value)
                            value = None
                            out = head + pack(OK | LENT if lent else OK, encoded, pins)
                        except BaseException as exc:  # noqa: BLE001 - unsendable: fails the task
                            out = head + _pack_error(_result_error(fn, result, exc))
                        # The batch's last result is freed once it is home (below): off
                        # the path of the caller, which waits for it.
                        done = result if pos >= end else None
                        fn = result = None
                        encoded = b""
                    except TaskInterrupted:
                        with current.lock:
                            finished()
                        out = head + bytes((INTERRUPTED,))
                    except BaseException as exc:  # noqa: BLE001 - the task's failure
                        fn = args = kwargs = task = None
                        with current.lock:
                            finished()
                        out = head + _pack_error(exc, loading, explain)
                except TaskInterrupted:
                    # Raised between the task's end and the lock: report it as interrupted.
                    with current.lock:
                        finished()
                    out = head + bytes((INTERRUPTED,))
                if forwarding:
                    flush_output()
                if pos < end:
                    put(results, out, 0, None)
            view.release()
            # The last record goes straight home; earlier ones of a batch wait in
            # the results channel, where the pool finds them even if this worker is
            # abandoned later in the batch.
            batch = home(out)
            if done is not None:
                done = None  # the last result, freed now that it is home
                if forwarding:
                    flush_output()  # what a __del__ of it wrote
            spin = idle_spin(monotonic() - began, gap)
    finally:
        lent.clear()
        _native.chan_put(control, (0).to_bytes(8, "little"), 0, None)
        join_control()
