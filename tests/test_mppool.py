"""``manygil.Pool``: multiprocessing.Pool's API on interpreters (issue 27, part 1).

Where the standard library defines the behaviour, the test runs the same calls on
``multiprocessing.pool.ThreadPool`` (multiprocessing's ``Pool`` class, with threads) and
compares.  Tasks that must block wait on a queue or an event the test controls; a
``timeout`` appears only where a test shows that something is *not* ready.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import warnings
from concurrent.futures import CancelledError
import multiprocessing.pool
from multiprocessing.pool import ThreadPool

import pytest

import manygil
from manygil import BrokenInterpreterPool, FallbackWarning, Pool
from manygil import interpreters as I
from manygil.mppool import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult

from . import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# Tasks that tests/helpers.py does not have, written to a module on sys.path (workers
# inherit the caller's sys.path), so that this file stays the only one to change.
TASKS = '''
def signal_then_spin(started):
    """Say so on the queue ``started``, then loop in pure Python until interrupted."""
    started.put("running")
    while True:
        pass


def tagged(x):
    if x == "raise":
        raise KeyError(x)
    return ("done", x)
'''


@pytest.fixture(scope="session")
def tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mppool_tasks")
    (folder / "mppool_tasks.py").write_text(TASKS)
    sys.path.insert(0, str(folder))
    try:
        import mppool_tasks

        yield mppool_tasks
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("mppool_tasks", None)


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def pool(request):
    p = Pool(request.param)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


def collect(iterator):
    """Every item of an iterator that may raise: ('ok', value) or ('raised', type, str)."""
    out = []
    while True:
        try:
            out.append(("ok", next(iterator)))
        except StopIteration:
            return out
        except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
            out.append(("raised", type(exc), str(exc)))


def outcome(call):
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return ("raised", type(exc), str(exc))


# -- the same answers as multiprocessing ---------------------------------------------------

CALLS = {
    "apply": lambda p: p.apply(helpers.add, (1, 2)),
    "apply kwds": lambda p: p.apply(helpers.add, (1,), {"b": 5}),
    "apply list args": lambda p: p.apply(helpers.add, [1, 2]),
    "apply raises": lambda p: p.apply(helpers.boom, ("bad",)),
    "apply_async get": lambda p: p.apply_async(pow, (2, 10)).get(),
    "map": lambda p: p.map(abs, range(-20, 20)),
    "map chunk 1": lambda p: p.map(abs, range(-20, 20), 1),
    "map chunk 7": lambda p: p.map(abs, range(-20, 20), chunksize=7),
    "map chunk larger than input": lambda p: p.map(abs, range(-3, 3), chunksize=100),
    "map generator": lambda p: p.map(abs, (x for x in range(-5, 5))),
    "map empty": lambda p: p.map(abs, []),
    "map raises": lambda p: p.map(helpers.fails_on_seven, [1, 2, 7, 3], 1),
    "map_async": lambda p: p.map_async(helpers.half, range(9), 2).get(),
    "starmap": lambda p: p.starmap(pow, [(2, 3), (3, 2), (5, 0)]),
    "starmap lists": lambda p: p.starmap(helpers.add, [[1, 2], [3, 4]], 1),
    "starmap chunk 2": lambda p: p.starmap(helpers.add, zip(range(9), range(9)), 2),
    "starmap not iterable": lambda p: p.starmap(helpers.add, [1, 2], 1),
    "starmap_async": lambda p: p.starmap_async(divmod, [(7, 2), (9, 4)]).get(),
    "imap": lambda p: list(p.imap(abs, range(-10, 10))),
    "imap chunk 3": lambda p: list(p.imap(abs, range(-10, 10), 3)),
    "imap_unordered": lambda p: sorted(p.imap_unordered(abs, range(-10, 10))),
    "imap_unordered chunk 4": lambda p: sorted(p.imap_unordered(abs, range(-10, 10), chunksize=4)),
    "imap empty": lambda p: list(p.imap(abs, [])),
    # large bytes results skip pickle (read by the thread that asks): here, a done callback
    "apply large bytes": lambda p: len(p.apply(bytes, (1 << 20,))),
    "map large bytes": lambda p: [len(b) for b in p.map(bytes, [1 << 17] * 4, 1)],
    "imap_unordered large bytes": lambda p: sorted(len(b) for b in p.imap_unordered(bytes, [1 << 17, 1 << 18])),
    "imap each item": lambda p: collect(p.imap(helpers.fails_on_seven, range(16))),
    "imap_unordered each item": lambda p: sorted(collect(p.imap_unordered(helpers.fails_on_seven, range(16))),
                                                 key=str),
}


def _raising_iterable():
    yield 1
    yield -2
    raise KeyError("the iterable broke")


# The same exception, worded by fn(*args) here and by itertools.starmap there.
SAME_TYPE_ONLY = {"starmap not iterable"}

CALLS["imap iterable raises"] = lambda p: collect(p.imap(abs, _raising_iterable()))
CALLS["imap_unordered iterable raises"] = lambda p: sorted(collect(p.imap_unordered(abs, _raising_iterable())),
                                                           key=str)


@pytest.mark.parametrize("name", list(CALLS))
def test_the_same_results_and_exceptions_as_multiprocessing(name):
    call = CALLS[name]
    with ThreadPool(2) as reference:
        expected = outcome(lambda: call(reference))
    with Pool(2) as pool:
        got = outcome(lambda: call(pool))
    if name in SAME_TYPE_ONLY:
        got, expected = got[:2], expected[:2]
    assert got == expected


def test_a_task_exception_is_raised_as_itself_with_the_remote_traceback(pool):
    with pytest.raises(ValueError, match="bad") as info:
        pool.apply(helpers.boom, ("bad",))
    assert "boom" in str(info.value.__cause__)  # where it was raised, in the worker


def test_the_module_and_its_names():
    assert manygil.Pool is manygil.mppool.Pool
    assert "Pool" in manygil.__all__
    assert AsyncResult is ApplyResult
    assert ApplyResult[int] is not None  # generic, as multiprocessing's
    with Pool(1) as pool:
        assert isinstance(pool.map_async(abs, [1]), AsyncResult)
        assert isinstance(pool.map_async(abs, [1]), MapResult)
        assert isinstance(pool.imap(abs, [1]), IMapIterator)
        assert isinstance(pool.imap_unordered(abs, [1]), IMapUnorderedIterator)
        assert repr(pool) == "<manygil.Pool state=RUN pool_size=1>"
        with pytest.raises(NotImplementedError, match="cannot be passed between processes or pickled"):
            pickle.dumps(pool)
    assert repr(pool) == "<manygil.Pool state=TERMINATE pool_size=1>"


def test_importing_manygil_does_not_import_the_pool():
    code = "import manygil, sys; print('manygil.mppool' in sys.modules, 'multiprocessing' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


# -- ordering ------------------------------------------------------------------------------

def test_imap_keeps_the_input_order_when_later_tasks_finish_first():
    queues = [I.create_queue() for _ in range(3)]
    with Pool(3) as pool:
        it = pool.imap(helpers.wait_on, queues)
        queues[2].put("c")
        queues[1].put("b")
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.2)  # "b" and "c" may be in, "a" is not
        queues[0].put("a")
        assert list(it) == ["a", "b", "c"]


def test_imap_unordered_gives_results_as_they_finish():
    queues = [I.create_queue() for _ in range(3)]
    with Pool(3) as pool:
        it = pool.imap_unordered(helpers.wait_on, queues)
        queues[1].put("b")
        assert it.next() == "b"  # the others wait on their queues
        queues[2].put("c")
        assert next(it) == "c"
        queues[0].put("a")
        assert list(it) == ["a"]


def test_map_keeps_the_input_order_when_later_chunks_finish_first():
    queues = [I.create_queue() for _ in range(4)]
    with Pool(4) as pool:
        result = pool.map_async(helpers.wait_on, queues, chunksize=1)
        for i in (3, 2, 1):
            queues[i].put(i)
        assert not result.ready()
        queues[0].put(0)
        assert result.get() == [0, 1, 2, 3]


def test_an_imap_with_chunks_raises_at_the_failing_chunk_and_goes_on(pool):
    # items 0..11 in chunks of 3: the chunk holding 7 (6, 7, 8) fails as one
    got = collect(pool.imap(helpers.fails_on_seven, range(1, 12), 3))
    assert got == [("ok", x) for x in range(1, 7)] + [("raised", ValueError, "seven divides 7")] + [
        ("ok", x) for x in range(10, 12)
    ]


# -- AsyncResult -------------------------------------------------------------------------

def test_get_wait_ready_and_successful_of_a_pending_result():
    q = I.create_queue()
    with Pool(1) as pool:
        result = pool.apply_async(helpers.wait_on, (q,))
        assert not result.ready()
        with pytest.raises(ValueError, match="not ready"):
            result.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.05)
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=-1)  # as multiprocessing: no wait
        assert result.wait(0.01) is None
        q.put("go")
        result.wait()
        assert result.ready() and result.successful()
        assert result.get(timeout=0) == "go"
        assert result.get() == "go"  # again


def test_a_failed_result_is_not_successful_and_raises_each_time(pool):
    result = pool.apply_async(helpers.boom, ("twice",))
    result.wait()
    assert result.ready() and not result.successful()
    for _ in range(2):
        with pytest.raises(ValueError, match="twice"):
            result.get()


def test_a_map_is_ready_only_once_every_chunk_is_done_even_after_an_error():
    q = I.create_queue()
    with Pool(2) as pool:
        result = pool.map_async(helpers.wait_on, [q, "not a queue"], chunksize=1)
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.2)  # the failed chunk is done, the other still waits
        q.put("go")
        with pytest.raises(AttributeError):
            result.get()


@pytest.mark.parametrize("value, error", [("1", TypeError), (float("nan"), ValueError), (object(), TypeError)])
def test_a_timeout_that_is_not_a_number_is_refused(pool, value, error):
    result = pool.apply_async(helpers.add, (1,))
    with pytest.raises(error, match="timeout"):
        result.get(value)
    with pytest.raises(error, match="timeout"):
        result.wait(value)
    with pytest.raises(error, match="timeout"):
        pool.imap(abs, [1]).next(value)
    assert result.get() == 1


# -- callbacks ---------------------------------------------------------------------------

def test_callbacks_run_once_in_another_thread_before_the_result_is_ready(pool):
    calls = []
    current = {}

    def record(kind):
        def callback(value):
            calls.append((kind, value, threading.get_ident(), current["result"].ready()))
        return callback

    def run(start, *args, release=()):
        """Start a call whose tasks wait on queues, then release them: its callback
        runs after ``current`` names its result."""
        current["result"] = result = start(*args, callback=record("ok"), error_callback=record("error"))
        for q, value in release:
            q.put(value)
        result.wait()

    q1, q2 = I.create_queue(), I.create_queue()
    run(pool.apply_async, helpers.wait_on, (q1,), release=[(q1, 3)])
    run(pool.map_async, helpers.wait_on, [q1, "not a queue"], 1, release=[(q1, 0)])  # fails, then waits
    run(pool.map_async, helpers.wait_on, [q1, q2, q1], 2, release=[(q1, "a"), (q2, "b"), (q1, "c")])
    run(pool.starmap_async, helpers.wait_on, [(q1,), (q2,)], 1, release=[(q1, 1), (q2, 2)])
    assert [c[0] for c in calls] == ["ok", "error", "ok", "ok"]
    assert calls[0][1] == 3
    assert isinstance(calls[1][1], AttributeError)
    assert calls[2][1] in (["a", "b", "c"], ["c", "b", "a"])  # the whole list, in order
    assert calls[3][1] == [1, 2]
    assert all(c[2] != threading.get_ident() for c in calls)  # not the caller's thread
    assert all(c[3] is False for c in calls)  # before the result was ready


def test_a_map_error_callback_gets_the_first_exception_once(pool):
    errors, values = [], []
    result = pool.map_async(helpers.fails_on_seven, range(30), 1, callback=values.append,
                            error_callback=errors.append)
    with pytest.raises(ValueError, match="seven divides"):
        result.get()
    assert values == [] and len(errors) == 1 and isinstance(errors[0], ValueError)
    with pytest.raises(ValueError) as info:
        result.get()
    assert info.value is errors[0]


def test_an_empty_map_calls_its_callback_once_with_an_empty_list(pool):
    # multiprocessing calls none for an empty input (it never notices the call ended)
    got = []
    assert pool.map_async(abs, [], callback=got.append).get() == []
    assert got == [[]]


def test_the_callbacks_of_calls_in_flight_together_run_on_one_thread(pool):
    # one at a time, as on multiprocessing's result-handler thread
    threads = []
    results = [pool.apply_async(helpers.add, (i,), callback=lambda _: threads.append(threading.get_ident()))
               for i in range(20)]
    results.append(pool.map_async(abs, range(9), 2, callback=lambda _: threads.append(threading.get_ident())))
    for r in results:
        r.get()
    assert len(threads) == 21 and len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_a_callback_that_raises_is_reported_and_the_result_is_still_ready(pool, monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", seen.append)

    def bad(value):
        raise RuntimeError(f"callback got {value}")

    result = pool.apply_async(helpers.add, (4,), callback=bad)
    assert result.get() == 4
    assert len(seen) == 1 and seen[0].exc_type is RuntimeError and "callback got 4" in str(seen[0].exc_value)
    # the pool still works, its later callbacks too
    got = []
    assert pool.apply_async(helpers.add, (5,), callback=got.append).get() == 5
    assert got == [5]


def test_a_callback_may_use_the_pool(pool):
    inner = []

    def again(value):
        inner.append(pool.apply_async(helpers.add, (value, 1)))

    pool.apply_async(helpers.add, (1,), callback=again).get()
    assert inner[0].get() == 2


def test_terminate_from_a_callback_does_not_wait_for_itself():
    pool = Pool(1)
    done = threading.Event()

    def stop(_):
        pool.terminate()
        done.set()

    pool.apply_async(helpers.add, (1,), callback=stop).get()
    assert done.is_set()
    pool.join()


# -- closing, joining, terminating -------------------------------------------------------------

def test_a_closed_pool_runs_what_it_took_and_refuses_the_rest():
    got = []
    pool = Pool(2)
    results = [pool.apply_async(helpers.add, (i, i), callback=got.append) for i in range(10)]
    mapped = pool.map_async(abs, range(-10, 0), 3, callback=got.append)
    it = pool.imap(abs, range(-5, 0))
    pool.close()
    pool.close()  # again: nothing
    for call in (
        lambda: pool.apply(helpers.add, (1,)),
        lambda: pool.apply_async(helpers.add, (1,)),
        lambda: pool.map(abs, [1]),
        lambda: pool.map_async(abs, [1]),
        lambda: pool.starmap(pow, [(1, 1)]),
        lambda: pool.starmap_async(pow, [(1, 1)]),
        lambda: pool.imap(abs, [1]),
        lambda: pool.imap_unordered(abs, [1]),
        lambda: pool.__enter__(),
    ):
        with pytest.raises(ValueError, match="^Pool not running$"):
            call()
    pool.join()
    # every task ran and every callback ran before join() returned
    assert all(r.ready() for r in results) and mapped.ready()
    assert sorted(x for x in got if not isinstance(x, list)) == [2 * i for i in range(10)]
    assert [x for x in got if isinstance(x, list)] == [list(range(10, 0, -1))]
    assert list(it) == [5, 4, 3, 2, 1]
    pool.join()  # again


def test_join_of_a_running_pool_is_refused():
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="Pool is still running"):
            pool.join()


def test_terminate_interrupts_running_tasks_and_ends_their_results(tasks):
    started = I.create_queue()
    errors = []
    pool = Pool(2)
    running = [pool.apply_async(tasks.signal_then_spin, (started,), error_callback=errors.append) for _ in range(2)]
    queued = pool.apply_async(helpers.add, (1,), error_callback=errors.append)
    mapped = pool.map_async(abs, range(10), 1, error_callback=errors.append)
    it = pool.imap(tasks.signal_then_spin, itertools.repeat(started))
    for _ in range(2):
        assert started.get(timeout=30) == "running"
    pool.terminate()
    for result in (*running, mapped):
        with pytest.raises(CancelledError, match="terminated"):
            result.get()
    assert queued.ready()  # it ran, or it ended with the pool
    assert outcome(queued.get) in (("ok", 1), ("raised", CancelledError, "the pool was terminated before this task finished"))
    with pytest.raises(CancelledError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert len(errors) == 3 + (not queued.successful())  # once per call
    pool.join()
    pool.terminate()  # again: nothing


def test_leaving_the_with_block_terminates(tasks):
    started = I.create_queue()
    with Pool(1) as pool:
        result = pool.apply_async(tasks.signal_then_spin, (started,))
        assert started.get(timeout=30) == "running"
    with pytest.raises(CancelledError):
        result.get()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(abs, (1,))


def test_an_endless_imap_returns_at_once_and_terminate_stops_its_reading(pool):
    it = pool.imap(abs, itertools.count())
    assert [next(it) for _ in range(50)] == list(range(50))
    unordered = pool.imap_unordered(abs, itertools.count(), chunksize=5)
    assert len({next(unordered) for _ in range(20)}) == 20
    pool.terminate()  # the feeders stop; no thread is left (checked after each test)


def test_an_exception_in_one_task_loses_no_other(pool):
    got = collect(pool.imap(helpers.fails_on_seven, range(50)))
    assert [g for g in got if g[0] == "ok"] == [("ok", x) for x in range(50) if x % 7]
    assert len(got) == 50
    results = [pool.apply_async(helpers.fails_on_seven, (x,)) for x in range(50)]
    for r in results:
        r.wait()
    assert [r.successful() for r in results] == [bool(x % 7) for x in range(50)]


# -- options -----------------------------------------------------------------------------

def test_initializer_and_initargs_run_in_each_worker():
    with Pool(2, helpers.init_worker, ("ready",)) as pool:
        assert pool.apply(helpers.read_init) == ["ready"]
        assert all(v == ["ready"] for v in pool.starmap(helpers.read_init, [()] * 4, 1))


def test_a_failing_initializer_breaks_the_pool_instead_of_restarting_workers_forever():
    errors = []
    with Pool(2, initializer=helpers.failing_init) as pool:
        result = pool.apply_async(helpers.add, (1,), error_callback=errors.append)
        with pytest.raises(BrokenInterpreterPool):
            result.get()
        with pytest.raises(BrokenInterpreterPool):
            pool.map(abs, range(4))
    assert len(errors) == 1


def test_maxtasksperchild_renews_the_interpreter_and_a_chunk_is_one_task():
    with Pool(1, maxtasksperchild=2) as pool:
        ids = [pool.apply(helpers.current_interpreter_id) for _ in range(4)]
        assert ids[0] == ids[1] != ids[2] == ids[3]
        chunked = pool.map(helpers.interpreter_id_of, range(6), chunksize=3)  # 2 tasks
        assert len(set(chunked[:3])) == 1 and len(set(chunked[3:])) == 1
    with Pool(1, maxtasksperchild=1) as pool:
        chunked = pool.map(helpers.interpreter_id_of, range(6), chunksize=3)
        assert chunked[0] == chunked[2] != chunked[3] == chunked[5]


def test_the_default_chunksize_splits_the_work_as_multiprocessing_does():
    # multiprocessing: a chunk of ceil(len / (4 * processes)); here 100 / 8 -> 13, so
    # 8 chunks and 8 interpreters with maxtasksperchild=1.
    with Pool(2, maxtasksperchild=1) as pool:
        ids = pool.map(helpers.interpreter_id_of, range(100))
    assert len(set(ids)) == 8
    assert ids[0] == ids[12] != ids[13]


def test_a_function_that_needs_a_refusing_module_runs_in_a_process(single_phase_dir, monkeypatch):
    monkeypatch.syspath_prepend(single_phase_dir)
    monkeypatch.syspath_prepend(FIXTURES)
    import refusing_tasks

    with Pool(2) as pool:
        with pytest.warns(FallbackWarning, match="refusing_tasks.where runs in a process worker"):
            values = pool.map(refusing_tasks.where, range(6), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            single = pool.apply(refusing_tasks.where, (5,))
            unordered = sorted(v for v, _, _ in pool.imap_unordered(refusing_tasks.where, range(3)))
        assert [v for v, _, _ in values] == [2 * x for x in range(6)]
        assert all(pid != os.getpid() for _, pid, _ in values) and single[0] == 10
        assert unordered == [0, 2, 4]
        assert pool.apply(helpers.current_pid) == os.getpid()  # the rest stays in interpreters
    assert not multiprocessing.active_children()


def test_terminate_ends_a_task_running_in_a_process(single_phase_dir, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(single_phase_dir)
    monkeypatch.syspath_prepend(FIXTURES)
    import refusing_tasks

    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    os.mkfifo(started)
    os.mkfifo(release)
    pool = Pool(1)
    with pytest.warns(FallbackWarning):
        result = pool.apply_async(refusing_tasks.block, (started, release))
        with open(started) as f:  # the task opens it once it runs, in its process
            assert f.read() == "started"
    pool.terminate()  # the process is ended: the task never reads "release"
    with pytest.raises(CancelledError):
        result.get()
    pool.join()
    assert not multiprocessing.active_children()


def test_an_argument_that_cannot_be_sent_fails_its_own_result_only(pool):
    errors = []
    bad = pool.apply_async(helpers.same, (helpers.Unpicklable(),), error_callback=errors.append)
    with pytest.raises(Exception, match="pickl"):
        bad.get()
    assert len(errors) == 1
    mixed = pool.map_async(helpers.same, [1, helpers.Unpicklable(), 3], chunksize=1)
    with pytest.raises(Exception, match="pickl"):
        mixed.get()
    assert pool.apply(helpers.add, (2,)) == 2


# -- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"processes": 0}, ValueError, "Number of processes must be at least 1"),
    ({"processes": -3}, ValueError, "Number of processes must be at least 1"),
    ({"processes": 1.5}, TypeError, "processes must be an int or None, got 1.5"),
    ({"processes": True}, TypeError, "processes must be an int"),
    ({"processes": "2"}, TypeError, "processes must be an int"),
    ({"maxtasksperchild": 0}, ValueError, "maxtasksperchild must be a positive int or None"),
    ({"maxtasksperchild": -1}, ValueError, "maxtasksperchild must be a positive int or None"),
    ({"maxtasksperchild": 1.5}, ValueError, "maxtasksperchild must be a positive int or None, got 1.5"),
    ({"maxtasksperchild": True}, ValueError, "maxtasksperchild must be a positive int"),
    ({"initializer": 3}, TypeError, "initializer must be a callable, got 3"),
    ({"initargs": 5}, TypeError, "initargs must be a tuple of arguments for the initializer, got 5"),
])
def test_bad_pool_arguments_are_refused_with_the_fix(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(")):
        Pool(**kwargs)


@pytest.mark.parametrize("kwargs", [{"processes": 0}, {"processes": -3}, {"maxtasksperchild": 0},
                                    {"maxtasksperchild": -1}, {"initializer": 3}])
def test_bad_pool_arguments_raise_what_multiprocessing_raises(kwargs):
    with pytest.raises(Exception) as theirs:
        multiprocessing.pool.Pool(**{"processes": 1, **kwargs}).terminate()  # refused before a process starts
    with pytest.raises(Exception) as ours:
        Pool(**{"processes": 1, **kwargs})
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize("call, error, message", [
    (lambda p: p.apply_async(3), TypeError, "apply_async() func must be callable, got 3"),
    (lambda p: p.apply_async(abs, 5), TypeError, "apply_async() args must be a tuple of arguments, got 5"),
    (lambda p: p.apply_async(abs, (1,), [1]), TypeError, "kwds must be a dict of keyword arguments"),
    (lambda p: p.apply_async(abs, (1,), callback=3), TypeError, "apply_async() callback must be callable or None"),
    (lambda p: p.map_async(abs, [1], error_callback="x"), TypeError, "error_callback must be callable or None"),
    (lambda p: p.map(abs, 5), TypeError, "map() needs an iterable, got 5"),
    (lambda p: p.map(None, [1]), TypeError, "map() func must be callable, got None"),
    (lambda p: p.map(abs, [1], 0), ValueError, "map() chunksize must be 1+, not 0"),
    (lambda p: p.map(abs, [1], -2), ValueError, "chunksize must be 1+, not -2"),
    (lambda p: p.map(abs, [1], 1.5), TypeError, "map() chunksize must be an int, got 1.5"),
    (lambda p: p.starmap(pow, [(1, 1)], "2"), TypeError, "starmap() chunksize must be an int"),
    (lambda p: p.imap(abs, [1], 0), ValueError, "imap() chunksize must be 1+, not 0"),
    (lambda p: p.imap_unordered(abs, [1], None), TypeError, "imap_unordered() chunksize must be an int"),
    (lambda p: p.imap(abs, 5), TypeError, "imap() needs an iterable, got 5"),
])
def test_bad_call_arguments_are_refused_at_once(pool, call, error, message):
    with pytest.raises(error) as info:
        call(pool)
    assert message in str(info.value)
    assert pool.apply(abs, (-1,)) == 1  # the pool is unharmed


def test_an_unclosed_pool_that_is_dropped_warns_as_multiprocessing_does():
    pool = Pool(1)
    assert pool.apply(abs, (-1,)) == 1
    with pytest.warns(ResourceWarning, match="unclosed running pool"):
        del pool
        import gc

        gc.collect()


# -- the program's end ---------------------------------------------------------------------

def run_script(source, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_pool_never_closed_finishes_its_tasks_and_callbacks_at_the_program_end(tmp_path):
    proc = run_script(
        """
        import sys
        from manygil import Pool, _faults
        from manygil.sync import Event

        def work(n):
            return n * 10

        def fail(n):
            raise ValueError(f"bad {n}")

        def block(event):
            return event.wait(60)

        def report(value):
            sys.stdout.write(f"done {value}\\n")
            sys.stdout.flush()

        if __name__ == "__main__":
            # Both workers are held until the program's end begins: the tasks queued
            # behind them run then (whatever the threads' timing).
            ending = Event()
            hook = _faults.hooked("program.ending", ending.set)
            hook.__enter__()  # for the program's end (kept: a collected hook would end its block)
            pool = Pool(2)
            for _ in range(2):
                pool.apply_async(block, (ending,), callback=report)
            for i in range(6):
                pool.apply_async(work, (i,), callback=report)
            pool.map_async(work, range(3), callback=report)
            pool.starmap_async(fail, [(1,)], error_callback=report)
            it = pool.imap_unordered(work, range(4))
            print("exiting", flush=True)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "exiting"
    assert sorted(lines[1:]) == sorted(
        [f"done {i * 10}" for i in range(6)] + ["done [0, 10, 20]", "done bad 1", "done True", "done True"]
    ), proc.stdout + proc.stderr
    assert proc.stderr == ""


