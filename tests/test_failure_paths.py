"""The paths a user hits when something goes wrong (issue 11), one test per failure.

Every test here failed before its fix.  Nothing waits on the clock: a task that must
be "running" or "stuck" waits on a queue or an event that the test controls.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from manygil import InterpreterPoolExecutor, _native
from manygil import interpreters as I
from manygil.interpreters import NotShareableError
from manygil.shared import SharedBuffer, SharedValue
from manygil.sync import Barrier, Lock

from . import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(source: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def refs(obj) -> int:
    return _native.refcount(obj.id if hasattr(obj, "id") else obj._ids[0])


# ------------------------------------------------------------ 1. shared objects in initargs


@pytest.mark.parametrize("workers, per_worker", [(2, None), (1, 1)], ids=["2-workers", "replaced-workers"])
def test_shared_objects_in_initargs_outlive_every_worker(workers, per_worker):
    buf = SharedBuffer.from_bytes(b"A" * 1024)
    value = SharedValue(7)
    lock = Lock()
    barrier = Barrier(workers)
    with InterpreterPoolExecutor(
        workers, initializer=helpers.init_worker, initargs=((buf, value, lock),), max_tasks_per_worker=per_worker
    ) as pool:
        # Every worker runs (and so loads initargs): they meet at the barrier.
        assert sorted(pool.map(helpers.barrier_wait, [barrier] * workers)) == list(range(workers))
        assert list(pool.map(helpers.add, range(4))) == [0, 1, 2, 3]  # more workers when replaced
    assert bytes(buf[:4]) == b"AAAA"
    assert value.value == 7 and value.add(1) == 8
    assert lock.acquire(timeout=5)
    lock.release()
    assert refs(buf) == 1 and refs(value) == 1  # only ours are left


# ------------------------------------------------------------ 2. payloads never loaded


def test_a_task_cancelled_before_it_ran_frees_its_shared_arguments():
    start = dict(_native.live())
    q = I.create_queue()
    with InterpreterPoolExecutor(1) as pool:
        blocker = pool.submit(helpers.wait_on, q)
        queued = [pool.submit(len, SharedBuffer(1 << 20)) for _ in range(5)]
        assert all(f.cancel() for f in queued)
        q.put("go")
        assert blocker.result(timeout=30) == "go"
    del q
    assert _native.live() == start


def test_shutdown_cancel_futures_frees_the_pending_tasks_shared_arguments():
    start = dict(_native.live())
    q, started = I.create_queue(), I.create_queue()
    pool = InterpreterPoolExecutor(1)
    blocker = pool.submit(helpers.signal_then_wait, started, q)
    queued = [pool.submit(len, SharedBuffer(1 << 20)) for _ in range(5)]
    started.get(timeout=30)
    # The blocker ends only once shutdown has cancelled the queued tasks.
    queued[-1].add_done_callback(lambda _: q.put("go"))
    pool.shutdown(wait=True, cancel_futures=True)
    assert blocker.result() == "go" and all(f.cancelled() for f in queued)
    q = started = None  # the callback's closure shares them
    assert _native.live() == start


def test_a_result_nobody_wants_any_more_is_freed():
    start = dict(_native.live())
    started = I.create_queue()
    with InterpreterPoolExecutor(1, grace_period=30) as pool:
        future = pool.submit(helpers.returns_a_buffer_even_if_interrupted, started)
        started.get(timeout=30)
        assert future.cancel()  # the task catches the interrupt and returns a buffer anyway
        assert pool.submit(helpers.add, 1).result(timeout=30) == 1  # after that result
    del started
    assert _native.live() == start


def test_a_submit_that_fails_frees_what_it_had_pinned():
    start = dict(_native.live())
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(NotShareableError):
            pool.submit(helpers.add, SharedBuffer(16), threading.Lock())
        pool.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(len, SharedBuffer(16))
    gc.collect()  # the tracebacks hold our own handles (the arguments), not the pins
    assert _native.live() == start


def test_queue_items_left_in_a_queue_free_their_shared_objects():
    start = dict(_native.live())
    q = I.create_queue()
    q.put(SharedBuffer(1 << 20))
    q.put([SharedValue(1), Lock()])
    assert _native.live()["blocks"] == start["blocks"] + 1  # the queue holds the buffer
    del q
    assert _native.live() == start


def test_a_shared_object_put_in_a_queue_several_times_lives_until_the_last_get():
    buf = SharedBuffer.from_bytes(b"xyz")
    q = I.create_queue()
    for _ in range(3):
        q.put(buf)
    assert refs(buf) == 4
    first = q.get(timeout=5)
    assert first is not buf and bytes(first) == b"xyz"
    del first, buf
    rest = [q.get(timeout=5), q.get(timeout=5)]
    assert [bytes(b) for b in rest] == [b"xyz", b"xyz"] and refs(rest[0]) == 2


# ------------------------------------------------------------ 3, 4. no lost task


def test_max_tasks_per_worker_runs_every_task_before_shutdown_returns():
    pool = InterpreterPoolExecutor(1, max_tasks_per_worker=1)
    futures = [pool.submit(helpers.current_interpreter_id) for _ in range(5)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert len({f.result() for f in futures}) == 5  # one interpreter each


def test_max_tasks_per_worker_runs_every_task_at_exit_without_shutdown():
    proc = run_script("""
        import sys
        sys.path.insert(0, "tests")
        import helpers
        from manygil import InterpreterPoolExecutor
        pool = InterpreterPoolExecutor(1, max_tasks_per_worker=1)
        for i in range(5):
            pool.submit(helpers.add, i).add_done_callback(lambda f: print("done", f.result(), flush=True))
    """)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()[1::2]) == ["0", "1", "2", "3", "4"]
    assert proc.stderr == ""


def test_pending_tasks_still_run_when_a_worker_is_abandoned_during_shutdown():
    r, w = os.pipe()
    pool = InterpreterPoolExecutor(1, grace_period=0.1)
    stuck = pool.with_timeout(0.1).submit(helpers.block_in_c, r)  # deaf to interrupts: abandoned
    queued = [pool.submit(helpers.add, i) for i in range(3)]
    pool.shutdown(wait=True)
    assert isinstance(stuck.exception(), TimeoutError)
    assert [f.result() for f in queued] == [0, 1, 2]
    os.write(w, b"x")  # let the abandoned worker go
    os.close(w)


# ------------------------------------------------------------ 5. exit


def test_exit_after_a_worker_was_abandoned_waits_for_it_to_come_back():
    proc = run_script("""
        import sys
        sys.path.insert(0, "tests")
        import helpers
        import os, threading
        from manygil import InterpreterPoolExecutor
        r, w = os.pipe()
        pool = InterpreterPoolExecutor(1, grace_period=5)
        try:
            pool.with_timeout(0.2).submit(helpers.block_in_c, r).result()
        except TimeoutError:
            print("timed out", flush=True)
        # The worker is stuck in C until the pipe has a byte: write one as the
        # program ends, after the pool gave up on the task.
        threading._register_atexit(os.write, w, b"x")
        pool.shutdown()
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "timed out\n" and "Fatal" not in proc.stderr


