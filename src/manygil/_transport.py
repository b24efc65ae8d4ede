"""How a value crosses from one interpreter to another.

Every value travels as ``(tag, bytes)`` through a native channel:

    bytes  ──────────────► TAG_BYTES   as is (one copy into the channel)
    str    ──────────────► TAG_STR     UTF-8
    built-in containers ─► TAG_PICKLE  the native copier (``_copy``): the tree's
                                       built-ins as records, its other objects pickled
    anything else ───────► TAG_PICKLE  pickle protocol 5; functions and classes by
                                       reference (module + qualified name)

(A TAG_PICKLE value's first byte tells a copy from a pickle: ``_copy.loads``.)

Objects defined in the caller's ``__main__`` are found again in the other interpreter
the way ``multiprocessing``'s spawn finds them: the main script (or ``-m`` module) is
imported there under another name, so its ``if __name__ == "__main__":`` block does
not run.  Lambdas, closures and functions of an interactive session cross by value
when cloudpickle is installed; plain functions of an interactive session cross as
their code object when it is not.
"""

from __future__ import annotations

import marshal
import pickle
import sys
import types
from typing import Any

from . import _backend, _copy, _native
from ._exceptions import NotShareableError
from ._handles import collect

if sys.version_info < (3, 13) and _backend.get_current()[0] == _backend.get_main()[0]:
    # CPython 3.12: the first call with keyword arguments of a C function whose arguments
    # Argument Clinic parses sets up a parser shared by every interpreter, in the
    # interpreter that calls; made in an own-GIL interpreter that is closed later, the
    # process aborts at exit (free(): invalid pointer).  Interpreters call these with
    # protocol=5 (a Queue.put() in exec() code, for one): the main interpreter first.
    # hashlib's import makes such calls too (usedforsecurity=False, for every OpenSSL
    # constructor), which made a process whose task or script imported hashlib (through
    # secrets, uuid, urllib.request, requests...) abort at exit.
    import hashlib  # noqa: F401
    import io as _io

    pickle.dumps(None, protocol=5)
    pickle.Pickler(_io.BytesIO(), protocol=5)

TAG_PICKLE = 0
TAG_BYTES = 1
TAG_STR = 2

__all__ = (
    "TAG_BYTES",
    "TAG_PICKLE",
    "TAG_STR",
    "describe",
    "dumps",
    "dumps_by_value",
    "has_cloudpickle",
    "loads",
    "main_extension_imports",
    "main_hint",
    "pickles_by_value",
    "route_key",
    "task_label",
)

# cloudpickle (optional: by-value pickling of lambdas, closures, interactive functions)
# is imported when a value first needs it, not with this module: a worker that imports
# the caller's script (which imports manygil) would pay for that import.  None: not installed.
_UNKNOWN: Any = object()
_cloudpickle: Any = _UNKNOWN


def _cp() -> Any:
    """The cloudpickle module, or None when it is not installed."""
    global _cloudpickle
    if _cloudpickle is _UNKNOWN:
        try:
            import cloudpickle
        except ImportError:  # pragma: no cover - depends on the environment
            cloudpickle = None
        _cloudpickle = cloudpickle
    return _cloudpickle


def has_cloudpickle() -> bool:
    """Whether cloudpickle is installed (without importing it)."""
    global _found
    if _cloudpickle is not _UNKNOWN:
        return _cloudpickle is not None
    if _found is None:
        import importlib.util

        _found = importlib.util.find_spec("cloudpickle") is not None
    return _found


_found: bool | None = None


def _slim_names(cp: Any) -> dict[int, str]:
    """id -> name of cloudpickle's functions that ``_byvalue`` copies, which manygil's
    pickles name instead (so that loading them does not import cloudpickle)."""
    if not str(getattr(cp, "__version__", "")).startswith("3."):
        return {}  # another major version: its pickles may call them differently
    from . import _byvalue

    inner = cp.cloudpickle
    return {id(getattr(inner, name)): name for name in _byvalue.NAMES if hasattr(inner, name)}


def _pickler_class(checked: bool) -> Any:
    """cloudpickle's Pickler, naming ``_byvalue``'s copies of its functions; ``checked``:
    an object that must not cross even by value raises ``_Unsendable``."""
    cp = _cp()
    key = (checked, id(cp))
    cls = _PICKLERS.get(key)
    if cls is not None:
        return cls
    from ._byvalue import lookup

    slim = _slim_names(cp)
    inner = cp.cloudpickle

    class Pickler(cp.Pickler):  # type: ignore[misc,name-defined]
        def reducer_override(self, obj: Any) -> Any:
            name = slim.get(id(obj))
            if name is not None and getattr(inner, name) is obj:
                return lookup, (name,)
            if checked and _unsendable_kind(obj) is not None:
                raise _Unsendable(obj)
            return super().reducer_override(obj)

    _PICKLERS[key] = Pickler
    return Pickler


