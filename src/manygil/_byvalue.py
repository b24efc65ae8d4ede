"""Functions sent by value load without importing cloudpickle.

cloudpickle pickles a function of ``__main__``, a lambda or a closure as calls to six
small functions of ``cloudpickle.cloudpickle`` (make the function, its cells, set its
state, import a module it uses).  Loading such a pickle imports that module, and with
it logging, inspect, dataclasses, typing, uuid and more, in each new interpreter: every
worker that loads one function of a notebook would pay for that import.

manygil's pickler (``_transport``) names the copies below instead, so a worker loads
by-value functions with nothing more than this module.  They are those of cloudpickle
3.x, whose pickles call them with the same arguments; with another major version of
cloudpickle, manygil names its functions as cloudpickle does.  Classes defined in
``__main__`` still load through cloudpickle (it keeps a registry of them).
"""

from __future__ import annotations

import sys
import types

__all__ = ("NAMES", "lookup")

# cloudpickle.cloudpickle's functions that have a copy here.
NAMES = ("_builtin_type", "_function_setstate", "_make_cell", "_make_empty_cell", "_make_function", "subimport")


def lookup(name: str) -> object:
    """The copy of cloudpickle's function ``name`` (what a pickle calls to get it)."""
    if name not in NAMES:
        raise ValueError(f"manygil._byvalue has no copy of {name!r}")
    return globals()[name]


def _builtin_type(name: str) -> object:
    if name == "ClassType":  # pickles of cloudpickle < 1.3
        return type
    return getattr(types, name)


def _make_function(code, globals, name, argdefs, closure):  # type: ignore[no-untyped-def]
    globals["__builtins__"] = __builtins__
    return types.FunctionType(code, globals, name, argdefs, closure)


def _function_setstate(obj, state):  # type: ignore[no-untyped-def]
    """Fill a function made by ``_make_function``: its ``__dict__``, globals, closure
    cells and other attributes (``__globals__`` and ``__closure__`` are read-only, so
    they are updated in place)."""
    state, slotstate = state
    obj.__dict__.update(state)
    obj_globals = slotstate.pop("__globals__")
    obj_closure = slotstate.pop("__closure__")
    slotstate.pop("_cloudpickle_submodules")  # only kept the submodules alive while loading
    obj.__globals__.update(obj_globals)
    obj.__globals__["__builtins__"] = __builtins__
    if obj_closure is not None:
        for i, cell in enumerate(obj_closure):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            obj.__closure__[i].cell_contents = value
    for key, value in slotstate.items():
        setattr(obj, key, value)


def _make_empty_cell() -> types.CellType:
    return types.CellType()


def _make_cell(value: object) -> types.CellType:
    return types.CellType(value)


def subimport(name: str) -> types.ModuleType:
    __import__(name)  # returns the top package of a submodule: look it up instead
    return sys.modules[name]
