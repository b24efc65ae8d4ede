from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from manygil import InterpreterPoolExecutor, _transport
from manygil.shared import SharedValue
from manygil import interpreters as I

from . import helpers


@pytest.fixture
def interp():
    it = I.create()
    yield it
    try:
        it.close()
    except I.InterpreterNotFoundError:
        pass


def test_create_list_current_main(interp):
    ids = [i.id for i in I.list_all()]
    assert interp.id in ids and I.get_main().id in ids
    assert I.get_current() is I.get_main()
    assert interp.whence == "_interpreters module"
    assert I.get_main().whence == "runtime init"
    assert I.Interpreter(interp.id) is interp
    assert repr(interp) == f"Interpreter({interp.id})"
    assert interp.call(helpers.add, 1) == 1
    current = interp.call(_current_id)
    assert current == interp.id


def _current_id():
    from manygil import interpreters

    return interpreters.get_current().id


def test_exec_source_runs_in_its_own_main(interp):
    interp.exec("x = 6 * 7")
    interp.exec("import sys; y = sys.modules['__main__'].x")
    q = I.create_queue()
    interp.prepare_main(q=q)
    interp.exec("q.put(x + y)")
    assert q.get(timeout=5) == 84


def test_exec_function_and_code_object(interp):
    q = I.create_queue()
    interp.prepare_main(main_q=q)

    def body():
        main_q.put("from a function body")  # noqa: F821 - main_q lives in the interpreter's __main__

    interp.exec(body)
    interp.exec(compile("main_q.put('from code')", "<test>", "exec"))
    assert q.get(timeout=5) == "from a function body"
    assert q.get(timeout=5) == "from code"


def test_exec_refuses_closures_and_functions_with_arguments(interp):
    def takes(a):
        return a

    with pytest.raises(ValueError, match="takes arguments or is a closure"):
        interp.exec(takes)
    with pytest.raises(TypeError, match="source code or a function"):
        interp.exec(42)  # type: ignore[arg-type]


def test_exec_failure_carries_type_message_and_traceback(interp):
    with pytest.raises(I.ExecutionFailed) as info:
        interp.exec("def inner():\n    raise KeyError('missing')\ninner()\n")
    exc = info.value
    assert exc.excinfo.type.__name__ == "KeyError"
    assert exc.excinfo.msg == "'missing'"
    assert "in inner" in exc.excinfo.errdisplay
    assert "Uncaught in the interpreter" in str(exc)
    assert "KeyError: 'missing'" in str(exc)
    # the interpreter survives the error
    interp.exec("ok = True")


def test_call_returns_results_and_takes_args_and_kwargs(interp):
    assert interp.call(helpers.add, 2, b=40) == 42
    assert interp.call(os.getpid) == os.getpid()
    assert interp.call(pow, 2, 10) == 1024
    assert interp.call(helpers.add, [1], [2]) == [1, 2]
    assert interp.call(helpers.add, b"ab", b"cd") == b"abcd"


def test_call_failure_is_execution_failed_with_traceback(interp):
    with pytest.raises(I.ExecutionFailed) as info:
        interp.call(helpers.boom, "bad value")
    assert info.value.excinfo.type.__name__ == "ValueError"
    assert info.value.excinfo.msg == "bad value"
    assert "in boom" in info.value.excinfo.errdisplay


def test_call_lambda_with_cloudpickle(interp):
    pytest.importorskip("cloudpickle")
    k = 5
    assert interp.call(lambda x: x * k, 3) == 15


def test_call_lambda_without_cloudpickle_says_how_to_fix(interp, monkeypatch):
    monkeypatch.setattr(_transport, "_cloudpickle", None)
    with pytest.raises(I.NotShareableError, match="install cloudpickle"):
        interp.call(lambda: 1)


def test_unpicklable_argument_and_result(interp):
    with pytest.raises(I.NotShareableError, match="Unpicklable object"):
        interp.call(helpers.add, helpers.Unpicklable())
    with pytest.raises(I.NotShareableError, match="refuse to be pickled"):  # as 3.14
        interp.call(helpers.make_unpicklable)


def test_prepare_main_shares_and_pickles(interp):
    q = I.create_queue()
    interp.prepare_main({"a": 1, "s": "text"}, q=q, d={"k": [1, 2]})
    interp.exec("q.put((a, s, d))")
    assert q.get(timeout=5) == (1, "text", {"k": [1, 2]})
    lock = threading.Lock()
    with pytest.raises(I.NotShareableError, match="lock"):
        interp.prepare_main(lock=lock)