_PICKLERS: dict[tuple[bool, int], Any] = {}


def _dump_by_value(obj: object, checked: bool) -> bytes:
    import io

    buf = io.BytesIO()
    _pickler_class(checked)(buf, protocol=5).dump(obj)
    return buf.getvalue()


def dumps_by_value(obj: object) -> bytes:
    """``obj`` pickled by cloudpickle: what ``__main__`` defines goes by value, the rest
    by reference (callers check ``has_cloudpickle()`` first)."""
    return _dump_by_value(obj, checked=False)


def pickles_by_value(obj: object) -> bool:
    """Whether ``obj`` alone pickles by value (``dumps_by_value``): tells a function that
    does not from a call of it whose arguments do not."""
    try:
        dumps_by_value(obj)
    except Exception:  # noqa: BLE001 - the answer
        return False
    return True


def route_key(fn: object) -> str:
    """The name a function is routed by: ``module.qualname``."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def task_label(fn: object) -> str:
    """How a task is named in its errors: its function's qualified name."""
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def describe(obj: object) -> str:
    """A short name for an object in an error message."""
    name = getattr(obj, "__qualname__", None)
    if isinstance(name, str) and callable(obj):
        return f"{name} ({type(obj).__name__})"
    return f"{type(obj).__qualname__} object"


# The last __main__ seen with a file or a spec name, and that hint: CPython 3.12 and 3.13
# delete ``__file__`` from ``__main__`` once the script has run, before the program's end
# runs the tasks still waiting (a worker started then must still import the script).
_seen_main: tuple[object, tuple[str, str]] | None = None


def main_hint() -> tuple[str, str]:
    """Where the caller's ``__main__`` came from: ``(spec name, file)``, each may be "".

    A script piped to ``python -`` (``<stdin>``) has no file to import again: it counts
    as interactive, like ``python -c``, and its functions cross by value."""
    global _seen_main
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", "") or ""
    file = getattr(main, "__file__", "") or ""
    if name == "__main__":
        name = ""
    if file.startswith("<") and file.endswith(">"):  # <stdin>, <string>: no file
        file = ""
    if name or file:
        _seen_main = (main, (name, file))
    elif _seen_main is not None and _seen_main[0] is main:
        return _seen_main[1]
    return name, file


_extension_imports: dict[str, str] = {}


def main_extension_imports() -> str:
    """The modules that the caller's script imports unconditionally at its top level and
    that load extension modules in this interpreter, NUL-separated.  A worker imports
    them before the script (see ``_worker._load_user_main``): should one refuse the
    worker's interpreter, the script would fail at that same statement, and the worker
    knows it without importing the rest of the script first (for a script importing
    argparse, multiprocessing, concurrent.futures, then numpy, most of what the whole
    script costs)."""
    file = main_hint()[1]
    if not file.endswith(".py"):
        return ""
    if file not in _extension_imports:
        _extension_imports[file] = "\0".join(_top_level_extension_imports(file))
    return _extension_imports[file]


def _top_level_extension_imports(file: str) -> list[str]:
    import ast
    from importlib.machinery import EXTENSION_SUFFIXES

    try:
        with open(file, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in tree.body:  # not inside an if, a try or a function: always imported
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    loaded: dict[str, bool] = {}  # top-level package: an extension module of it is loaded here
    suffixes = tuple(EXTENSION_SUFFIXES)
    for name, module in list(sys.modules.items()):
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        top = name.partition(".")[0]
        loaded[top] = loaded.get(top, False) or (isinstance(origin, str) and origin.endswith(suffixes))
    return [name for name in dict.fromkeys(names) if loaded.get(name.partition(".")[0])]


_bound_outside_guard: dict[str, frozenset[str] | None] = {}


def under_main_guard(fn: object) -> bool:
    """Whether ``fn``, a function or class of the caller's script, is defined only under
    its ``if __name__ == "__main__":`` block: a worker that imports the script (as spawn
    does) never runs that block, so it must cross by value."""
    if getattr(fn, "__module__", None) != "__main__":
        return False
    file = main_hint()[1]
    if not file.endswith(".py"):
        return False  # interactive: by value anyway
    if file not in _bound_outside_guard:
        _bound_outside_guard[file] = _names_bound_outside_guard(file)
    names = _bound_outside_guard[file]
    top = str(getattr(fn, "__qualname__", "")).partition(".")[0]
    return names is not None and bool(top) and top not in names


def _is_main_guard(test: object) -> bool:
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides) and any(
        isinstance(n, ast.Constant) and n.value == "__main__" for n in sides
    )


