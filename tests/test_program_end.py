"""The program's end without ``shutdown()`` or a ``with`` block (issue 23, section 1).

Each test runs a real script, as ``python script.py`` (or piped to ``python -``), in a
child process, and checks what ``ProcessPoolExecutor`` guarantees there: every task
submitted runs, every callback runs once, and the exit status is 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# What every script's callbacks print: one line per task, "done N" or "error ...".
CALLBACK = """
import sys
def report(f):  # one write per line: callbacks run on several threads
    if f.cancelled():
        line = "cancelled"
    elif f.exception() is not None:
        line = f"error {f.exception()!r}"
    else:
        line = f"done {f.result()}"
    sys.stdout.write(line + chr(10))
    sys.stdout.flush()
"""


def run(source: str, tmp_path, *, stdin: bool = False, path: tuple[str, ...] = (), timeout: float = 120):
    """Run ``source`` as a script file (or piped to ``python -``) in ``tmp_path``."""
    source = textwrap.dedent(source).replace("#CALLBACK", CALLBACK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((*path, os.path.join(ROOT, "src"))))
    if stdin:
        args, text = [sys.executable, "-"], source
    else:
        script = tmp_path / "prog.py"
        script.write_text(source)
        args, text = [sys.executable, str(script)], None
    return subprocess.run(
        args, input=text, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def outcomes(stdout: str) -> list[str]:
    return sorted(line for line in stdout.splitlines() if line.startswith(("done", "error", "cancelled")))


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_tasks_of_a_function_defined_in_the_script_run_at_exit_without_shutdown(tmp_path, how):
    proc = run(
        """
        from manygil import InterpreterPoolExecutor
        #CALLBACK
        def work(n):
            return n * 10

        if __name__ == "__main__":
            pool = InterpreterPoolExecutor(2)
            for i in range(8):
                pool.submit(work, i).add_done_callback(report)
            print("exiting", flush=True)
        """,
        tmp_path,
        stdin=how == "stdin",
    )
    assert proc.returncode == 0, proc.stderr
    assert outcomes(proc.stdout) == sorted(f"done {i * 10}" for i in range(8)), proc.stdout + proc.stderr
    assert proc.stderr == ""


def test_a_script_piped_to_python_runs_its_functions_in_a_with_block(tmp_path):
    proc = run(
        """
        from manygil import InterpreterPoolExecutor

        def work(n):
            return n + 1

        with InterpreterPoolExecutor(2) as pool:
            print(list(pool.map(work, range(4))))
        """,
        tmp_path,
        stdin=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[1, 2, 3, 4]\n"


def test_process_tasks_waiting_at_exit_without_shutdown_all_run(tmp_path, single_phase_dir):
    # 12 tasks of a function whose module refuses an own-GIL interpreter (they run in
    # process workers) and 4 pure ones, then the script ends without shutdown().
    proc = run(
        """
        import os
        import refusing_tasks
        from manygil import InterpreterPoolExecutor
        #CALLBACK
        def pure(n):
            return -n

        if __name__ == "__main__":
            import warnings
            warnings.simplefilter("ignore")  # the FallbackWarning
            pool = InterpreterPoolExecutor(2)
            for i in range(12):
                pool.submit(refusing_tasks.where, i).add_done_callback(report)
            for i in range(1, 5):
                pool.submit(pure, i).add_done_callback(report)
            print("exiting, pid", os.getpid(), flush=True)
        """,
        tmp_path,
        path=(single_phase_dir, FIXTURES),
    )
    assert proc.returncode == 0, proc.stderr
    # (On CPython 3.12, which starts no thread once the program's end has begun, the
    # process tasks that could not start a pool's process each run in one of their own.)
    done = [line.split(",")[0].replace("(", "") for line in outcomes(proc.stdout)]  # "done (2, pid, -1)"
    assert sorted(done) == sorted([f"done {2 * i}" for i in range(12)] + [f"done {-i}" for i in range(1, 5)]), (
        proc.stdout + proc.stderr
    )
    pid = proc.stdout.split("exiting, pid ")[1].split()[0]
    assert f" {pid}," not in proc.stdout  # where() ran in process workers


def test_a_function_defined_under_the_main_guard_runs(tmp_path):
    # The worker imports the script, where the guarded block never runs: such a
    # function crosses by value, as a lambda defined there does (issue 29).
    proc = run(
        """
        from manygil import InterpreterPoolExecutor

        def top(n):
            return n

        if __name__ == "__main__":
            def work(n):
                return top(n) * 3

            with InterpreterPoolExecutor(2) as pool:
                print(list(pool.map(work, range(4))), pool.submit(top, 5).result())
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[0, 3, 6, 9] 5\n"


