"""What this process learned of the modules that refuse an own-GIL interpreter.

Which modules refuse does not change while a process runs: every pool of it shares
what one learned.  The interpreter side learns it as refusals arrive (the worker
names the refusing extension module and the modules that were importing it); the
router asks it where a task must go.  Any thread; the dict is changed with
``setdefault`` only, atomic under the GIL.
"""

from __future__ import annotations

__all__ = ("learn_refusal", "refused_count", "refusing")

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