def _names_bound_outside_guard(file: str) -> frozenset[str] | None:
    """The names the script binds at its top level outside its main guard (in any other
    ``if``, ``try``, ``with`` or loop too), or None when that cannot be known (it could
    not be read, or it has a ``from ... import *``)."""
    import ast

    try:
        with open(file, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.partition(".")[0])
            continue
        # Assignments (and walrus) of a simple statement; the targets of a loop or a with.
        if isinstance(node, (ast.For, ast.AsyncFor)):
            bound: list[ast.AST] = [node.target]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            bound = [item.optional_vars for item in node.items if item.optional_vars is not None]
        else:
            bound = [] if hasattr(node, "body") else [node]
        for part in bound:
            for child in ast.walk(part):
                if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                    names.add(child.id)
        for field in ("body", "orelse", "finalbody", "handlers"):
            for child in getattr(node, field, ()):
                if isinstance(child, ast.ExceptHandler):
                    todo.extend(child.body)
                elif isinstance(child, ast.stmt):
                    todo.append(child)
    return frozenset(names)


def _interactive_main() -> bool:
    return main_hint() == ("", "")


def _rebuild_function(
    code: bytes, name: str, qualname: str, defaults: Any, kwdefaults: Any
) -> types.FunctionType:
    main = sys.modules["__main__"]
    fn = types.FunctionType(marshal.loads(code), vars(main), name, defaults)
    fn.__qualname__ = qualname
    fn.__kwdefaults__ = kwdefaults
    return fn


class _CodePickler(pickle.Pickler):
    """Pickles plain functions of an interactive ``__main__`` as their code object."""

    def reducer_override(self, obj: Any) -> Any:
        if (
            isinstance(obj, types.FunctionType)
            and obj.__module__ == "__main__"
            and obj.__closure__ is None
        ):
            return _rebuild_function, (
                marshal.dumps(obj.__code__),
                obj.__name__,
                obj.__qualname__,
                obj.__defaults__,
                obj.__kwdefaults__,
            )
        return NotImplemented


class _Unsendable(Exception):
    """An object that must not cross, found while pickling (see ``_unsendable_kind``)."""

    def __init__(self, obj: object) -> None:
        super().__init__(describe(obj))
        self.obj = obj


def _classes(module: str, *names: str) -> tuple[type, ...]:
    """The classes ``names`` of ``module`` if it is imported, without importing it: a
    module another thread is importing may not have them yet (it is in ``sys.modules``
    before its body ran), and then they are left out; () when it is not imported."""
    loaded = sys.modules.get(module)
    return tuple(cls for name in names if isinstance(cls := getattr(loaded, name, None), type))


def _unsendable_kind(obj: object) -> str | None:
    """What to send instead of an object that must never cross, even by value: an
    open file, a socket, a lock of ``threading`` (cloudpickle would send a copy that
    is no longer the same file, connection or lock)."""
    import io

    if isinstance(obj, io.IOBase):
        return "send its path (or its contents) and open it in the task"
    if isinstance(obj, _classes("socket", "socket")):
        return "send the address (or the data) and connect in the task"
    if isinstance(
        obj, _classes("queue", "Queue", "SimpleQueue") + _classes("multiprocessing.queues", "Queue", "SimpleQueue")
    ):
        return (
            "use manygil.interpreters.Queue (manygil.interpreters.create_queue()) instead, "
            "which is the same queue in every interpreter"
        )
    threading = sys.modules.get("threading")
    if threading is not None and isinstance(
        obj,
        (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event, threading.Semaphore),
    ):
        kinds = {
            type(threading.Lock()): "Lock",
            type(threading.RLock()): "RLock",
            threading.Condition: "Condition",
            threading.Event: "Event",
            threading.Semaphore: "Semaphore",
        }
        name = next(n for t, n in kinds.items() if isinstance(obj, t))
        return (
            f"use manygil.sync.{name} instead (manygil.sync has Lock, RLock, Condition, Event, "
            "Semaphore and Barrier), which works across interpreters"
        )
    if isinstance(obj, types.GeneratorType):
        return "send a list of its items, or the arguments that make it and iterate in the task"
    if isinstance(obj, _classes("functools", "partial")) and isinstance(
        getattr(obj.func, "__self__", None), _classes("contextvars", "Context")  # type: ignore[attr-defined]
    ):
        # asyncio.to_thread(fn, ...) runs loop.run_in_executor(None, partial(ctx.run, fn, ...)).
        return (
            "asyncio.to_thread() wraps each call in its thread's contextvars.Context, which "
            "cannot cross, and it reached this pool because the pool is the loop's default "
            "executor (loop.set_default_executor(pool)); keep a thread pool as the default "
            "executor for to_thread(), and send interpreter work with `await pool.run(fn, ...)` "
            "or `loop.run_in_executor(pool, fn, ...)`"
        )
    return None