def test_exit_with_a_worker_stuck_in_c_forever_says_so_and_exits():
    proc = run_script("""
        import atexit, sys
        sys.path.insert(0, "tests")
        import helpers
        import os
        from manygil import InterpreterPoolExecutor
        atexit.register(print, "atexit ran")
        r, w = os.pipe()
        pool = InterpreterPoolExecutor(1, grace_period=0.2, exit_timeout=0.5)
        pool.submit(helpers.add, 1).result()  # warm: the time limit covers the C call, not imports
        try:
            pool.with_timeout(0.2).submit(helpers.block_in_c, r).result()
        except TimeoutError:
            print("timed out", flush=True)
        pool.shutdown()
    """)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "timed out\natexit ran\n"
    assert "waits up to 0.5 s for manygil-pool-" in proc.stderr and "block_in_c()" in proc.stderr
    assert "manygil: exiting with status 1 without finalizing" in proc.stderr
    assert "still stuck in block_in_c()" in proc.stderr and "Fatal" not in proc.stderr


EXITS_WITH_A_WORKER_ABANDONED = """
    import sys
    sys.path.insert(0, "tests")
    import helpers
    from manygil import InterpreterPoolExecutor
    pool = InterpreterPoolExecutor(1, grace_period=0.1, exit_timeout=60)
    pool.submit(helpers.add, 1).result()  # warm: the time limit covers the C call, not imports
    future = pool.with_timeout(0.1).submit(helpers.read_fifo, sys.argv[1])
    print(type(future.exception()).__name__, flush=True)
"""


