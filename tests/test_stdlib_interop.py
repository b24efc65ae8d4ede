"""manygil.interpreters and 3.14's concurrent.interpreters work with each other's objects."""

from __future__ import annotations

import sys

import pytest

from manygil import InterpreterPoolExecutor
from manygil import interpreters as I

from . import helpers

pytestmark = pytest.mark.skipif(sys.version_info < (3, 14), reason="concurrent.interpreters is new in 3.14")


@pytest.fixture
def stdlib():
    import concurrent.interpreters

    return concurrent.interpreters


def test_an_interpreter_made_by_the_stdlib_works_with_manygil(stdlib):
    theirs = stdlib.create()
    try:
        ours = I.Interpreter(theirs.id)
        assert ours.id == theirs.id and theirs.id in [i.id for i in I.list_all()]
        assert ours.call(helpers.add, 1, 2) == 3
        with pytest.raises(stdlib.ExecutionFailed):
            ours.exec("1 / 0")
    finally:
        theirs.close()


def test_an_interpreter_made_by_manygil_works_with_the_stdlib(stdlib):
    ours = I.create()
    try:
        theirs = stdlib.Interpreter(ours.id)
        assert theirs.call(helpers.add, 2, 3) == 5
        assert ours.id in [i.id for i in stdlib.list_all()]
    finally:
        ours.close()


def test_queues_cross_both_ways(stdlib):
    theirs, ours = stdlib.create_queue(), I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        assert pool.submit(helpers.put_into, theirs, 42).result(timeout=30)
        # While the worker lives: 3.14 unbinds an item once its interpreter is closed.
        assert theirs.get(timeout=10) == 42
    interp = stdlib.create()
    try:
        assert interp.call(helpers.put_into, ours, 7)
        assert ours.get(timeout=10) == 7
        assert interp.call(helpers.put_into, ours, 8)
    finally:
        interp.close()
    # As the standard library's queue would: the item of a closed interpreter is unbound.
    assert ours.get(timeout=10) is I.UNBOUND


def test_the_stdlib_exception_classes_catch_manygil_errors(stdlib):
    assert I.ExecutionFailed is stdlib.ExecutionFailed
    assert I.QueueEmpty is stdlib.QueueEmpty and I.NotShareableError is stdlib.NotShareableError
    with pytest.raises(stdlib.QueueEmpty):
        I.create_queue().get(timeout=0)
    with pytest.raises(TypeError):
        I.create_queue().put(__import__("threading").Lock())
