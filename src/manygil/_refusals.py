"""What this process learned of the modules that refuse an own-GIL interpreter.

Which modules refuse does not change while a process runs: every pool of it shares
what one learned.  The interpreter side learns it as refusals arrive (the worker
names the refusing extension module and the modules that were importing it); the
router asks it where a task must go.  Any thread; the dict is changed with
``setdefault`` only, atomic under the GIL.
"""

from __future__ import annotations

__all__ = ("learn_refusal", "refused_count", "refusing", "said", "script_refused_error")

# The modules whose import a refusal failed in an own-GIL interpreter of this process:
# the refusing extension module and those that were importing it (numpy._core._multiarray_umath,
# numpy._core, numpy, a module of the caller that imports numpy...).  Their import fails
# the same way in every such interpreter, so a task whose loading would import one of
# them goes to the fallback side at once, instead of being sent, refused and sent again.
_REFUSING: dict[str, str] = {}  # module -> the extension module that refused


def learn_refusal(extension: str, modules: list[str]) -> None:
    """Remember the modules whose import ``extension``'s refusal failed (see
    ``_worker.refusal``), the extension itself among them."""
    for module in (extension, *modules):
        if module and module != "?":
            _REFUSING.setdefault(module, extension)


def refusing(module: object) -> str | None:
    """The extension module that refused when ``module`` (a name), or the package above
    it, was imported here, if one did: importing a module imports its packages first."""
    name = module if isinstance(module, str) else ""
    while name:
        if name in _REFUSING:
            return _REFUSING[name]
        name = name.rpartition(".")[0]
    return None


def refused_count() -> int:
    """How many modules are known to refuse (0: none learned yet)."""
    return len(_REFUSING)


def said(exc: BaseException, module: str, label: str, by_value_error: BaseException | None) -> BaseException:
    """``exc``, a task's refusal, with notes that say which module refused, what would
    have run the task, and why its function could not go by value instead."""
    exc.add_note(
        f"manygil: the extension module {module} refuses to load in an interpreter "
        f"with its own GIL, so this task did not run; InterpreterPoolExecutor("
        f"fallback=\"process\") (the default) runs such tasks in a process worker"
    )
    if by_value_error is not None:
        exc.add_note(
            f"manygil: {label} could not be sent by value either (to run it without "
            f"importing the script): {type(by_value_error).__name__}: {by_value_error}"
        )
    return exc


def script_refused_error(module: str, label: str, by_value_error: BaseException) -> ImportError:
    """The error of a task of the caller's script, which ``module`` refused in the
    workers, when its function could not go by value (``by_value_error``) and no worker
    tried it: what a worker's refusal would have said."""
    exc = ImportError(
        f"module {module} does not support loading in subinterpreters (the caller's script imports it)",
        name=module,
    )
    exc.__cause__ = by_value_error
    said(exc, module, label, by_value_error)
    return exc