def test_which_names_a_script_defines_outside_its_main_guard(tmp_path):
    from manygil import _transport

    script = tmp_path / "names.py"
    script.write_text(textwrap.dedent("""
        import os.path, json as j
        from x import y as z
        A = B = 1
        for i in range(2):
            pass
        try:
            def tried(): pass
        except ImportError:
            class Fallen: pass
        with open(__file__) as fh:
            pass
        if __name__ == "__main__":
            def guarded(): local = 1
            G = 2
        else:
            def imported(): pass
        def f():
            inner = 1
    """))
    assert _transport._names_bound_outside_guard(str(script)) == {
        "os", "j", "z", "A", "B", "i", "tried", "Fallen", "fh", "imported", "f"
    }
    script.write_text("from os import *\nif __name__ == '__main__':\n    def g(): pass\n")
    assert _transport._names_bound_outside_guard(str(script)) is None  # unknown: by reference


def test_why_a_refused_scripts_function_could_not_go_by_value_is_said(tmp_path, single_phase_dir):
    # The script imports a module that refuses an own GIL, so the worker cannot import it:
    # its function is sent again by value, which fails here (a lock among its globals).
    # That second error was swallowed; the task's error now says it (issue 30, 2.3).
    proc = run(
        """
        import threading
        import mg_single_phase  # refuses an own-GIL interpreter
        from manygil import InterpreterPoolExecutor

        LOCK = threading.Lock()

        def work(n):
            with LOCK:
                return n

        if __name__ == "__main__":
            with InterpreterPoolExecutor(1, fallback=None) as pool:
                try:
                    pool.submit(work, 1).result(timeout=60)
                except ImportError as exc:
                    print(*exc.__notes__, sep="\\n")
        """,
        tmp_path,
        path=(single_phase_dir,),
    )
    assert proc.returncode == 0, proc.stderr
    assert "mg_single_phase refuses to load" in proc.stdout, proc.stdout
    assert "work could not be sent by value either" in proc.stdout and "lock" in proc.stdout, proc.stdout


# A task submitted while the worker imports the caller's script (warm-up) is started
# only after that import was refused: it goes by value from the queue, not from its
# result (the CI run of 2026-12-06 met this order by chance on 3.14).  Then the script
# refused in an earlier pool: the next pool sends by value from submit().
_WHILE_PRELOADING = """
    import sys, threading, warnings
    import mg_single_phase  # refuses an own-GIL interpreter
    from manygil import InterpreterPoolExecutor, _faults

    LOCK = threading.Lock()

    def work(n):
        with LOCK:
            return n

    def show(future):
        try:
            print("result", future.result(timeout=60))
        except ImportError as exc:
            print(type(exc).__name__, *exc.__notes__, sep="\\n")

    if __name__ == "__main__":
        warnings.simplefilter("ignore")
        futures, ready, submitted = [], threading.Event(), threading.Event()
        def submit_now(side, worker):  # the worker imported the script, its refusal not yet read
            if ready.wait(60) and not futures:
                futures.append(pool.submit(work, 1))
                submitted.set()
        hook = _faults.hooked("interp.preloaded", submit_now)
        with hook:
            with InterpreterPoolExecutor(1, fallback=FALLBACK) as pool:
                ready.set()
                if sys.version_info < (3, 13):  # no worker imports the script as it starts
                    futures.append(pool.submit(work, 1))
                assert futures or submitted.wait(60), "the worker did not import the script"
                show(futures[0])
        with InterpreterPoolExecutor(1, fallback=FALLBACK) as pool:
            show(pool.submit(work, 2))
"""


def test_a_scripts_function_that_cannot_go_by_value_fails_with_the_refusal_when_queued_during_preload(
    tmp_path, single_phase_dir
):
    proc = run(_WHILE_PRELOADING.replace("FALLBACK", "None"), tmp_path, path=(single_phase_dir,))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("ImportError") == 2, out
    assert out.count("mg_single_phase refuses to load") == 2, out
    assert out.count("work could not be sent by value either") == 2 and "lock" in out, out


def test_a_scripts_function_that_cannot_go_by_value_runs_in_a_process_when_queued_during_preload(
    tmp_path, single_phase_dir
):
    proc = run(_WHILE_PRELOADING.replace("FALLBACK", '"process"'), tmp_path, path=(single_phase_dir,))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["result 1", "result 2"], proc.stdout