def _exit_waits_for_the_abandoned_worker(tmp_path):
    """Run the script above until it says that it waits for its abandoned worker."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EXITS_WITH_A_WORKER_ABANDONED), fifo],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stderr.readline()  # blocks until the program's end says it waits
    assert "Ctrl-C to exit now" in line and "read_fifo()" in line, line
    return proc, fifo


def test_the_program_end_waits_for_an_abandoned_worker_and_exits_0_when_it_returns(tmp_path):
    # The program did all its work, but exited with status 1 once grace_period had
    # passed, although the C call returned a moment later (issue 23, section 3).
    proc, fifo = _exit_waits_for_the_abandoned_worker(tmp_path)
    os.close(os.open(fifo, os.O_WRONLY))  # the abandoned task's C call (its open()) returns
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # failing: leave no child behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "TimeoutError\n" and err == ""


def test_ctrl_c_while_the_program_end_waits_for_an_abandoned_worker_exits_1_at_once(tmp_path):
    proc, fifo = _exit_waits_for_the_abandoned_worker(tmp_path)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        try:  # let the blocked open() in the child go, if the child still lives
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader left: the child is gone
            pass
        if proc.poll() is None:  # failing: leave no child behind (one spun for hours)
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert out == "TimeoutError\n"
    assert "exiting with status 1 without finalizing" in err and "still stuck in read_fifo()" in err


# ------------------------------------------------------------ 6. a result that raises as it loads


@pytest.mark.parametrize("kind, exc_type", [("exit", SystemExit), ("interrupt", KeyboardInterrupt)])
def test_a_result_that_raises_a_base_exception_while_loading_resolves_the_future(kind, exc_type):
    with InterpreterPoolExecutor(1) as pool:
        future = pool.submit(helpers.make_bomb, kind)
        with pytest.raises(exc_type):
            future.result(timeout=30)
        assert pool.submit(helpers.add, 2).result(timeout=30) == 2


# ------------------------------------------------------------ 7. fork


def test_fork_while_a_pool_is_alive_warns_before_the_child_breaks():
    proc = run_script("""
        import os, signal, sys, warnings
        sys.path.insert(0, "tests")
        import helpers
        from manygil import InterpreterPoolExecutor
        with InterpreterPoolExecutor(1) as pool:
            pool.submit(helpers.add, 1).result()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                # The child dies (3.13) or hangs (3.12) inside CPython's fork handling.
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            print([str(w.message) for w in caught if "manygil" in str(w.message)])
    """)
    assert proc.returncode == 0, proc.stderr
    assert "os.fork() while this process runs 1 interpreter" in proc.stdout
    assert "forkserver" in proc.stdout


# ------------------------------------------------------------ 8. smaller


def test_a_released_buffer_says_released():
    buf = SharedBuffer(8)
    buf.release()
    for attempt in (lambda: buf.read(0, 1), lambda: buf.write(0, b"x"), lambda: buf[0]):
        with pytest.raises(ValueError, match="released"):
            attempt()


def _ctrl_c(body: str, press: bool = True) -> str:
    """Run ``body`` in a new process with a pool ``pool`` of one worker and the helpers
    imported; press Ctrl-C once it prints "submitted" (``press``); what it printed then.
    Should it not end, the test fails with every interpreter's stacks."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import signal, sys, threading
            # A shell ignores Ctrl-C in what it runs in the background (CI may), and
            # Python then keeps it ignored: a terminal's Ctrl-C is what this test is about.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.path.insert(0, "tests")
            import helpers
            import manygil
            from manygil import InterpreterPoolExecutor
            manygil.dump_tracebacks_later(30)  # should it hang: every interpreter's stacks
            futures = []
            try:
                with InterpreterPoolExecutor(1) as pool:
        """) + textwrap.indent(textwrap.dedent(body), " " * 8) + textwrap.dedent("""
            except KeyboardInterrupt:
                print("interrupted", [f.cancelled() for f in futures], flush=True)
        """)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline() == "submitted\n"
        if press:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the process did not end after Ctrl-C; its output: {out!r}; its stderr:\n{err}")
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    return out


def test_ctrl_c_in_a_with_block_cancels_pending_and_running_tasks():
    out = _ctrl_c("""
        futures = [pool.submit(helpers.spin) for _ in range(3)]
        print("submitted", flush=True)
        futures[0].result()
    """)
    assert out == "interrupted [True, True, True]\n"


@pytest.mark.parametrize(
    ("waiting_on", "then"),
    [
        # CPython runs the handler when the main thread next runs bytecode: a signal that
        # lands as it starts to block (seen on 3.13 in CI) or on another thread used to
        # be seen only once the task ended (never, for these), or the time limit.
        pytest.param("futures[0]._condition", "futures[0].result()", id="in result()"),
        pytest.param("futures[0]._condition", "futures[0].result(timeout=600)", id="in result(timeout)"),
        # Before, the KeyboardInterrupt left the block with the tasks running, and the
        # process then waited for them at exit.
        pytest.param("pool._side.schedule.changed", "pass", id="as the with block waits for the tasks"),
    ],
)
def test_ctrl_c_that_does_not_wake_the_main_thread_still_cancels_the_tasks(waiting_on, then):
    out = _ctrl_c(f"""
        futures = [pool.submit(helpers.spin) for _ in range(2)]
        print("submitted", flush=True)
        threading.Thread(target=helpers.ctrl_c_once_waiting, args=({waiting_on},)).start()
        {then}
    """, press=False)
    assert out == "interrupted [True, True]\n"


def test_ctrl_c_while_the_program_end_waits_for_the_tasks_stops_them_without_a_crash():
    # The end of a program waits for its pools' tasks, as concurrent.futures does; Ctrl-C
    # there used to leave the task running while CPython finalized: "Fatal Python error:
    # Py_EndInterpreter: not the last thread" (3.13), an abort.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import signal, sys, threading
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
            sys.path.insert(0, "tests")
            import helpers
            import manygil
            manygil.dump_tracebacks_later(30)  # should it hang: every interpreter's stacks
            pool = manygil.InterpreterPoolExecutor(1)
            future = pool.submit(helpers.spin)
            threading.Thread(target=helpers.ctrl_c_once_waiting, args=(pool._side.schedule.changed,)).start()
        """)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr  # CPython's status for Ctrl-C at its exit
    # One line, not the "Exception ignored on threading shutdown" traceback.
    assert proc.stderr == "manygil: Ctrl-C at the program's end: the pools' tasks were cancelled\n"