def test_is_running_while_a_call_is_in_progress(interp):
    q = I.create_queue()
    assert not interp.is_running()
    thread = interp.call_in_thread(helpers.wait_on, q)
    deadline = time.monotonic() + 10
    while not interp.is_running():
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    with pytest.raises(I.InterpreterError, match="running"):
        interp.close()
    q.put("go")
    thread.join(10)
    assert not thread.is_alive()
    assert not interp.is_running()


def test_closed_interpreter_raises_not_found_with_its_id(interp):
    interp.close()
    with pytest.raises(I.InterpreterNotFoundError, match=str(interp.id)):
        interp.exec("pass")
    with pytest.raises(I.InterpreterNotFoundError, match=str(interp.id)):
        interp.close()
    with pytest.raises(I.InterpreterNotFoundError):
        interp.is_running()


def test_cannot_close_or_exec_the_current_interpreter():
    main = I.get_main()
    with pytest.raises(I.InterpreterError):
        main.close()
    with pytest.raises(I.InterpreterError, match="current interpreter"):
        main.exec("pass")


# ---------------------------------------------------------------------- queues


def test_queue_basic_api():
    q = I.create_queue(maxsize=2)
    assert isinstance(q.id, int) and q.maxsize == 2
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put_nowait({"two": 2})
    assert q.full() and q.qsize() == 2
    with pytest.raises(I.QueueFull):
        q.put_nowait(3)
    with pytest.raises(I.QueueFull):
        q.put(3, timeout=0.05)
    assert q.get() == 1
    assert q.get_nowait() == {"two": 2}
    with pytest.raises(I.QueueEmpty):
        q.get_nowait()
    start = time.monotonic()
    with pytest.raises(I.QueueEmpty):
        q.get(timeout=0.1)
    assert time.monotonic() - start >= 0.09
    import queue

    assert issubclass(I.QueueEmpty, queue.Empty) and issubclass(I.QueueFull, queue.Full)
    assert I.Queue(q.id) is q


def test_queue_bad_input():
    q = I.create_queue()
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="unbounditems"):
        q.put(1, unbounditems="nope")
    with pytest.raises(TypeError, match="maxsize"):
        I.create_queue("3")  # type: ignore[arg-type]
    with pytest.raises(I.NotShareableError, match="lock"):
        q.put(threading.Lock())
    with pytest.raises(I.QueueError, match="not found"):
        I.Queue(10**9)
    q.put(1, unbounditems=I.UNBOUND_REMOVE)
    assert q.get() == 1


def test_queue_both_directions(interp):
    to_sub = I.create_queue()
    to_main = I.create_queue()
    interp.prepare_main(inq=to_sub, outq=to_main)
    items = [None, True, 7, 2.5, "text", b"bytes", (1, "a"), {"k": [1, 2]}]
    thread = interp.call_in_thread(helpers.echo_queue, to_sub, to_main, len(items))
    for item in items:
        to_sub.put(item)
    got = [to_main.get(timeout=10) for _ in items]
    thread.join(10)
    assert got == items


def test_queue_is_the_same_queue_everywhere(interp):
    q = I.create_queue()
    carrier = I.create_queue()
    carrier.put(q)  # a queue can travel inside another queue
    interp.prepare_main(carrier=carrier)
    interp.exec("inner = carrier.get(timeout=5)\ninner.put(inner.id)")
    assert q.get(timeout=5) == q.id
    interp.exec("del inner, carrier")


def test_a_pickle_of_a_queue_loads_any_number_of_times_and_says_when_it_is_gone(interp):
    import gc
    import pickle

    q = I.create_queue()
    data = pickle.dumps(q)  # by the user: the pickle holds no reference
    interp.prepare_main(data=data)
    interp.exec("import pickle\na, b = pickle.loads(data), pickle.loads(data)\na.put(1)\ndel a\nb.put(2)\ndel b")
    assert (q.get(timeout=5), q.get(timeout=5)) == (1, 2)
    q.put(3)  # the loads dropped their own references, not the caller's
    assert q.get(timeout=5) == 3
    del q
    gc.collect()
    with pytest.raises(LookupError, match=r"cannot load a Queue: .* is gone; .*keep the object alive until"):
        pickle.loads(data)


def test_blocking_get_wakes_when_another_interpreter_puts(interp):
    q = I.create_queue()
    results = []
    waiter = threading.Thread(target=lambda: results.append(q.get(timeout=10)))
    waiter.start()
    interp.prepare_main(q=q)
    interp.exec("q.put('woken')")
    waiter.join(10)
    assert results == ["woken"]


def test_queue_outlives_the_interpreter_that_made_it():
    other = I.create()
    q = other.call(I.create_queue)  # the creating interpreter drops its handle at once
    other.exec("import manygil.interpreters as I")
    other.close()
    q.put("still here")
    assert q.get() == "still here"