def test_a_later_pool_routes_a_refused_scripts_function_that_cannot_go_by_value_but_not_for_a_bad_argument(
    tmp_path, single_phase_dir
):
    # The first pool (no fallback) learns that the script does not import in a worker; the
    # second sends the script's functions by value from submit().  One that cannot go by
    # value runs in a process; a call whose argument cannot (a lock) fails alone, and its
    # function is not routed away for it.
    proc = run(
        """
        import threading, warnings
        import mg_single_phase  # refuses an own-GIL interpreter
        from manygil import InterpreterPoolExecutor

        LOCK = threading.Lock()

        def work(n):
            with LOCK:
                return n

        def pure(x):
            return x

        if __name__ == "__main__":
            warnings.simplefilter("ignore")
            with InterpreterPoolExecutor(1, fallback=None) as pool:
                print(pool.submit(pure, 1).result(timeout=60))
            with InterpreterPoolExecutor(1) as pool:
                print(pool.submit(work, 2).result(timeout=60))
                try:
                    pool.submit(pure, threading.Lock())
                except TypeError as exc:
                    print("argument:", "lock" in str(exc))
                print(pool.submit(pure, 3).result(timeout=60))
                print(*sorted(pool.routes()))
        """,
        tmp_path,
        path=(single_phase_dir,),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1", "2", "argument: True", "3", "__main__.work"], proc.stdout + proc.stderr


def test_the_process_module_imports_when_the_program_end_begins_during_its_import(tmp_path):
    # The fault injection caught it (seed 12, 3.13): a pool's thread imported
    # concurrent.futures.process just as the main thread began the program's end, and the
    # import failed ("can't register atexit after shutdown"): the process tasks failed.
    # Here a meta path hook begins "the end" during that import.
    proc = run(
        """
        import importlib.abc, sys, threading
        from manygil import _exit

        class EndBegins(importlib.abc.MetaPathFinder):
            begun = False

            def find_spec(self, name, path, target=None):
                if name == "concurrent.futures.process" and not self.begun:
                    self.begun = True  # the end begins once
                    threading._SHUTTING_DOWN = True
                return None

        sys.meta_path.insert(0, EndBegins())
        module = _exit.process_module()
        print(module.__name__, hasattr(module, "ProcessPoolExecutor"))
        threading._SHUTTING_DOWN = False
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "concurrent.futures.process True\n"


@pytest.mark.parametrize("end", ["del", "fall off"])
def test_a_refused_scripts_functions_run_when_the_pool_is_dropped_without_shutdown(tmp_path, single_phase_dir, end):
    # The fault injection found it (issue 23): the script imports a module that refuses
    # an own GIL, so its functions are sent again by value, which went through the
    # executor object: once `del pool` had dropped it, every task failed with
    # AttributeError "Can't get attribute 'work' on <module '__main__'>".
    proc = run(
        f"""
        import mg_single_phase  # refuses an own-GIL interpreter
        from manygil import InterpreterPoolExecutor
        #CALLBACK
        def work(n):
            return n * 2

        if __name__ == "__main__":
            pool = InterpreterPoolExecutor(2)
            for i in range(6):
                pool.submit(work, i).add_done_callback(report)
            {"del pool" if end == "del" else "pass"}
        """,
        tmp_path,
        path=(single_phase_dir,),
    )
    assert proc.returncode == 0, proc.stderr
    assert outcomes(proc.stdout) == sorted(f"done {2 * i}" for i in range(6)), proc.stdout + proc.stderr


def test_process_tasks_run_at_exit_when_the_script_imports_process_pools_after_the_pool(tmp_path, single_phase_dir):
    # Review found it: concurrent.futures.process imported after the pool was made ran its
    # exit hook before manygil's, which stopped the pool's process side: every process
    # task left at the end failed ("cannot schedule new futures after interpreter shutdown").
    proc = run(
        """
        import refusing_tasks
        from manygil import InterpreterPoolExecutor
        #CALLBACK
        if __name__ == "__main__":
            import warnings
            warnings.simplefilter("ignore")  # the FallbackWarning
            pool = InterpreterPoolExecutor(2)
            from concurrent.futures import ProcessPoolExecutor  # noqa: F401 - as a program may
            for i in range(6):
                pool.submit(refusing_tasks.where, i).add_done_callback(report)
        """,
        tmp_path,
        path=(single_phase_dir, FIXTURES),
    )
    assert proc.returncode == 0, proc.stderr
    done = [line.split(",")[0].replace("(", "") for line in outcomes(proc.stdout)]
    assert sorted(done) == sorted(f"done {2 * i}" for i in range(6)), proc.stdout + proc.stderr


def test_refused_tasks_waiting_at_exit_run_on_a_shared_gil_side(tmp_path, single_phase_dir):
    # With fallback="shared-gil", the calls a worker had queued when the program's end
    # began, refused there (an argument's class needs a refusing module), failed
    # ("cannot schedule new futures after interpreter shutdown"): the shared-GIL side's
    # own pool took them for new tasks.  The busy task returns only once the end has
    # begun (the hook sets the event); the side's pool is up before (3.12 starts no
    # thread at the end).
    proc = run(
        """
        import helpers
        import refusing_tasks
        from manygil import InterpreterPoolExecutor, _faults
        from manygil.sync import Event
        #CALLBACK
        if __name__ == "__main__":
            import warnings
            warnings.simplefilter("ignore")  # the FallbackWarning
            ending = Event()
            hook = _faults.hooked("program.ending", ending.set)
            hook.__enter__()  # for the program's end (kept: a collected hook would end its block)
            pool = InterpreterPoolExecutor(1, fallback="shared-gil")
            pool.submit(helpers.value_and_pid, refusing_tasks.Box(0)).result(timeout=60)  # the side is up
            pool.submit(helpers.wait_event, ending, 60).add_done_callback(report)
            for i in range(1, 4):
                pool.submit(helpers.value_and_pid, refusing_tasks.Box(i)).add_done_callback(report)
        """,
        tmp_path,
        path=(single_phase_dir, FIXTURES, os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0, proc.stderr
    done = [line.split(",")[0].replace("(", "") for line in outcomes(proc.stdout)]  # "done (1, pid)"
    assert sorted(done) == ["done 1", "done 2", "done 3", "done True"], proc.stdout + proc.stderr