def test_a_script_ended_by_ctrl_c_says_why_it_waits_and_a_second_ctrl_c_cancels_cleanly():
    # The first Ctrl-C printed its traceback, then the program waited for the tasks with
    # no word; the second one ended it with an "Exception ignored" traceback (issue 23).
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import signal, sys, threading
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
            sys.path.insert(0, "tests")
            import helpers
            import manygil
            manygil.dump_tracebacks_later(30)  # should it hang: every interpreter's stacks
            pool = manygil.InterpreterPoolExecutor(1)
            futures = [pool.submit(helpers.spin), pool.submit(helpers.add, 1)]
            for condition in (futures[0]._condition, pool._side.schedule.changed):  # in result(), then at exit
                threading.Thread(target=helpers.ctrl_c_once_waiting, args=(condition,), daemon=True).start()
            futures[0].result()
        """)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == -signal.SIGINT, proc.stderr  # the script's own Ctrl-C
    lines = proc.stderr.splitlines()
    assert lines[-3] == "KeyboardInterrupt", proc.stderr  # the first Ctrl-C's traceback
    assert lines[-2] == (
        "manygil: waiting for the 2 tasks left in the pools before exiting, as concurrent.futures does; "
        "Ctrl-C again cancels them"
    )
    assert lines[-1] == "manygil: Ctrl-C at the program's end: the pools' tasks were cancelled"


def test_a_pool_shut_down_and_dropped_goes_without_the_garbage_collector():
    # The interpreter side's parts (its books, crew and time limits) refer to each other
    # one way only, the books to the side weakly: once a pool is shut down and dropped,
    # reference counting frees it, with no collection needed (a cycle would keep it, and
    # what it holds, until one ran).
    import gc
    import weakref

    for fallback in (None, "process"):
        buf = SharedBuffer(8)
        gc.disable()
        try:
            pool = InterpreterPoolExecutor(1, initializer=helpers.remember, initargs=(buf,), fallback=fallback)
            assert pool.submit(helpers.add, 1).result(timeout=30) == 1
            pool.shutdown(wait=True)
            side = weakref.ref(pool._side)
            del pool
            assert side() is None, fallback
        finally:
            gc.enable()


def test_the_executors_finalizer_can_run_on_a_thread_that_holds_the_pool_lock():
    # A garbage collection runs weakref finalizers on whatever thread allocates, and the
    # pool's own threads allocate while they hold its lock (the watchdog did, at exit).
    pool = InterpreterPoolExecutor(1)
    assert pool.submit(helpers.add, 1).result(timeout=30) == 1
    state = pool._side
    with state.lock:
        state.shutdown(False, False)  # what the executor's finalizer calls
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(helpers.add, 1)


def test_a_bug_in_the_pool_breaks_it_loudly_instead_of_losing_results(fault_point):
    # manygil's own code failing where it hands out results (simulated here) must not
    # leave futures waiting forever: the results it took are settled, the queued tasks
    # fail with BrokenInterpreterPool naming the bug, and shutdown returns.
    from concurrent.futures import wait

    from manygil import BrokenInterpreterPool

    def failing(side, worker, done):
        if done:
            raise RuntimeError("simulated bug")

    fault_point("interp.results_taken", failing)
    with InterpreterPoolExecutor(1) as pool:
        futures = [pool.submit(helpers.add, i, i) for i in range(6)]
        assert not wait(futures, timeout=60).not_done
        for i, future in enumerate(futures):
            exc = future.exception()
            if exc is None:
                assert future.result() == 2 * i
            else:
                assert isinstance(exc, BrokenInterpreterPool), exc
                assert "bug in manygil" in str(exc) and "simulated bug" in str(exc.__cause__)
        with pytest.raises(BrokenInterpreterPool, match="simulated bug"):
            pool.submit(helpers.add, 1, 1)


def test_a_bug_when_a_worker_stops_does_not_hang_shutdown(fault_point):
    # manygil's own code failing as a worker stops (simulated here) must not leave the
    # worker counted as alive, which shutdown(wait=True) would wait for forever.
    from manygil import BrokenInterpreterPool

    def failing(side, worker, error):
        raise RuntimeError("simulated bug")

    fault_point("interp.worker_exited", failing)
    pool = InterpreterPoolExecutor(1, max_tasks_per_worker=1)
    assert pool.submit(helpers.add, 1, 2).result(timeout=30) == 3
    pool.shutdown(wait=True)  # returns
    with pytest.raises(BrokenInterpreterPool, match="bug in manygil") as caught:
        pool.submit(helpers.add, 1, 2)
    assert "simulated bug" in str(caught.value.__cause__)


def test_a_queue_put_in_exec_code_does_not_abort_the_process_at_exit():
    # CPython 3.12.1 aborted at exit (free(): invalid pointer) when the first call of
    # pickle.dumps(..., protocol=5) was made in an interpreter closed since: manygil makes
    # that call in the main interpreter first.
    code = textwrap.dedent("""
        from manygil import interpreters as I
        q = I.create_queue()
        it = I.create()
        it.exec(f"from manygil import interpreters as I\\nI.Queue({q.id}).put(1)")
        print(q.get())
        it.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]


