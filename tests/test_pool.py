from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError, as_completed, wait

import pytest

from manygil import BrokenInterpreterPool, InterpreterPoolExecutor, RemoteError, _native, _transport
from manygil import interpreters as I
from manygil.shared import SharedBuffer

from . import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def pool(request):
    with InterpreterPoolExecutor(request.param, grace_period=0.5) as p:
        yield p


def test_submit_and_result(pool):
    assert pool.submit(helpers.add, 1, b=2).result(timeout=30) == 3
    assert pool.submit(os.getpid).result(timeout=30) == os.getpid()
    assert pool.submit(helpers.current_interpreter_id).result(timeout=30) != I.get_main().id


def test_map_keeps_order_with_and_without_chunks(pool):
    data = list(range(-50, 50))
    assert list(pool.map(abs, data)) == [abs(x) for x in data]
    assert list(pool.map(abs, data, chunksize=7)) == [abs(x) for x in data]
    assert list(pool.map(helpers.add, [1, 2, 3], [10, 20])) == [11, 22]
    assert list(pool.map(abs, [])) == []
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(abs, data, chunksize=0)


def test_map_timeout(pool):
    q = I.create_queue()
    results = pool.map(helpers.wait_on, [q])
    with pytest.raises(TimeoutError):
        next(pool.map(helpers.wait_on, [q], timeout=0.1))
    q.put("a")
    q.put("b")
    assert list(results) in (["a"], ["b"])  # whichever waiter got "a", both finish
    pool.shutdown(wait=True)


def test_exception_keeps_its_type_and_remote_traceback(pool):
    future = pool.submit(helpers.boom, "bad")
    with pytest.raises(ValueError, match="bad") as info:
        future.result(timeout=30)
    cause = info.value.__cause__
    assert type(cause) is I.ExecutionFailed  # as 3.14's pool chains it
    assert cause.excinfo.type.__name__ == "ValueError" and cause.excinfo.msg == "bad"
    assert "in boom" in str(cause)
    # other tasks are not affected
    assert pool.submit(helpers.add, 1, 1).result(timeout=30) == 2


def test_an_exception_whose_init_takes_other_arguments_comes_back_as_itself(pool):
    # It came back as RemoteError('NeedsTwoArgs: 1 and 2'): unpickling called
    # NeedsTwoArgs('1 and 2'), which its __init__ refuses, so `except NeedsTwoArgs`
    # missed it (issue 29).  It is now made without its __init__, as copy does.
    with pytest.raises(helpers.NeedsTwoArgs, match="1 and 2") as info:
        pool.submit(helpers.raise_needs_two_args).result(timeout=30)
    assert info.value.args == ("1 and 2",)
    assert "raise_needs_two_args" in info.value.__cause__.excinfo.errdisplay  # the worker's traceback


def test_exception_that_cannot_be_rebuilt_arrives_as_remote_error(pool):
    with pytest.raises(RemoteError, match="BadReduceError: 1 and 2") as info:
        pool.submit(helpers.raise_unrebuildable).result(timeout=30)
    assert info.value.excinfo.type.__name__ == "BadReduceError"
    assert "raise_unrebuildable" in info.value.excinfo.errdisplay


@pytest.mark.parametrize("kind,exc_type", [("exit", SystemExit), ("interrupt", KeyboardInterrupt), ("memory", MemoryError)])
def test_base_exceptions_are_the_tasks_own(pool, kind, exc_type):
    futures = [pool.submit(helpers.add, i, 1) for i in range(4)]
    bad = pool.submit(helpers.raise_base, kind)
    futures += [pool.submit(helpers.add, i, 2) for i in range(4)]
    with pytest.raises(exc_type):
        bad.result(timeout=30)
    assert [f.result(timeout=30) for f in futures] == [1, 2, 3, 4, 2, 3, 4, 5]


def test_unpicklable_function_fails_at_submit(pool, monkeypatch):
    monkeypatch.setattr(_transport, "_cloudpickle", None)
    with pytest.raises(I.NotShareableError, match="define it at module level or install cloudpickle"):
        pool.submit(lambda: 1)
    with pytest.raises(I.NotShareableError, match="lock"):
        pool.submit(helpers.add, threading.Lock(), 1)


def test_the_hint_of_what_cannot_be_sent_fits_its_cause(pool):
    # Each ended with "define it at module level", which fits only what pickle sends by
    # name (issue 23).
    # (Nested built-ins cross however deep: the copier sends them, test_copier.py.)
    deep = helpers.make_deep_objects(100_000)
    with pytest.raises(I.NotShareableError, match="nested too deeply for pickle: send a flatter structure$"):
        pool.submit(helpers.add, deep)
    with pytest.raises(I.NotShareableError, match="nested too deeply") as info:
        pool.submit(helpers.make_deep_objects, 100_000).result(timeout=60)
    assert "module level" not in str(info.value)
    buf = SharedBuffer(16)
    buf.release()
    with pytest.raises(I.NotShareableError, match=r"\(ValueError: cannot use this SharedBuffer: it was released\)$"):
        pool.submit(helpers.add, buf)
    with pytest.raises(I.NotShareableError, match="define __reduce__|__reduce__") as info:
        pool.submit(helpers.add, helpers.Unpicklable())
    assert "module level" in str(info.value)  # ...of a class defined at module level