def test_items_of_a_closed_interpreter_follow_unbounditems():
    # As in CPython 3.14: once the interpreter that put an item is closed, get() gives
    # what the put's (or the queue's) unbounditems says instead, on every version.
    q = I.create_queue()
    removing = I.create_queue(unbounditems=I.UNBOUND_REMOVE)
    assert q.unbounditems is I.UNBOUND and removing.unbounditems is I.UNBOUND_REMOVE
    other = I.create()
    other.prepare_main(q=q, removing=removing)
    other.exec(
        "import manygil.interpreters as I\n"
        "q.put(1)\n"
        "q.put(2, unbounditems=I.UNBOUND_ERROR)\n"
        "q.put(3, unbounditems=I.UNBOUND_REMOVE)\n"
        "removing.put(4)\n"
        "removing.put(5, unbounditems=I.UNBOUND)\n"
    )
    q.put("mine")  # this interpreter's item stays
    assert q.get() == 1  # bound while its interpreter lives
    other.close()
    assert q.qsize() == 2 and removing.qsize() == 1
    with pytest.raises(I.ItemInterpreterDestroyed, match="UNBOUND_ERROR"):
        q.get()
    assert q.get() == "mine"
    assert removing.get() is I.UNBOUND
    assert q.empty() and removing.empty()


def test_items_a_pool_task_put_are_unbound_once_the_pool_is_shut_down():
    from manygil import InterpreterPoolExecutor

    kept, unbound = I.create_queue(), I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        assert pool.submit(helpers.put_into, kept, "read in time").result(timeout=30)
        assert kept.get(timeout=10) == "read in time"
        assert pool.submit(helpers.put_into, unbound, "read too late").result(timeout=30)
    assert unbound.get(timeout=10) is I.UNBOUND  # its worker's interpreter is closed


def test_is_shareable():
    assert I.is_shareable(b"x") and I.is_shareable("x") and I.is_shareable(1) and I.is_shareable(None)
    assert I.is_shareable(I.create_queue())
    assert not I.is_shareable([1, 2])
    assert not I.is_shareable(threading.Lock())


def test_an_interpreter_runs_python_while_another_holds_its_gil():
    """Each interpreter has its own GIL, shown by events, not by the clock: B raises its
    switch interval to 1000 s and spins holding its GIL until a flag is set; A must run
    Python meanwhile to set it.  With one shared GIL, A could never run and B would give
    up (after about 10 s); with its own GIL, A runs whatever the machine's load."""
    flag, spinning = SharedValue(0), SharedValue(0)
    with InterpreterPoolExecutor(2) as pool:
        holder = pool.submit(helpers.hold_gil_until, flag, spinning)
        setter = pool.submit(helpers.set_when, flag, spinning)
        assert setter.result(timeout=60) is True
        assert holder.result(timeout=60) is True, "A could not run while B held its GIL"


