from __future__ import annotations

import io
import time

import manygil
from manygil import InterpreterPoolExecutor
from manygil import interpreters as I
from manygil.sync import Event

from . import helpers


def test_dump_shows_both_pool_workers_in_their_python_loops():
    stop, running_a, running_b = Event(), Event(), Event()
    with InterpreterPoolExecutor(2, thread_name_prefix="dumptest-") as pool:
        a = pool.submit(helpers.busy_alpha, stop, running_a)
        b = pool.submit(helpers.busy_beta, stop, running_b)
        assert running_a.wait(30) and running_b.wait(30)  # both in their functions' frames
        out = io.StringIO()
        manygil.dump_tracebacks(out, timeout=5)
        stop.set()
        a.result(timeout=30)
        b.result(timeout=30)
    text = out.getvalue()
    assert "busy_alpha" in text and "busy_beta" in text
    assert "dumptest-worker-" in text
    assert text.count("Interpreter ") >= 3  # this one and both workers


def test_dump_shows_an_interpreter_made_by_create():
    stop, running = Event(), Event()
    interp = I.create()
    try:
        thread = interp.call_in_thread(helpers.busy_alpha, stop, running)
        assert running.wait(30)
        out = io.StringIO()
        manygil.dump_tracebacks(out, timeout=5)
        stop.set()
        thread.join(30)
    finally:
        interp.close()
    text = out.getvalue()
    assert f"Interpreter {interp.id} (interpreters.create())" in text
    assert "busy_alpha" in text


def test_pool_dumps_the_stacks_of_a_task_that_hits_its_time_limit():
    out = io.StringIO()
    with InterpreterPoolExecutor(1, dump_on_timeout=out, grace_period=5) as pool:
        pool.submit(helpers.add, 1).result(timeout=30)  # warm: the limit covers the loop, not imports
        future = pool.with_timeout(0.3).submit(helpers.spin)
        try:
            future.result(timeout=30)
        except TimeoutError:
            pass
    text = out.getvalue()
    assert "exceeded its time limit of 0.3 s" in text
    assert "in spin" in text


def test_dump_tracebacks_later_fires_and_can_be_cancelled():
    out = io.StringIO()
    manygil.dump_tracebacks_later(0.05, file=out)
    deadline = time.monotonic() + 10
    while not out.getvalue():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert "Interpreter 0 (this one)" in out.getvalue()
    quiet = io.StringIO()
    manygil.dump_tracebacks_later(0.2, file=quiet)
    manygil.cancel_dump_tracebacks_later()
    time.sleep(0.4)
    assert quiet.getvalue() == ""