@pytest.mark.parametrize("make", ["queue.Queue", "queue.SimpleQueue", "multiprocessing.Queue"])
def test_a_queue_of_threads_or_processes_is_named_with_the_queue_to_use(pool, make):
    # It said "cannot send lock object ... use manygil.sync.Lock instead" (issue 29).
    import multiprocessing
    import queue

    q = {"queue.Queue": queue.Queue, "queue.SimpleQueue": queue.SimpleQueue,
         "multiprocessing.Queue": multiprocessing.Queue}[make]()
    try:
        with pytest.raises(I.NotShareableError) as info:
            pool.submit(helpers.add, q)
    finally:
        if make == "multiprocessing.Queue":
            q.close()
            q.join_thread()
    message = str(info.value)
    assert f"cannot send {type(q).__qualname__} object" in message, message
    assert "use manygil.interpreters.Queue" in message and "Lock" not in message


def test_lambda_and_closure_with_cloudpickle(pool):
    pytest.importorskip("cloudpickle")
    k = 10
    assert pool.submit(lambda x: x + k, 5).result(timeout=30) == 15


class _Counter:
    """A class defined in a function below: by value, through cloudpickle's own loader."""


def test_functions_sent_by_value_load_without_importing_cloudpickle():
    # Importing cloudpickle costs a new interpreter 18 ms and 47 modules; manygil's
    # pickles name its own copies of cloudpickle's function loaders (manygil._byvalue).
    pytest.importorskip("cloudpickle")
    k, empty = 3, []

    def uses_closure_and_module(x, *, scale=2):
        inner = lambda: x * k * scale  # a closure inside the function
        return inner(), os.path.basename("/a/b"), "cloudpickle" in sys.modules, empty

    def factorial(n):  # its closure holds itself: an empty cell, filled once it exists
        return 1 if n <= 1 else n * factorial(n - 1)

    with InterpreterPoolExecutor(1) as pool:
        assert pool.submit(uses_closure_and_module, 5).result(timeout=60) == (30, "b", False, [])
        assert pool.submit(factorial, 5).result(timeout=60) == 120

        class Local(_Counter):
            def count(self):
                return 7

        # A class by value still loads, through cloudpickle (which it imports then).
        assert pool.submit(lambda: (Local().count(), "cloudpickle" in sys.modules)).result(timeout=60) == (7, True)


def test_importing_the_pool_does_not_import_cloudpickle():
    # A worker imports the caller's script, which imports manygil: cloudpickle is loaded
    # only when something is sent by value.
    code = "import sys, manygil.pool; print('cloudpickle' in sys.modules, 'manygil._transport' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_initializer_runs_in_each_worker():
    with InterpreterPoolExecutor(2, initializer=helpers.init_worker, initargs=("ready",)) as pool:
        assert pool.submit(helpers.read_init).result(timeout=30) == ["ready"]


def test_failing_initializer_breaks_the_pool():
    pool = InterpreterPoolExecutor(2, initializer=helpers.failing_init)
    future = pool.submit(helpers.add, 1)
    with pytest.raises(BrokenInterpreterPool) as info:
        future.result(timeout=30)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "initializer exploded" in str(info.value.__cause__)
    with pytest.raises(BrokenInterpreterPool):
        pool.submit(helpers.add, 1)
    pool.shutdown(wait=True)


def test_a_broken_pool_refuses_tasks_routed_to_processes_too():
    # _submit_fallback checked only shutdown: a broken pool still took them (issue 30).
    pool = InterpreterPoolExecutor(2, initializer=helpers.failing_init, fallback="shared-gil")
    pool.route(helpers.add, "shared-gil")
    with pytest.raises(BrokenInterpreterPool):
        pool.submit(helpers.cpu, 10).result(timeout=30)
    with pytest.raises(BrokenInterpreterPool, match="initializer"):
        pool.submit(helpers.add, 1)
    pool.shutdown(wait=True)