def _pickle_fallback(obj: object, error: Exception) -> bytes:
    if _cp() is not None:
        try:
            return _dump_by_value(obj, checked=True)
        except _Unsendable as exc:
            raise NotShareableError(_not_picklable(exc.obj, error)) from error
        except Exception as exc:  # noqa: BLE001 - pickling runs the object's code: anything
            error = exc
    elif _interactive_main():
        import io

        buf = io.BytesIO()
        try:
            _CodePickler(buf, protocol=5).dump(obj)
            return buf.getvalue()
        except Exception as exc:  # noqa: BLE001 - as above
            error = exc
    raise NotShareableError(_not_picklable(obj, error)) from error


def _culprit(obj: object) -> object:
    """The part of a call payload that failed to pickle, for the message."""
    if isinstance(obj, tuple):
        for part in obj:
            for item in part.values() if isinstance(part, dict) else (part if isinstance(part, tuple) else (part,)):
                try:
                    pickle.dumps(item, protocol=5)
                except Exception:  # noqa: BLE001 - any failure to pickle names the culprit
                    return item
    return obj


def _not_picklable(obj: object, error: Exception) -> str:
    bad = _culprit(obj)
    what = describe(bad)
    fix = _unsendable_kind(bad)
    if fix is not None:
        return f"cannot send {what} to another interpreter: {fix}"
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, RecursionError) or "recursion" in str(error):
        fix = "; it is nested too deeply for pickle: send a flatter structure"
    elif isinstance(bad, (types.FunctionType, types.MethodType, type)) or "local object" in str(error) or (
        "attribute" in str(error) and "__main__" in str(error)
    ):
        # pickle sends these by name, and the name leads nowhere: a lambda, a closure,
        # a class or function defined inside a function or an interactive session
        fix = "; define it at module level"
        if _cp() is None:
            fix += " or install cloudpickle (pip install cloudpickle; manygil depends on it)"
    elif type(bad).__module__.startswith("manygil."):
        fix = ""  # manygil's own objects say what is wrong with them
    else:
        fix = (
            "; send built-in values, or an object whose class is defined at module level and "
            "that pickle can rebuild (see copyreg or __reduce__)"
        )
    return f"cannot send {what} to another interpreter: it is not shareable and pickle failed ({text}){fix}"


_NO_PINS: tuple[int, ...] = ()


def dumps(obj: object) -> tuple[int, bytes, tuple[int, ...]]:
    """Encode a value for another interpreter: ``(tag, data, pins)``.

    ``pins`` are the references that manygil objects inside the value hold for the
    trip (see ``_handles``); the caller owns them and releases them (or hands them to
    a channel item) once the data has been loaded, or will never be.

    Raises:
        NotShareableError: the value cannot be pickled; the message says how to fix it.
    """
    tp = type(obj)
    if tp is bytes:
        return TAG_BYTES, obj, _NO_PINS  # type: ignore[return-value]
    if tp is str:
        return TAG_STR, obj.encode("utf-8", "surrogatepass"), _NO_PINS  # type: ignore[attr-defined]
    (tag, data), pins = collect(_encode, obj)
    return tag, data, pins


def _copy_leaves(leaves: list[Any], shared: set[int] | None) -> bytes | None:
    """``_copy.leaves_pickle``, and None for a leaf of an interactive ``__main__`` (which
    the whole value's pickle sends by value)."""
    data = _copy.leaves_pickle(leaves, shared)
    if data is not None and b"__main__" in data and _interactive_main():
        return None
    return data


def _encode(obj: object) -> tuple[int, bytes]:
    copied = _native.copy_dumps(obj, _copy_leaves)
    if copied is not None:
        return TAG_PICKLE, copied
    try:
        data = pickle.dumps(obj, protocol=5)
    except Exception as exc:  # noqa: BLE001 - as in _pickle_fallback: by value, or a clear error
        return TAG_PICKLE, _pickle_fallback(obj, exc)
    if b"__main__" in data and _interactive_main():
        # A reference into an interactive __main__ cannot be found again elsewhere.
        return TAG_PICKLE, _pickle_fallback(obj, pickle.PicklingError("defined in an interactive __main__"))
    return TAG_PICKLE, data


def loads(tag: int, data: bytes) -> Any:
    """Decode a value made by :func:`dumps`."""
    if tag == TAG_BYTES:
        return data
    if tag == TAG_STR:
        return data.decode("utf-8", "surrogatepass")
    return _copy.loads(data)