def test_a_task_that_imports_hashlib_does_not_abort_the_process_at_exit():
    # CPython 3.12.1 aborted at exit once an own-GIL interpreter imported hashlib first
    # (its import makes keyword calls that set up parsers in the calling interpreter).
    code = textwrap.dedent("""
        from manygil import interpreters as I
        it = I.create()
        it.exec("import hashlib\\nprint(hashlib.sha256(b'x').hexdigest()[:8])")
        it.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2d711642"]


def test_a_pool_created_inside_a_task_fails_at_once_and_both_pools_end():
    # It raised "daemon threads are disabled in this (sub)interpreter" after registering
    # a worker that never started, and the inner and the outer with blocks waited forever.
    proc = run_script("""
        import sys
        sys.path.insert(0, "tests")
        import helpers
        from manygil import InterpreterPoolExecutor
        with InterpreterPoolExecutor(1) as pool:
            try:
                pool.submit(helpers.nested_pool).result(timeout=60)
            except RuntimeError as exc:
                print("error:", exc)
            print(pool.submit(helpers.add, 1, 2).result(timeout=60))
    """, timeout=30)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("error: cannot create an InterpreterPoolExecutor inside interpreter "), first
    assert "submit from the main interpreter" in first
    assert second == "3"


def test_a_late_result_that_the_pool_drops_releases_the_shared_objects_in_it(tmp_path):
    # A task past its time limit swallowed the interrupt and, its worker abandoned,
    # returned the SharedBuffer it was given: the pool dropped that result, but its
    # block stayed live (3.12, 3.13).
    from manygil.sync import Event

    before = dict(_native.live())
    release = str(tmp_path / "release")
    os.mkfifo(release)
    buf = SharedBuffer(1 << 16)
    started = Event()
    with InterpreterPoolExecutor(1, grace_period=0.1) as pool:
        # Warm: the time limit covers the task's loop, not the imports of its loading.
        pool.submit(helpers.same, (buf, started)).result(timeout=60)
        future = pool.with_timeout(0.5).submit(helpers.swallow_interrupt_and_return, buf, started, release)
        assert isinstance(future.exception(timeout=60), TimeoutError)
        assert pool.submit(helpers.add, 1).result(timeout=60) == 1  # on a new worker
        abandoned = [w for w in pool._side.schedule.workers.values() if w.state.value == "abandoned"]
        assert len(abandoned) == 1
        os.close(os.open(release, os.O_WRONLY))  # the abandoned task returns buf now
        assert abandoned[0].gone.wait(60)
    del buf, started, future
    gc.collect()
    assert dict(_native.live()) == before


def test_tracemalloc_beside_interpreters_on_3_12_and_3_14_is_refused_with_the_fix():
    # On 3.12.1 the results printed, then "double free or corruption" and status 134; on
    # 3.14.10 the next interpreter's creation crashed (SIGSEGV) or hung, and a shared-GIL
    # pool deadlocked about once in ten runs.
    proc = subprocess.run(
        [sys.executable, "-X", "tracemalloc", "-c", textwrap.dedent("""
            import sys
            sys.path.insert(0, "tests")
            import helpers
            from manygil import InterpreterPoolExecutor
            try:
                with InterpreterPoolExecutor(1) as pool:
                    print(pool.submit(helpers.add, 1, 2).result(timeout=60))
            except RuntimeError as exc:
                print("refused:", exc)
            try:
                with InterpreterPoolExecutor(1, shared_gil=True) as pool:  # the main GIL
                    print(pool.submit(helpers.add, 2, 2).result(timeout=60))
            except RuntimeError as exc:
                print("refused:", exc)
        """)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    if sys.version_info[:2] == (3, 12):
        assert first.startswith("refused: cannot create an interpreter with its own GIL while tracemalloc")
        assert "-X tracemalloc" in first and "shared_gil=True" in first
        assert second == "4"  # under the main GIL, 3.12 has no such trap
    elif sys.version_info[:2] == (3, 14):
        # 3.14: a shared-GIL interpreter deadlocks there too, about once in ten runs
        for line in (first, second):
            assert line.startswith("refused: cannot create an interpreter while tracemalloc"), line
            assert "-X tracemalloc" in line and "shared_gil" not in line
    else:
        assert (first, second) == ("3", "4")


def test_a_time_limit_settles_its_future_without_the_pool_lock_even_when_held_twice():
    # The time limits' expire and abandon (then InterpSide._expire and _abandon) released
    # and took back the re-entrant pool lock by hand, so entered with it held twice they
    # ran the futures' callbacks with it still held (issue 30, section 2.4).  They now
    # return what to run once the lock is left.
    from manygil.sync import Event

    q = I.create_queue()
    started = Event()
    with InterpreterPoolExecutor(1, grace_period=30) as pool:
        state = pool._side
        future = pool.submit(helpers.started_then_wait_on, started, q)
        assert started.wait(60)
        seen = []
        future.add_done_callback(lambda f: seen.append(state.lock._is_owned()))
        with state.lock:
            (tid, item), = state.schedule.running.items()  # it waits on q, running
        item.timeout = 0.0
        with state.lock, state.lock:
            then = state.limits.expire(tid, item)
            assert not future.done()  # nothing was settled with the lock held
        assert then is not None
        then()
        assert seen == [False]
        assert isinstance(future.exception(timeout=60), TimeoutError)
        q.put("go")  # should the interrupt wait for the native wait to end
    del q, started


def test_a_failure_of_the_home_call_itself_stops_the_worker_and_fails_its_task():
    # Should the pool's callback fail in a way its own guard cannot catch (here, made to
    # raise outright), native call_home printed the error and answered None: the worker
    # waited on its inbox while the pool counted its task as running, forever
    # (issue 30, section 2.5).  The worker now stops with the error; its task fails.
    proc = run_script("""
        import sys
        sys.path.insert(0, "tests")
        import helpers
        from manygil import InterpreterPoolExecutor, _faults, _interp_side
        calls = []

        def home(side, worker, data):
            if data[:8] != _interp_side._EVENT and not calls:
                calls.append(1)
                raise MemoryError("made to fail")

        with _faults.hooked("interp.home", home), InterpreterPoolExecutor(1) as pool:
            try:
                pool.submit(helpers.add, 1, 2).result(timeout=60)
            except Exception as exc:
                print("failed:", type(exc).__name__, exc, "| cause:", exc.__cause__)
            print(pool.submit(helpers.add, 2, 2).result(timeout=60))
    """, timeout=90)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("failed: BrokenInterpreterPool the worker running this task stopped"), first
    assert "the pool's call in the main interpreter failed (MemoryError('made to fail'))" in first, first
    assert "MemoryError: made to fail" in proc.stderr  # its traceback, where it happened
    assert second == "4"


def test_os_fork_with_interpreters_running_ends_the_child_at_once_with_the_fix():
    # The child of os.fork() cannot go on in a process that runs subinterpreters: 3.12
    # hung in the child's fork handling (and the parent, waiting for it, hung too), 3.13+
    # aborts there.  It now exits at once, saying why (issue 23, section 3).
    proc = run_script("""
        import os, sys, warnings
        sys.path.insert(0, "tests")
        import helpers
        from manygil import InterpreterPoolExecutor
        warnings.simplefilter("ignore")  # manygil's warning before the fork, and CPython's
        pool = InterpreterPoolExecutor(1)
        print(pool.submit(helpers.add, 1, 2).result(timeout=60), flush=True)
        pid = os.fork()
        if pid == 0:
            print("the child went on", flush=True)
            os._exit(0)
        print("child status", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
        pool.shutdown()
        pid = os.fork()  # no interpreter runs now: a child as any other
        if pid == 0:
            print("the second child went on", flush=True)
            os._exit(0)
        print("child status", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    """, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["3", "child status 1", "the second child went on", "child status 0"], (
        proc.stdout
    )
    assert "the child went on" not in proc.stdout
    assert "manygil: this child of os.fork() exits at once" in proc.stderr
    assert "Fatal Python error" not in proc.stderr


def test_a_pool_dropped_by_a_collection_shuts_down_even_when_no_thread_starts(monkeypatch):
    # During a collection the finalizer shuts the pool down from a thread of its own; with
    # no thread to be had (a thread limit, not the program's end) it does so at once, as
    # before, rather than leave the pool's workers running until the program ends.
    from manygil import _pool

    pool = InterpreterPoolExecutor(1)
    assert pool.submit(helpers.add, 1).result(timeout=30) == 1
    side = pool._side
    pool.cycle = pool  # only a collection can drop it

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    gc.disable()
    try:
        del pool
        monkeypatch.setattr(_pool.threading.Thread, "start", no_thread)
        gc.collect()
        monkeypatch.undo()
    finally:
        gc.enable()
    assert side.schedule.shutting_down
    side.shutdown(True, False)
