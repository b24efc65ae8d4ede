"""manygil's place in the program's end.

At the end of a program, before the interpreter joins its non-daemon threads,
``threading._shutdown`` calls the hooks of ``threading._register_atexit``, the last
registered first.  ``concurrent.futures`` waits there for its pools' tasks, and so does
manygil (``_pool._python_exit``), which must run before ``concurrent.futures.process``'s
hook: that one stops every ``ProcessPoolExecutor`` from taking work, and the process side
of a pool may still have tasks to start then (tasks waiting for a seat, or refused by an
interpreter as the program ended).  Each pool and each import of that module here puts
manygil's hook back in front (:func:`run_first`).

Which thread: the caller's (``register``, ``run_first``), or any thread of the main
interpreter, the program's end included (``process_module``).  The list of hooks is
changed only before the end begins, by threads holding the main GIL; ``_importing``
serializes the imports that lift ``threading``'s end flag.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable

from . import _cpython

__all__ = ("process_module", "register", "run_first")

_hook: object = None  # manygil's entry in threading._threading_atexits
_importing = threading.Lock()  # guards the lifted flag of process_module()


def register(fn: Callable[[], None]) -> None:
    """Call ``fn`` at the program's end, before non-daemon threads are joined, and
    before ``concurrent.futures.process``'s hook even when that module is imported
    later: ``threading._register_atexit`` puts manygil's back in front after that one's
    (a program's own ``ProcessPoolExecutor``, imported after a pool was made, ran its
    hook first, which stopped the pool's process side).  Other hooks keep their order."""
    global _hook
    _cpython.register_thread_exit(fn)
    hooks = _cpython.thread_exit_hooks()
    _hook = hooks[-1] if hooks else None

    def wrap(original: Callable[..., None]) -> Callable[..., None]:
        def register_atexit(func: Callable[..., object], /, *args: object, **kwargs: object) -> None:
            original(func, *args, **kwargs)
            if getattr(func, "__module__", None) == "concurrent.futures.process":
                run_first()

        return register_atexit

    _cpython.wrap_register_thread_exit(wrap)


def run_first() -> None:
    """Make manygil's hook the next to run (after every hook registered so far)."""
    hooks = _cpython.thread_exit_hooks()
    if _hook is None or hooks is None or _cpython.threads_shutting_down(default=True):
        return
    if hooks[-1] is not _hook and _hook in hooks:
        hooks.remove(_hook)
        hooks.append(_hook)


def process_module() -> types.ModuleType:
    """``concurrent.futures.process``, imported now if it was not, the program's end
    included: its import registers its own exit hook, which ``threading`` refuses once
    the end has begun.  Allowed then, that hook does not run (the hooks to run were
    taken before), and it need not: manygil's waits for every task of its process side."""
    loaded = sys.modules.get("concurrent.futures.process")
    if loaded is not None and not getattr(loaded.__spec__, "_initializing", False):
        return loaded
    with _importing:  # one thread lifts the flag at a time; the others wait for the import
        try:
            module = _import_process_module()
        except RuntimeError:  # "can't register atexit after shutdown"
            if not _cpython.threads_shutting_down():
                raise
            # The program's end began during the import (a pool's thread imported it
            # as the main thread ended): the failed import left nothing; again, as then.
            module = _import_process_module()
    return module


def _import_process_module() -> types.ModuleType:
    ending = _cpython.threads_shutting_down()
    if ending:
        _cpython.set_threads_shutting_down(False)
    try:
        import concurrent.futures.process as module
    finally:
        if ending:
            _cpython.set_threads_shutting_down(True)
    if not ending:
        run_first()
    return module
