"""Every public name exists and is documented."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["manygil", "manygil.interpreters", "manygil.pool", "manygil.shared", "manygil.sync",
           "manygil.check", "manygil.doctor", "manygil.duckdb", "manygil.dask", "manygil.mppool",
           "manygil.joblib", "manygil.pytest_plugin"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_have_docstrings(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    assert isinstance(module.__all__, tuple), f"{name}.__all__ must be a tuple"
    for attr in module.__all__:
        obj = getattr(module, attr)
        if attr.startswith("__") or isinstance(obj, (int, str)):
            continue
        if type(obj).__name__ == "_Unbound":
            continue
        if not getattr(obj, "__module__", "manygil").startswith("manygil"):
            # re-exported from CPython (some of its classes have no docstring):
            # the module's own docstring must say what it is
            assert attr in module.__doc__, f"{name}.{attr} is re-exported but not described"
            continue
        assert getattr(obj, "__doc__", None), f"{name}.{attr} has no docstring"


EXCEPTIONS = [
    "BrokenInterpreterPool", "ExecutionFailed", "InterpreterError", "InterpreterNotFoundError",
    "ItemInterpreterDestroyed", "NotShareableError", "QueueEmpty", "QueueError", "QueueFull", "RemoteError",
    "TaskInterrupted",
]


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_every_exception_a_user_may_catch_is_manygils_own_name(name):
    # NotShareableError printed as manygil._backend.py313.NotShareableError and was not in
    # manygil; TaskInterrupted lived only in manygil._worker (issue 29).
    import pickle

    import manygil
    from manygil import interpreters

    cls = getattr(manygil, name)
    assert name in manygil.__all__
    assert issubclass(cls, BaseException)
    if name in interpreters.__all__:
        assert getattr(interpreters, name) is cls
    # manygil's own classes print as manygil.X; on 3.14+ some are the standard library's
    assert cls.__module__ in ("manygil", "concurrent.interpreters", "interpreters",
                              "concurrent.interpreters._queues"), cls.__module__
    if cls.__module__ == "manygil":
        assert pickle.loads(pickle.dumps(cls)) is cls