def test_import_on_old_python_gives_one_clear_line():
    old = None
    for name in ("python3.11", "python3.10"):
        from shutil import which

        path = which(name)
        if path:
            old = path
            break
    if old is None:
        pytest.skip("no CPython < 3.12 on PATH")
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    proc = subprocess.run(
        [old, "-c", f"import sys; sys.path.insert(0, {src!r}); import manygil"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: manygil needs CPython 3.12 or newer for per-interpreter GILs; this is 3.1")


def test_semantics_follow_314():
    """What CPython 3.14's concurrent.interpreters does, on every version."""
    with pytest.raises(ValueError, match="non-negative"):
        I.Interpreter(-1)
    with pytest.raises(I.InterpreterNotFoundError):
        I.Interpreter(10**6)
    q = I.create_queue(-10)
    assert q.maxsize == -10 and not q.full()  # unbounded
    q.put(1)
    assert not q.full() and q.get() == 1
    interp = I.create()
    try:
        with pytest.raises(ValueError, match="at least one name"):
            interp.prepare_main()
        interp.prepare_main(spam=42)
        assert interp.call(eval, "spam") == 42  # calls run in __main__
        assert interp.call(eval, "__name__") == "__main__"
        with pytest.raises(I.NotShareableError, match="cannot come back"):
            interp.call(helpers.make_unpicklable)
        with pytest.raises(TypeError):  # NotShareableError is a TypeError, as on 3.14
            interp.call(helpers.add, threading.Lock())
        q.put(memoryview(b"abc"))
        assert bytes(q.get(timeout=5)) == b"abc"
        names = interp.call(dir)  # the call's frame is __main__'s, with nothing of manygil's
        assert "spam" in names and "__builtins__" in names
        assert not [n for n in names if n.startswith("__mg")]
        assert interp.call(eval, "spam") == 42  # and the names it used were removed
        assert all(I.is_shareable(x) for x in (None, True, 1.5, (1, ("a", b"b"), False)))
        assert not I.is_shareable([1]) and not I.is_shareable((1, [2]))
    finally:
        interp.close()


def test_dropping_the_last_reference_closes_the_interpreter():
    import gc

    interp = I.create()
    interp_id = interp.id
    other = I.Interpreter(interp_id)  # the same object: still referenced
    del interp
    assert interp_id in [i.id for i in I.list_all()]
    del other
    assert interp_id not in [i.id for i in I.list_all()]
    # Only the collector frees a cycle; list_all() never returns one it closed meanwhile.
    from manygil import _backend

    interp = I.create()
    interp_id, cycle = interp.id, []
    cycle.append((cycle, interp))
    gc.disable()
    del interp, cycle
    gc.set_threshold(1)
    gc.enable()
    try:
        found = {i.id for i in I.list_all()}
    finally:
        gc.disable()
        gc.set_threshold(700, 10, 10)
    assert found <= {i for i, _ in _backend.list_all()}
    gc.enable()
    gc.collect()
    assert interp_id not in [i.id for i in I.list_all()]


def test_closed_from_a_sibling_interpreter_and_from_another_thread():
    # The sibling did not create it and does not know its agent thread: closing used
    # to wait forever for that thread.  On 3.12, closing from another thread than the
    # one that created it waited forever too (CPython's threading bookkeeping).
    target, closer = I.create(), I.create()
    try:
        closer.call(helpers.close_interpreter, target.id)
        assert target.id not in [i.id for i in I.list_all()]
    finally:
        closer.close()
    made = []
    thread = threading.Thread(target=lambda: made.append(I.create()))
    thread.start()
    thread.join()
    made.pop().close()


def test_create_tries_again_when_cpython_fails_to_create(monkeypatch):
    # 3.12.1 and 3.13.0 each failed once under load with a bare "interpreter creation failed".
    from manygil import _backend

    if _backend.PY_VERSION == "3.12":
        from manygil._backend import py312 as impl

        error: type[Exception] = RuntimeError
    else:
        from manygil._backend import py313 as impl  # 3.14+ uses its create()

        error = impl.InterpreterError
    low = impl._ll
    real, calls = low.create, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise error("interpreter creation failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(low, "create", flaky)
    interp_id = impl.create()
    impl.destroy(interp_id)
    assert len(calls) == 3

    def broken(*args, **kwargs):
        try:
            raise MemoryError("the cause")
        except MemoryError:
            raise error("interpreter creation failed")  # chained, as CPython does

    monkeypatch.setattr(low, "create", broken)
    with pytest.raises(error, match=r"3 attempts\): MemoryError\('the cause'\)"):
        impl.create()


def test_listing_interpreters_waits_for_a_destroy_on_another_thread(monkeypatch):
    # CPython walks its list of interpreters without a lock, so a destroy on another
    # thread could free the one it stood on (a segfault seen on 3.15).  Here a destroy
    # is held midway: a list waits for it, another destroy does not, and a destroy that
    # never ends delays a list only briefly.
    from manygil import _backend

    inside, release = threading.Event(), threading.Event()
    original = _backend._impl.destroy
    held = set()

    def held_destroy(interp_id):
        if interp_id in held:
            inside.set()
            assert release.wait(60)
        original(interp_id)

    blocked = threading.Event()  # a caller found it must wait for its turn

    class Turns(threading.Condition):
        def wait_for(self, predicate, timeout=None):
            if not predicate():
                blocked.set()
            return super().wait_for(predicate, timeout)

    monkeypatch.setattr(_backend._impl, "destroy", held_destroy)
    monkeypatch.setattr(_backend, "_turns", Turns(threading.RLock()))
    monkeypatch.setattr(_backend, "_LIST_WAIT", 120.0)  # the list below waits, however slow the machine
    interp, other = I.create(), I.create()
    held.add(interp.id)
    closer = threading.Thread(target=interp.close)
    closer.start()
    assert inside.wait(60)
    other.close()  # not held up by the destroy in progress
    assert not blocked.is_set()
    listed = []
    lister = threading.Thread(target=lambda: listed.append(I.list_all()))
    lister.start()
    assert blocked.wait(60)  # the list waits for the destroy (without the wait it lists at once)
    assert not listed
    release.set()
    closer.join(60)
    lister.join(60)
    assert {interp.id, other.id}.isdisjoint(i.id for i in listed[0])

    monkeypatch.setattr(_backend, "_LIST_WAIT", 0.05)
    release.clear()
    stuck = I.create()
    held.add(stuck.id)
    inside.clear()
    closer = threading.Thread(target=stuck.close)
    closer.start()
    assert inside.wait(60)
    try:
        assert I.get_main().id in {i.id for i in I.list_all()}  # listed after a short wait
    finally:
        release.set()
        closer.join(60)
