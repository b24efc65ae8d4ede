"""Refusals met by a main script or an interactive session (issue 14): functions that go
by value, their globals, what a later pool remembers, the missing main guard.  Each test
runs its program in a fresh process.

Real refusals only: ``mg_single_phase`` (a single-phase-init module built by the tests)
and numpy, which refuse an interpreter with its own GIL on every CPython version."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_a_script_importing_numpy_at_its_top_keeps_its_pure_functions_in_interpreters():
    pytest.importorskip("numpy")
    pytest.importorskip("psutil")
    out = subprocess.run(
        [sys.executable, os.path.join(FIXTURES, "numpy_script.py")],
        capture_output=True, text=True, timeout=300, cwd=FIXTURES,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if importlib.util.find_spec("pyarrow") is not None:
        assert lines.pop(6) == "with_pyarrow 4 process"
    assert lines == [
        # Calls queued by reference before the first refusal are resent by value, never
        # routed away (a bug: the second refused pure call sent pure to the processes).
        "burst [('pure', 'interpreter'), ('with_numpy', 'process')] ['__main__.with_numpy']",
        "pure 328350 interpreter",
        "with_numpy 4950 process",
        "pure 2646700 interpreter",
        "with_numpy 19900 process",
        "with_psutil 7 process",
        "chunked 480200",
        "routes ['__main__.with_numpy', '__main__.with_psutil']",
    ]
    assert "python -m manygil check numpy" in out.stderr and "python -m manygil check psutil" in out.stderr


def test_a_later_pool_does_not_import_a_script_that_a_module_refused(tmp_path):
    pytest.importorskip("numpy")
    pytest.importorskip("cloudpickle")
    script = tmp_path / "numpy_at_the_top.py"
    script.write_text(textwrap.dedent("""
        print("top level", flush=True)
        if True:  # not imported before the script by a worker: it runs the script's top
            import numpy as np
        from manygil import InterpreterPoolExecutor

        def pure(x):
            return x + 1

        if __name__ == "__main__":
            for _ in range(2):
                with InterpreterPoolExecutor(2) as pool:
                    print(list(pool.map(pure, range(4))), flush=True)
                print("pool closed", flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("[1, 2, 3, 4]") == 2
    # The first pool's workers tried the script (they print its first line, then numpy
    # refuses); the second pool's send pure by value from the start.
    assert "top level" in lines[1:lines.index("pool closed")]
    assert "top level" not in lines[lines.index("pool closed"):]


def test_a_later_pool_does_not_keep_the_route_of_a_redefined_interactive_function():
    pytest.importorskip("numpy")
    pytest.importorskip("cloudpickle")
    code = (
        "import warnings\n"
        "import numpy as np\n"
        "from manygil import FallbackWarning, InterpreterPoolExecutor\n"
        "warnings.simplefilter('ignore', FallbackWarning)\n"
        "def total(n): return int(np.arange(n).sum())\n"
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    pool.submit(total, 4).result(60)\n"
        "    print(sorted(pool.routes()))\n"
        "def total(n): return n * 2\n"  # redefined, as in a notebook: pure now
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    print(sorted(pool.routes()), pool.submit(total, 4).result(60), sorted(pool.routes()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['__main__.total']", "[] 8 []"]


def test_functions_of_an_interactive_session_that_need_numpy_run_in_a_process():
    pytest.importorskip("numpy")
    pytest.importorskip("cloudpickle")
    code = (
        "import os, warnings\n"
        "import numpy as np\n"
        "from manygil import FallbackWarning, InterpreterPoolExecutor\n"
        "warnings.simplefilter('ignore', FallbackWarning)\n"
        "def total(n): return int(np.arange(n).sum()), os.getpid()\n"
        "def twice(n): return n * 2, os.getpid()\n"
        "with InterpreterPoolExecutor(2) as pool:\n"
        "    (a, pa), (b, pb) = pool.submit(total, 10).result(60), pool.submit(twice, 4).result(60)\n"
        "    chunks = [v for v, _ in pool.map(total, [3, 4, 5], chunksize=2)]\n"
        "    print(a, pa != os.getpid(), b, pb == os.getpid(), chunks)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "45 True 8 True [3, 6, 10]"


def test_a_script_function_that_uses_a_module_that_refused_goes_by_its_globals(single_phase_dir, tmp_path):
    # By value, a function of the script sends only the globals it uses: one that uses
    # the refusing module (itself, or through another function of the script) goes to
    # the processes untried, a pure one stays in the interpreters.
    pytest.importorskip("cloudpickle")
    script = tmp_path / "single_phase_at_the_top.py"
    script.write_text(textwrap.dedent("""
        import os, sys, warnings
        import mg_single_phase
        from manygil import FallbackWarning, InterpreterPoolExecutor

        def pure(x):
            return x + 1, os.getpid()

        def uses_it(x):
            return mg_single_phase.__name__, x, os.getpid()

        def through_another(x):
            return uses_it(x)

        if __name__ == "__main__":
            warnings.simplefilter("ignore", FallbackWarning)
            with InterpreterPoolExecutor(1) as pool:
                value, pid = pool.submit(pure, 1).result(120)  # the script refuses the worker
                print(value, pid == os.getpid())
                for fn in (uses_it, through_another):
                    name, value, pid = pool.submit(fn, 2).result(120)
                    print(fn.__name__, name, value, pid != os.getpid(), pool.routes()["__main__." + fn.__name__])
                value, pid = pool.submit(pure, 5).result(120)
                print(value, pid == os.getpid(), sorted(pool.routes()))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([single_phase_dir, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    why = "process: the extension module mg_single_phase refuses an own-GIL interpreter (it refused an earlier task)"
    assert out.stdout.splitlines() == [
        "2 True",
        f"uses_it mg_single_phase 2 True {why}",
        f"through_another mg_single_phase 2 True {why}",
        "6 True ['__main__.through_another', '__main__.uses_it']",
    ]


def test_a_worker_meets_the_refusal_of_a_scripts_import_before_the_rest_of_the_script(single_phase_dir, tmp_path):
    # A worker imports the script's top-level imports that load extension modules
    # first: mg_single_phase refuses before the script's code and other imports run
    # there (each worker printed both lines before, then met the refusal).
    pytest.importorskip("cloudpickle")
    (tmp_path / "noisy.py").write_text('print("noisy imported", flush=True)\n')
    script = tmp_path / "refused_late.py"
    script.write_text(textwrap.dedent("""
        print("script runs", flush=True)
        import noisy
        import mg_single_phase
        from manygil import InterpreterPoolExecutor

        def pure(x):
            return x + 1

        if __name__ == "__main__":
            with InterpreterPoolExecutor(2) as pool:
                print(list(pool.map(pure, range(4))), flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([single_phase_dir, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["script runs", "noisy imported", "[1, 2, 3, 4]"]


def test_a_notebook_function_that_uses_a_module_that_refused_goes_untried(single_phase_dir):
    # Functions of an interactive session always go by value: what they use decides.
    pytest.importorskip("cloudpickle")
    code = (
        "import os, warnings\n"
        "import mg_single_phase\n"
        "from manygil import FallbackWarning, InterpreterPoolExecutor\n"
        "warnings.simplefilter('ignore', FallbackWarning)\n"
        "def first(n): return mg_single_phase.__name__, os.getpid()\n"
        "def second(n): return first(n)\n"
        "def pure(n): return n * 2, os.getpid()\n"
        "with InterpreterPoolExecutor(1) as pool:\n"
        "    print(pool.submit(first, 1).result(120)[1] != os.getpid())\n"
        "    print(pool.submit(second, 1).result(120)[1] != os.getpid(), pool.routes()['__main__.second'])\n"
        "    print(pool.submit(pure, 1).result(120) == (2, os.getpid()))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([single_phase_dir, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "True",
        "True process: the extension module mg_single_phase refuses an own-GIL interpreter (it refused an earlier task)",
        "True",
    ]


def test_a_script_without_a_main_guard_is_told_so_by_the_process_worker_too(tmp_path):
    # On 3.14 the forkserver imports __main__ itself, and the guard error ends it: the
    # task fails when its process cannot start (it hung in shutdown, waiting for it).
    pytest.importorskip("numpy")
    script = tmp_path / "no_guard_numpy.py"
    script.write_text(
        "import numpy as np\n"
        "from manygil import InterpreterPoolExecutor\n\n"
        "def total(n):\n    return int(np.arange(n).sum())\n\n"
        "with InterpreterPoolExecutor(2) as pool:\n    print(list(pool.map(total, range(8))))\n"
    )  # several tasks: a process that died broke its slot, and reusing it hung (3.13)
    out = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert "while a process worker imported your main script" in out.stderr
    assert 'no `if __name__ == "__main__":` guard' in out.stderr
    # Once a process could not start, the other tasks fail without starting more: the
    # message comes at most once per worker, not once per task.
    assert out.stderr.count("while a process worker imported your main script") <= 2
    assert "no process worker of this pool could start" in out.stderr