def test_max_tasks_per_worker_replaces_the_interpreter():
    with InterpreterPoolExecutor(1, max_tasks_per_worker=2) as pool:
        ids = [pool.submit(helpers.current_interpreter_id).result(timeout=30) for _ in range(6)]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[4] == ids[5]
    assert len(set(ids)) == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        InterpreterPoolExecutor(0)
    with pytest.raises(ValueError, match="max_tasks_per_worker must be greater than 0"):
        InterpreterPoolExecutor(1, max_tasks_per_worker=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        InterpreterPoolExecutor(1, initializer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task_timeout must be a positive number"):
        InterpreterPoolExecutor(1, task_timeout=-1)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match="fn must be callable"):
            pool.submit(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="seconds must be a positive number"):
            pool.with_timeout(0)


@pytest.mark.parametrize("value, error", [
    (float("nan"), ValueError), (-1, ValueError), (0, ValueError), ("x", TypeError), (True, TypeError),
])
def test_a_time_limit_that_is_not_a_positive_number_is_refused(value, error):
    # NaN was accepted (and made no limit); "x" failed later, in the watchdog.
    with pytest.raises(error, match="task_timeout must be a positive number of seconds or None"):
        InterpreterPoolExecutor(1, task_timeout=value)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(error, match="seconds must be a positive number of seconds or None"):
            pool.with_timeout(value)


@pytest.mark.parametrize("value, error", [
    (float("inf"), ValueError), (float("nan"), ValueError), (-0.5, ValueError), (None, TypeError), ("x", TypeError),
])
def test_a_grace_period_that_is_not_a_finite_number_is_refused(value, error):
    # Each was accepted, and the pool's watchdog died at the first time limit.
    with pytest.raises(error, match="grace_period must be a finite number of seconds >= 0"):
        InterpreterPoolExecutor(1, grace_period=value)


def test_an_infinite_time_limit_is_no_limit_and_a_nan_wait_is_refused():
    with InterpreterPoolExecutor(1, task_timeout=float("inf")) as pool:
        future = pool.submit(helpers.add, 1, 2)
        assert future.result(timeout=float("inf")) == 3
        assert pool.with_timeout(float("inf")).submit(helpers.add, 2).result(timeout=30) == 2
        with pytest.raises(ValueError, match="timeout must be a number of seconds, got nan"):
            future.result(timeout=float("nan"))  # it timed out at once
        with pytest.raises(ValueError, match="got nan"):
            future.exception(timeout=float("nan"))


@pytest.mark.parametrize("value", [1.5, float("nan"), float("inf"), True, "2"])
def test_a_count_that_is_not_an_int_is_refused(value):
    # Each was accepted (NaN compared as "not <= 0"), and the pool counted with it (issue 30).
    with pytest.raises(TypeError, match="max_workers must be an int"):
        InterpreterPoolExecutor(value)
    with pytest.raises(TypeError, match="max_tasks_per_worker must be an int"):
        InterpreterPoolExecutor(1, max_tasks_per_worker=value)
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match="chunksize must be an int"):
            pool.map(abs, [1], chunksize=value)


def test_submit_after_shutdown():
    pool = InterpreterPoolExecutor(1)
    pool.submit(helpers.add, 1).result(timeout=30)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        pool.submit(helpers.add, 1)
    unused = InterpreterPoolExecutor(1)
    unused.shutdown()


def test_cancel_before_running():
    q = I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        blocker = pool.submit(helpers.wait_on, q)
        queued = pool.submit(helpers.add, 1)
        assert queued.cancel()
        assert queued.cancelled()
        q.put("go")
        assert blocker.result(timeout=30) == "go"
        with pytest.raises(CancelledError):
            queued.result()


def test_cancel_a_running_task_interrupts_it_and_the_worker_goes_on():
    with InterpreterPoolExecutor(1, grace_period=5) as pool:
        first_id = pool.submit(helpers.current_interpreter_id).result(timeout=30)
        running = pool.submit(helpers.spin)
        deadline = time.monotonic() + 10
        while not running.running():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert running.cancel()
        assert running.cancelled()
        with pytest.raises(CancelledError):
            running.result(timeout=1)
        # the same interpreter serves the next task: it was interrupted, not replaced
        assert pool.submit(helpers.current_interpreter_id).result(timeout=30) == first_id


def test_time_limit_interrupts_a_running_task():
    with InterpreterPoolExecutor(1, grace_period=5) as pool:
        first_id = pool.submit(helpers.current_interpreter_id).result(timeout=30)
        future = pool.with_timeout(0.2).submit(helpers.spin)
        with pytest.raises(TimeoutError, match="spin exceeded its time limit of 0.2 s"):
            future.result(timeout=30)
        assert pool.submit(helpers.current_interpreter_id).result(timeout=30) == first_id
    with InterpreterPoolExecutor(1, task_timeout=0.2) as pool:
        with pytest.raises(TimeoutError):
            pool.submit(helpers.spin).result(timeout=30)
        assert pool.with_timeout(None).submit(helpers.add, 2).result(timeout=30) == 2  # a stall is no failure


def test_task_stuck_in_c_is_abandoned_and_the_pool_keeps_serving():
    r, w = os.pipe()
    with InterpreterPoolExecutor(1, grace_period=0.2) as pool:
        first_id = pool.submit(helpers.current_interpreter_id).result(timeout=30)
        stuck = pool.with_timeout(0.2).submit(helpers.block_in_c, r)  # deaf to interrupts
        with pytest.raises(TimeoutError):
            stuck.result(timeout=30)
        replacement = pool.submit(helpers.current_interpreter_id).result(timeout=30)
        assert replacement != first_id
        os.write(w, b"x")  # release the abandoned worker
    os.close(r)
    os.close(w)


def test_shutdown_cancel_futures():
    q, started = I.create_queue(), I.create_queue()
    pool = InterpreterPoolExecutor(1)
    blocker = pool.submit(helpers.signal_then_wait, started, q)
    queued = [pool.submit(helpers.add, i) for i in range(5)]
    started.get(timeout=30)
    queued[-1].add_done_callback(lambda _: q.put("go"))  # released by the cancellation
    pool.shutdown(wait=True, cancel_futures=True)
    assert blocker.result() == "go"
    assert all(f.cancelled() for f in queued)