def test_a_script_closed_and_joined_or_in_a_with_block_exits_cleanly(tmp_path):
    proc = run_script(
        """
        from manygil import Pool

        def square(x):
            return x * x

        if __name__ == "__main__":
            with Pool(2) as pool:
                print(pool.map(square, range(5)))
                print(sorted(pool.imap_unordered(square, range(3))))
            pool = Pool(2)
            r = pool.apply_async(square, (7,))
            pool.close()
            pool.join()
            print(r.get())
            dropped = Pool(1)  # never closed, never used
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[0, 1, 4, 9, 16]\n[0, 1, 4]\n49\n"


def test_a_pool_never_closed_with_an_endless_imap_lets_the_program_end(tmp_path):
    # its feeder reads on until the executor takes no more tasks, at the program's end
    proc = run_script(
        """
        import itertools
        from manygil import Pool

        def work(n):
            return n + 1

        if __name__ == "__main__":
            pool = Pool(2)
            it = pool.imap(work, itertools.count())
            unordered = pool.imap_unordered(work, itertools.count(), chunksize=3)
            print(next(it), next(it), flush=True)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1 2\n" and proc.stderr == ""


def test_a_broken_pool_stops_reading_an_endless_imap():
    with Pool(1, initializer=helpers.failing_init) as pool:
        it = pool.imap(abs, itertools.count())
        with pytest.raises(BrokenInterpreterPool):
            next(it)
        for _ in range(2 * 2):  # at most a window of chunks was in flight
            try:
                next(it)
            except StopIteration:
                break
            except BrokenInterpreterPool:
                pass
        else:
            pytest.fail("the imap of a broken pool went on")
