"""An interpreter's ``__main__`` is the user's: manygil keeps nothing there that a user
can clear or overwrite and break it with; and one call at a time runs in an interpreter,
the others raise "already running" before anything of theirs ran, as on CPython 3.14
(issue 30)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from manygil import interpreters as I
from manygil.sync import Event, Lock

from . import helpers

# Each case ends with close() and the program's end; both hung or failed before.
CLEARS_MAIN = {
    "globals().clear()": 'interp.exec("globals().clear()")',
    "del _mg_worker": 'interp.exec("del _mg_worker")',
    "_mg_worker = 1": 'interp.exec("_mg_worker = 1")',
    "prepare_main(_mg_worker=1)": """
        try:
            interp.prepare_main(_mg_worker=1)
        except ValueError as exc:
            print("refused:", exc)
        else:
            raise SystemExit("prepare_main(_mg_worker=1) was accepted")
    """,
}


@pytest.mark.parametrize("close", ["close()", "left to the program's end"])
@pytest.mark.parametrize("misuse", list(CLEARS_MAIN))
def test_clearing_or_overwriting_main_leaves_the_interpreter_usable_and_closable(misuse, close):
    source = textwrap.dedent("""
        from manygil import interpreters as I

        interp = I.create()
        interp.exec("x = 1")
    """) + textwrap.dedent(CLEARS_MAIN[misuse]) + textwrap.dedent("""
        interp.exec("y = 6 * 7")
        q = I.create_queue()
        interp.prepare_main(q=q, d={"k": 1})
        interp.exec("q.put((y, d))")
        assert q.get(timeout=10) == (42, {"k": 1})
        assert interp.call(eval, "y + d['k']") == 43
    """) + ("" if close != "close()" else textwrap.dedent("""
        interp.close()
        assert interp.id not in [i.id for i in I.list_all()]
    """)) + 'print("done")\n'
    try:
        proc = subprocess.run(
            [sys.executable, "-c", source], capture_output=True, text=True, timeout=40
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"after {misuse}, with the interpreter {close}, the program did not end within 40 s")
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    if misuse.startswith("prepare_main"):
        assert "refused: cannot bind _mg_worker in interpreter" in proc.stdout
        assert "choose another name" in proc.stdout


def test_a_reserved_name_is_refused_before_anything_is_bound():
    interp = I.create()
    try:
        with pytest.raises(ValueError, match=r"cannot bind _mg_worker in interpreter \d+'s __main__"):
            interp.prepare_main(fine=1, _mg_worker=2)
        assert interp.call(eval, "'fine' in dir()") is False
    finally:
        interp.close()


def test_exec_runs_the_text_of_a_str_subclass_whatever_its_repr():
    class Source(str):
        def __repr__(self) -> str:
            return "'x = 2'"

    interp = I.create()
    try:
        interp.exec(Source("x = 1"))
        assert interp.call(eval, "x") == 1
    finally:
        interp.close()


# ---------------------------------------------------------------------- one call at a time


def test_calls_into_a_running_interpreter_raise_already_running_and_run_nothing():
    interp = I.create()
    try:
        started, release = Event(), Event()
        thread = interp.call_in_thread(helpers.acquire_and_hold, Lock(), started, release)
        try:
            assert started.wait(30), "the call never started"
            ran = I.create_queue()
            attempts = {
                "call": lambda: interp.call(ran.put, "call ran"),
                "exec": lambda: interp.exec("import sys; sys.modules['__main__'].late = 1"),
                "prepare_main": lambda: interp.prepare_main(late=1),
            }
            for attempt in attempts.values():
                with pytest.raises(I.InterpreterError, match="already running"):
                    attempt()
            with pytest.raises(I.InterpreterError, match="running"):
                interp.close()
        finally:
            release.set()
            thread.join(30)
        assert not thread.is_alive()
        assert ran.empty()
        assert interp.call(eval, "'late' in dir()") is False
    finally:
        interp.close()


def test_the_losers_of_concurrent_calls_raise_already_running_before_they_run():
    interp = I.create()
    ran = I.create_queue()
    rounds, threads = 50, 4
    lock = threading.Lock()
    try:
        for r in range(rounds):
            barrier = threading.Barrier(threads)
            outcomes: dict[int, object] = {}

            def caller(n: int, r: int = r, barrier: threading.Barrier = barrier,
                       outcomes: dict[int, object] = outcomes) -> None:
                barrier.wait(timeout=30)
                try:
                    interp.call(ran.put, (r, n))
                    outcome: object = "ran"
                except BaseException as exc:  # noqa: BLE001 - what the test reports
                    outcome = exc
                with lock:
                    outcomes[n] = outcome

            workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
                assert not w.is_alive(), "a concurrent call hung"
            wrong = [o for o in outcomes.values() if o != "ran" and (
                type(o) is not I.InterpreterError or "already running" not in str(o))]
            assert not wrong, f"round {r}: other errors than 'already running': {wrong}"
            came = set()
            while not ran.empty():
                came.add(ran.get(timeout=5))
            assert came == {(r, n) for n, o in outcomes.items() if o == "ran"}, (
                f"round {r}: the calls that ran are not those that returned: {outcomes}")
    finally:
        interp.close()