def test_shutdown_without_wait_still_finishes_the_work():
    pool = InterpreterPoolExecutor(2)
    futures = [pool.submit(helpers.add, i, 1) for i in range(20)]
    pool.shutdown(wait=False)
    assert [f.result(timeout=30) for f in futures] == list(range(1, 21))
    pool.shutdown(wait=True)


def test_as_completed_and_wait(pool):
    futures = [pool.submit(helpers.add, i, 1) for i in range(10)]
    assert sorted(f.result() for f in as_completed(futures, timeout=30)) == list(range(1, 11))
    done, not_done = wait(futures, timeout=30)
    assert len(done) == 10 and not not_done


def test_asyncio_run_in_executor_and_run(pool):
    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(pool, helpers.add, 1, 2)
        b = await pool.run(helpers.add, 3, b=4)
        return a, b

    assert asyncio.run(main()) == (3, 7)


def test_an_interrupt_that_lands_in_a_callback_still_stops_the_task(capfd):
    # Python cannot raise an exception out of a weakref callback (or __del__): it prints
    # it as "Exception ignored" and goes on.  The worker raises the interrupt again, so
    # the task stops and its worker stays (no abandon after the grace period).
    from manygil.sync import Event

    started = Event()
    with InterpreterPoolExecutor(1, grace_period=20) as pool:
        first_id = pool.submit(helpers.current_interpreter_id).result(timeout=30)
        future = pool.submit(helpers.spin_in_a_weakref_callback, started)
        assert started.wait(30)
        assert future.cancel()
        assert pool.submit(helpers.current_interpreter_id).result(timeout=30) == first_id
    assert "TaskInterrupted" not in capfd.readouterr().err


def test_asyncio_to_thread_with_the_pool_as_default_executor_says_what_to_do():
    # It said "cannot pickle '_contextvars.Context' object ... define it at module level",
    # which does not fit: to_thread() wraps every call in its thread's context (issue 29).
    async def main(pool):
        asyncio.get_running_loop().set_default_executor(pool)
        with pytest.raises(I.NotShareableError) as info:
            await asyncio.to_thread(helpers.add, 1, 2)
        assert await pool.run(helpers.add, 1, 2) == 3  # what to use instead
        return str(info.value)

    with InterpreterPoolExecutor(1) as pool:
        message = asyncio.run(main(pool))
    assert "asyncio.to_thread()" in message and "set_default_executor" in message
    assert "await pool.run(fn, ...)" in message and "module level" not in message


def test_the_pool_can_be_asyncios_default_executor():
    # loop.set_default_executor() takes only a ThreadPoolExecutor: the pool is one by
    # type, as the standard library's InterpreterPoolExecutor is.
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures.thread import BrokenThreadPool

    from manygil import BrokenInterpreterPool

    assert issubclass(BrokenInterpreterPool, BrokenThreadPool)
    pool = InterpreterPoolExecutor(1)
    assert isinstance(pool, ThreadPoolExecutor)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(pool)
        return await loop.run_in_executor(None, helpers.current_interpreter_id)

    try:
        assert asyncio.run(main()) != helpers.current_interpreter_id()
        # asyncio.run() shut its default executor down, as it does a ThreadPoolExecutor.
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(helpers.add, 1, 2)
    finally:
        pool.shutdown()


def test_asyncio_cancel_interrupts_the_running_task():
    with InterpreterPoolExecutor(1, grace_period=5) as pool:
        first_id = pool.submit(helpers.current_interpreter_id).result(timeout=30)

        async def main():
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.run(helpers.spin), 0.3)

        asyncio.run(main())
        assert pool.submit(helpers.current_interpreter_id).result(timeout=30) == first_id


def test_map_progress_bar(pool, capsys, monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no tqdm monitor thread
    assert list(pool.map(abs, range(-5, 5), progress=True)) == [abs(x) for x in range(-5, 5)]
    assert "10/10" in capsys.readouterr().err


def test_ten_thousand_tasks_every_future_resolved_once():
    n = 10_000
    with InterpreterPoolExecutor(2, grace_period=5) as pool:
        timed = pool.with_timeout(5)
        futures = []
        for i in range(n):
            if i % 1000 == 999:
                futures.append(pool.with_timeout(0.1).submit(helpers.mixed, i))
            else:
                futures.append(timed.submit(helpers.mixed, i))
        calls = [0] * n
        for i, f in enumerate(futures):
            f.add_done_callback(lambda _f, i=i: calls.__setitem__(i, calls[i] + 1))
        done, not_done = wait(futures, timeout=120)
        assert not not_done
    assert calls == [1] * n
    for i, f in enumerate(futures):
        if i % 1000 == 999:
            assert isinstance(f.exception(), TimeoutError)
        elif i % 7 == 0:
            assert isinstance(f.exception(), ValueError)
        else:
            assert f.result() == i * 2


def test_own_gil_refusal_names_the_module_and_the_way_out(single_phase_dir, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(single_phase_dir)  # workers take the caller's sys.path
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(ImportError) as info:
            pool.submit(importlib.import_module, "mg_single_phase").result(timeout=30)
    message = str(info.value)  # manygil's explanation first (issue 29)
    assert message.startswith("manygil: the extension module mg_single_phase refuses"), message
    assert "shared_gil=True" in message


def test_shared_gil_pool_loads_single_phase_extensions(single_phase_dir, monkeypatch):
    monkeypatch.syspath_prepend(single_phase_dir)
    with InterpreterPoolExecutor(1, shared_gil=True) as pool:
        assert pool.submit(helpers.add, 1, 2).result(timeout=30) == 3
        assert pool.submit(_import_name, "mg_single_phase").result(timeout=30) == "mg_single_phase"


def _import_name(name):
    import importlib

    return importlib.import_module(name).__name__


def _run_script(body: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


def test_functions_from_a_main_script_cross_by_reference(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent("""
        from manygil import InterpreterPoolExecutor

        def triple(x):
            return 3 * x

        if __name__ == "__main__":
            with InterpreterPoolExecutor(2) as pool:
                print(list(pool.map(triple, range(5))))
    """))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 3, 6, 9, 12]"


def test_classes_and_exceptions_of_a_main_script_come_back_as_themselves(tmp_path):
    script = tmp_path / "invoices.py"
    script.write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from manygil import InterpreterPoolExecutor, interpreters

        @dataclass
        class Invoice:
            total: int

        class InvoiceError(Exception):
            pass

        def make(n):
            return Invoice(2 * n)

        def check(invoice):
            if invoice.total < 0:
                raise InvoiceError(f"negative total {invoice.total}")
            return isinstance(invoice, Invoice)

        if __name__ == "__main__":
            with InterpreterPoolExecutor(2) as pool:
                invoice = pool.submit(make, 21).result()
                print(type(invoice) is Invoice, invoice)
                print(pool.submit(check, Invoice(1)).result())
                try:
                    pool.submit(check, Invoice(-1)).result()
                except InvoiceError as exc:
                    print("caught", exc)
            interp = interpreters.create()
            print(type(interp.call(make, 1)) is Invoice)
            interp.close()
    """))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True Invoice(total=42)", "True", "caught negative total -1", "True"]


def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent("""
        from manygil import InterpreterPoolExecutor

        def square(x):
            return x * x

        with InterpreterPoolExecutor(2) as pool:
            print(list(pool.map(square, range(4))))
    """))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert 'The script has no `if __name__ == "__main__":` guard' in proc.stderr
    assert "daemon threads" not in proc.stderr and "Exception ignored" not in proc.stderr

_PRELOAD_SCRIPT = """
    import os, select, sys
    MARKS = int(os.environ["MG_MARKS"])  # a pipe: each import of this script in a worker writes a byte

    if __name__ == "__mg_main__":
        os.write(MARKS, b"x")

    def square(x):
        return x * x

    if __name__ == "__main__":
        from manygil import InterpreterPoolExecutor
        read_end = int(os.environ["MG_READ"])
        with InterpreterPoolExecutor(2) as pool:
            if sys.version_info >= (3, 13):
                # Both workers import the script before any task is submitted.
                for _ in range(2):
                    if not select.select([read_end], [], [], 60)[0]:
                        sys.exit("no worker imported the script before the first task")
                    os.read(read_end, 1)
            print(list(pool.map(square, range(6))))
        os.set_blocking(read_end, False)
        try:
            print("imports during the map:", len(os.read(read_end, 100)))
        except BlockingIOError:
            print("imports during the map:", 0)
"""


def test_workers_import_the_callers_script_before_its_first_task(tmp_path):
    # The first calls of the script's functions do not pay for importing it (3.13+; on
    # 3.12 a worker that imports hashlib, as scripts do through secrets or requests,
    # makes the process abort at exit, so there a task that needs the script imports it).
    script = tmp_path / "preloaded.py"
    script.write_text(textwrap.dedent(_PRELOAD_SCRIPT))
    read_end, write_end = os.pipe()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), MG_MARKS=str(write_end), MG_READ=str(read_end))
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
            pass_fds=(read_end, write_end),
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    late = 0 if sys.version_info >= (3, 13) else 2  # at most 2 workers; both get tasks here
    assert proc.stdout.splitlines()[0] == "[0, 1, 4, 9, 16, 25]"
    assert int(proc.stdout.splitlines()[1].rsplit(" ", 1)[1]) <= late


def test_a_script_without_a_main_guard_still_runs_tasks_that_need_none_of_it(tmp_path):
    # The workers import the script as they start, which starts a pool there: refused,
    # and kept for a task that needs the script; these tasks do not, and run.
    script = tmp_path / "no_guard_builtins.py"
    script.write_text(textwrap.dedent("""
        import math
        from manygil import InterpreterPoolExecutor

        print("top level")
        with InterpreterPoolExecutor(2) as pool:
            print(list(pool.map(math.factorial, range(6))))
    """))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # "top level" also comes from each worker that imported the script, as with spawn; a
    # worker that starts after the tasks are done prints it after the result.
    lines = proc.stdout.splitlines()
    assert lines.count("[1, 1, 2, 6, 24, 120]") == 1
    assert set(lines) == {"top level", "[1, 1, 2, 6, 24, 120]"}
    assert lines[0] == "top level"


def test_pool_shut_down_cleanly_at_exit_with_tasks_in_flight():
    proc = _run_script("""
        import sys
        sys.path.insert(0, "tests")
        import helpers
        from manygil import InterpreterPoolExecutor
        pool = InterpreterPoolExecutor(2)
        for i in range(4):
            # one write per line: callbacks run on two worker threads at once
            pool.submit(helpers.sleep_then, 0.2, i).add_done_callback(
                lambda f: sys.stdout.write(f"done {f.result()}\\n"))
        print("exiting", flush=True)
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines.count("done") == 4 and proc.stdout.index("exiting") < proc.stdout.index("done")


def test_main_script_that_imports_a_refusing_module(tmp_path, single_phase_dir):
    script = tmp_path / "uses_single_phase.py"
    script.write_text(textwrap.dedent("""
        import sys
        import mg_single_phase  # refuses an own GIL: the worker cannot import this script
        from manygil import InterpreterPoolExecutor, interpreters

        def twice(x):
            return 2 * x, interpreters.get_current().id

        def uses_it(x):
            return mg_single_phase, x

        if __name__ == "__main__":
            # The function is sent again by value, without the script's imports, with or
            # without a fallback.
            for fallback in ("process", None):
                with InterpreterPoolExecutor(1, fallback=fallback) as pool:
                    value, where = pool.submit(twice, 1).result()
                    print(value, "interpreter" if where > 0 else "main", pool.routes())
            with InterpreterPoolExecutor(1, fallback=None) as pool:
                try:
                    pool.submit(uses_it, 1).result()
                except ImportError as exc:
                    print(exc.__notes__[-1])
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), single_phase_dir]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["2 interpreter {}", "2 interpreter {}"]
    assert "mg_single_phase refuses to load" in lines[2] and 'fallback="process"' in lines[2]


def test_a_task_can_run_its_own_interpreter_and_the_worker_goes_on():
    with InterpreterPoolExecutor(1) as pool:
        assert pool.submit(helpers.call_in_a_new_interpreter, 41).result(timeout=60) == 42
        assert pool.submit(helpers.add, 1, 2).result(timeout=30) == 3
        assert pool.submit(helpers.call_in_a_new_interpreter, 1).result(timeout=60) == 2


@pytest.mark.parametrize("cloudpickle", [True, False], ids=["cloudpickle", "code-object"])
def test_functions_of_an_interactive_main_cross(cloudpickle):
    if cloudpickle:
        pytest.importorskip("cloudpickle")
    proc = _run_script(f"""
        from manygil import InterpreterPoolExecutor, _transport
        if not {cloudpickle}:
            _transport._cloudpickle = None   # plain functions then cross as code objects
        def double(x):
            return 2 * x
        with InterpreterPoolExecutor(1) as pool:
            print(pool.submit(double, 21).result(timeout=30))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"


@pytest.mark.parametrize("size", [10, 1 << 20])
def test_bytes_bytearray_and_memoryview_cross_both_ways(pool, size):
    data = bytes(range(256)) * (size // 256 + 1)
    for value, kind in [(data, bytes), (bytearray(data), bytearray)]:
        back = pool.submit(helpers.same, value).result(timeout=30)
        assert type(back) is kind and back == value
    view = pool.submit(helpers.same, memoryview(data)).result(timeout=30)
    assert type(view) is memoryview and view == memoryview(data)
    assert pool.submit(len, memoryview(data)[::2]).result(timeout=30) == len(data[::2])  # not contiguous
    assert pool.submit(helpers.add, b"", b=data).result(timeout=30) == data  # a keyword argument
    interp = I.create()
    try:
        assert interp.call(helpers.same, data) == data
    finally:
        interp.close()


def test_a_large_argument_of_a_cancelled_task_is_freed():
    start = dict(_native.live())
    q = I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        blocker = pool.submit(helpers.wait_on, q)
        queued = pool.submit(len, b"x" * (1 << 20))
        assert _native.live()["blocks"] == start["blocks"] + 1  # the argument, in a block
        assert queued.cancel()
        q.put("go")
        blocker.result(timeout=30)
    del q
    assert _native.live() == start


def test_map_buffersize_reads_the_input_as_results_are_taken(pool):
    fed = []

    def endless():
        for i in itertools.count():
            fed.append(i)
            yield i

    results = pool.map(abs, endless(), buffersize=3)
    assert len(fed) == 3  # submitted at once, no more
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(fed) <= 5 + 3
    results.close()
    chunked = pool.map(abs, range(-10, 0), chunksize=3, buffersize=2)
    assert list(chunked) == list(range(10, 0, -1))
    with pytest.raises(ValueError, match="buffersize"):
        pool.map(abs, [1], buffersize=0)
    with pytest.raises(TypeError, match="buffersize"):
        pool.map(abs, [1], buffersize=1.5)


def test_an_exception_that_is_false_still_raises(pool):
    with pytest.raises(helpers.FalsyError):
        pool.submit(helpers.raise_falsy).result(timeout=30)


def test_what_cannot_cross_is_refused_with_what_to_send_instead(pool, tmp_path):
    import socket

    cases = [
        (threading.Lock(), "use manygil.sync.Lock instead"),
        (threading.RLock(), "use manygil.sync.RLock instead"),
        (threading.Event(), "use manygil.sync.Event instead"),
        (socket.socket(), "send the address"),
        ((x for x in [1]), "send a list of its items"),
    ]
    with open(tmp_path / "f.txt", "w") as f:
        cases += [(f, "send its path"), ([1, {"file": f}], "send its path")]  # nested too
        for bad, fix in cases:
            with pytest.raises(I.NotShareableError, match=fix):  # even with cloudpickle installed
                pool.submit(helpers.add, bad, 1)
    cases[3][0].close()
    with pytest.raises(I.NotShareableError, match=r"the result of make_generator\(\), a generator object, "
                       r"cannot come back.*return a list of its items") as info:
        pool.submit(helpers.make_generator, 3).result(timeout=30)
    assert "_worker.py" not in info.value.__cause__.excinfo.errdisplay  # no traceback into manygil


def test_what_cannot_cross_is_named_while_another_thread_imports_its_module(pool, monkeypatch):
    # Found by the fault injection (3.15, seed 2896817844): another thread was importing
    # multiprocessing.queues (the process side starting), so the module was in
    # sys.modules without its classes yet, and naming what to send instead of a lock
    # raised AttributeError rather than the NotShareableError.
    import types

    monkeypatch.setitem(sys.modules, "multiprocessing.queues", types.ModuleType("multiprocessing.queues"))
    with pytest.raises(I.NotShareableError, match="use manygil.sync.Lock instead"):
        pool.submit(helpers.add, threading.Lock(), 1)


def test_a_tasks_result_is_freed_in_the_worker_after_it_is_home(pool):
    # Freeing it (a list of 10,000 ints: tens of microseconds) is off the caller's path:
    # the caller has its copy first.  Freed before, the object's __del__ would wait for
    # the gate that only the result opens.
    from manygil.sync import Event

    gate, freed = Event(), Event()
    assert pool.submit(helpers.freed_after, gate, freed).result(timeout=30) == "sent"
    assert not freed.is_set()
    gate.set()
    assert freed.wait(30)


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_a_large_bytes_is_copied_once_each_way_by_the_side_that_loads_it(workers):
    # A large bytes argument is borrowed from the caller and the last result of a batch
    # from the worker: neither is copied into a native block on the way.  The worker
    # keeps the object its result lent until its next batch, or 50 ms idle, when it
    # copies it (the initializer makes that a minute, so a slow caller changes nothing).
    data = bytes(range(256)) * (1 << 12)  # 1 MiB
    with InterpreterPoolExecutor(workers, initializer=helpers.keep_lent, initargs=(60.0,)) as pool:
        pool.submit(helpers.same, b"").result(timeout=30)  # workers up
        before = _native.copied_into_blocks()
        blocks = _native.live()["blocks"]
        assert pool.submit(helpers.same, data).result(timeout=30) == data
        assert pool.submit(abs, -1).result(timeout=30) == 1  # its next batch: let go of
        if workers == 1:
            assert _native.live()["blocks"] == blocks
        assert pool.submit(helpers.add, b"", b=data).result(timeout=30) == data
        assert _native.copied_into_blocks() == before
        # A bytearray may change while it travels: it is copied as it is sent.
        assert pool.submit(len, bytearray(data)).result(timeout=30) == len(data)
        assert _native.copied_into_blocks() == before + len(data)


def test_a_borrowed_bytes_cannot_be_loaded_once_its_owner_let_go():
    data = b"x" * (1 << 16)
    block = _native.block_borrow(data)
    interp = I.create()
    try:
        assert interp.call(_native.block_bytes, block) == data  # copied by the reader
        _native.block_disown(block)
        with pytest.raises(I.ExecutionFailed, match="its owner let go of it"):
            interp.call(_native.block_bytes, block)
        with pytest.raises(RuntimeError, match="its owner let go of it"):
            _native.block_bytes(block)
        with pytest.raises(ValueError, match="no view"):
            _native.BlockView(block)
    finally:
        interp.close()
        _native.release(block)
    with pytest.raises(TypeError, match="takes bytes, not bytearray"):
        _native.block_borrow(bytearray(data))
    # Still held by another (a result not read yet): the block takes a copy of its own.
    block = _native.block_borrow(data)
    _native.retain(block)
    copied = _native.copied_into_blocks()
    _native.block_disown(block)
    _native.release(block)  # the owner's reference
    assert _native.copied_into_blocks() == copied + len(data)
    assert _native.block_bytes(block) == data
    _native.release(block)


def test_a_large_bytes_result_waited_for_is_read_by_the_waiting_thread_even_late():
    data = bytes(range(256)) * (1 << 12)  # 1 MiB
    gate = I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        first = pool.submit(helpers.same_after, gate, data)
        with pytest.raises(TimeoutError):
            first.result(timeout=0)  # waited for: the worker lends its result to this thread
        copied = _native.copied_into_blocks()
        gate.put("go")
        concurrent.futures.wait([first], timeout=30)
        # The worker moves on before this thread reads the result: it lets go of the
        # object, and the block keeps a copy of its own for the reader.
        assert pool.submit(helpers.same, data).result(timeout=30) == data
        assert _native.copied_into_blocks() >= copied + len(data)  # that copy
        assert first.result(timeout=30) == data


def test_a_worker_polls_its_inbox_briefly_before_it_sleeps():
    chan = _native.chan_create(0)
    try:
        _native.chan_put(chan, b"ready", 0, None)
        assert _native.chan_get(chan, None, 0.001)[1] == b"ready"  # there already
        assert _native.chan_get(chan, 0.05, 0.001) is None  # polled, then slept until the deadline
        assert _native.chan_get(chan, 0, 0.001) is None  # no wait at all: no polling either
    finally:
        _native.release(chan)


def test_waiting_for_a_short_task_polls_for_its_delivery_and_keeps_the_time_limit():
    q = I.create_queue()
    budget = _native.set_spin_budget(8)  # this thread may poll beside a polling worker
    try:
        with InterpreterPoolExecutor(1) as pool:
            for i in range(20):  # short tasks: the pool's moving average says so
                assert pool.submit(abs, -i).result(timeout=30) == i
            seen = _native.home_calls()
            done = pool.submit(abs, -1)
            assert _native.await_home_call(seen, 30.0)  # the worker delivered the result
            assert done.result(timeout=30) == 1
            assert not _native.await_home_call(_native.home_calls(), 0.001)  # nothing delivered
            blocked = pool.submit(helpers.wait_on, q)
            with pytest.raises(TimeoutError):
                blocked.result(timeout=0.01)  # polls, then waits for the rest of the 10 ms
            q.put("go")
            assert blocked.result(timeout=30) == "go"
    finally:
        _native.set_spin_budget(budget)


def test_polling_keeps_to_the_spin_budget():
    # The threads of every interpreter that poll before they sleep (a caller in result(),
    # an idle worker) are at most the CPUs less one: past that a poll gives up at once.
    # A fresh process, so that no other test's worker polls meanwhile.
    code = textwrap.dedent(
        """
        import os, threading, time
        from manygil import InterpreterPoolExecutor, _native
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert _native.spin_state() == (0, cpus - 1), _native.spin_state()
        assert not _native.await_home_call(_native.home_calls(), 0.001)  # polled, nothing came
        assert _native.spin_state()[0] == 0
        _native.set_spin_budget(0)
        assert not _native.await_home_call(_native.home_calls(), 3600.0)  # at once: no budget
        _native.set_spin_budget(1)
        got = []
        first = threading.Thread(target=lambda: got.append(_native.await_home_call(_native.home_calls(), 3600.0)))
        first.start()
        while _native.spin_state()[0] < 1:
            time.sleep(0.001)  # until the thread polls
        assert not _native.await_home_call(_native.home_calls(), 3600.0)  # at once: spent
        with InterpreterPoolExecutor(1) as pool:
            assert pool.submit(abs, -1).result() == 1  # a home call: it ends the first poll
        first.join()
        assert got == [True] and _native.spin_state() == (0, 1), (got, _native.spin_state())
        _native.set_spin_budget(-1)
        assert _native.spin_state() == (0, cpus - 1)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_worker_imports_only_what_it_needs():
    """Every worker pays for its imports at start: typing (3 ms on 3.13), threading, the
    pure-Python pickle and the pool's own machinery stay out of it (_copy imported
    typing once, found by -X importtime inside an interpreter).  In a program of its
    own: under pytest, the time-limit plugin's stack dumps use threading there."""
    import subprocess
    import sys

    program = (
        "from manygil import InterpreterPoolExecutor\n"
        "from tests import helpers\n"
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    print(' '.join(pool.submit(helpers.loaded_modules).result(timeout=60)))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=root)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    heavy = {
        "typing", "threading", "pickle", "manygil._transport", "manygil._pool", "manygil._process_side", "manygil._shared_side",
        "manygil._router", "manygil._seats", "manygil._interp_side", "manygil._refusals",
    }
    if sys.version_info < (3, 13):
        heavy.discard("threading")  # imported on purpose there (_worker.bootstrap: a 3.12 bug)
    assert "manygil._worker" in loaded and not loaded & heavy, sorted(loaded & heavy)


def test_cancelling_a_waiting_task_runs_its_callbacks_without_its_lock():
    # A callback run by cancel() with the future's lock held, which submits to the pool
    # (the pool's lock next), could deadlock against a worker that holds the pool's lock
    # and sets that future running (its lock next).  Another thread takes the future's
    # lock from inside the callback: it could not while cancel() held it.
    from manygil import interpreters as I
    from manygil.sync import Event

    q = I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        started = Event()
        blocker = pool.submit(helpers.started_then_wait_on, started, q)
        assert started.wait(60)
        waiting = pool.submit(helpers.add, 1, 2)
        took: list[bool] = []

        def callback(future):
            def take():
                got = future._condition.acquire(timeout=10)
                took.append(got)
                if got:
                    future._condition.release()

            thread = threading.Thread(target=take)
            thread.start()
            thread.join()

        waiting.add_done_callback(callback)
        try:
            assert waiting.cancel()
        finally:
            q.put("go")
        assert took == [True]
        assert blocker.result(timeout=60) == "go"
