"""``python -m manygil run``: unmodified programs, their process pools on interpreters.

Each program runs twice as a subprocess with a time limit, on its own and under
``manygil run``, and what it prints is compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from manygil.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 120  # seconds per program run: a hang fails the test instead of the suite


def _python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=LIMIT)


def _both(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    """The program on its own, then under ``manygil run --report``."""
    return _python(args, cwd, **env), _python(["-m", "manygil", "run", "--report", *args], cwd, **env)


def _report(stderr: str) -> dict[str, tuple[int, int]]:
    """``--report``'s table: function -> (calls in interpreters, calls in processes)."""
    table = stderr[stderr.index("manygil run --report"):].splitlines()
    rows = {}
    for line in table:
        cells = line.split()
        if len(cells) >= 4 and cells[0].isdigit():
            rows[cells[-1]] = (int(cells[1]), int(cells[2]))
    return rows


def _script(tmp_path: Path, source: str, name: str = "program.py") -> str:
    (tmp_path / name).write_text(textwrap.dedent(source))
    return name


# CPython's documentation examples, as printed there.
PRIMES = (ROOT / "tests" / "fixtures" / "docs_process_pool.py").read_text()
SQUARES = """\
    from multiprocessing import Pool

    def f(x):
        return x*x

    if __name__ == '__main__':
        with Pool(5) as p:
            print(p.map(f, [1, 2, 3]))
"""


def test_the_docs_process_pool_executor_example(tmp_path):
    plain, run = _both([_script(tmp_path, PRIMES)], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    assert "1099726899285419 is prime: False" in run.stdout
    assert _report(run.stderr) == {"__main__.is_prime": (6, 0)}
    assert "1 ProcessPoolExecutor on interpreters" in run.stderr


def test_the_docs_pool_example(tmp_path):
    plain, run = _both([_script(tmp_path, SQUARES)], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout == "[1, 4, 9]\n"
    assert _report(run.stderr) == {"__main__.f": (3, 0)}


def test_the_program_sees_the_api_it_asked_for(tmp_path):
    """Types, argument checks, exceptions, initializers and map's chunks, as the
    standard library's pools give them: the same lines printed either way."""
    script = _script(tmp_path, """\
        import concurrent.futures
        import multiprocessing
        import multiprocessing.pool
        import sys
        from concurrent.futures import ProcessPoolExecutor

        seen = None

        def init(value):
            global seen
            seen = value

        def read(_=None):
            return seen

        def fail(x):
            raise KeyError(x)

        def square(x):
            return x * x

        def attempt(what, call):
            try:
                call()
            except Exception as exc:
                print(what, type(exc).__name__, exc)

        if __name__ == "__main__":
            with ProcessPoolExecutor(2, initializer=init, initargs=("exec",),
                                     mp_context=multiprocessing.get_context("spawn")) as ex:
                print(isinstance(ex, concurrent.futures.ProcessPoolExecutor), ex._max_workers)
                print(ex.submit(read).result(), list(ex.map(square, range(7), chunksize=3)))
                attempt("task", lambda: ex.submit(fail, 1).result())
            attempt("after shutdown", lambda: ex.submit(read))
            attempt("zero", lambda: ProcessPoolExecutor(0))
            attempt("initializer", lambda: ProcessPoolExecutor(1, initializer=3))
            for pool in (multiprocessing.Pool(2, init, ("pool",)),
                         multiprocessing.get_context("spawn").Pool(2, init, ("spawn",))):
                with pool:
                    print(isinstance(pool, multiprocessing.pool.Pool), pool._processes)
                    print(pool.apply(read), pool.map(square, range(5)), pool.starmap(pow, [(2, 5)]))
                    print(sorted(pool.imap_unordered(square, range(4))), pool.map_async(read, [1]).get(30))
                    attempt("apply", lambda: pool.apply(fail, (2,)))
                attempt("closed", lambda: pool.apply(read))
            attempt("processes", lambda: multiprocessing.Pool(0))
    """)
    plain, run = _both([script], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    assert "task KeyError 1" in run.stdout and "after shutdown RuntimeError" in run.stdout
    counts = _report(run.stderr)
    assert counts["__main__.square"] == (7 + 2 * (5 + 4), 0)  # map(chunksize=3) counts its 7 calls


def test_a_manager_dict_passed_to_tasks_keeps_processes_and_says_so(tmp_path):
    script = _script(tmp_path, """\
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        def put(shared, key):
            shared[key] = key * key
            return key

        def square(x):
            return x * x

        if __name__ == "__main__":
            with multiprocessing.Manager() as manager:
                shared = manager.dict()
                with multiprocessing.Pool(2) as pool:
                    print(pool.map(square, range(5)))
                    print(sorted(pool.starmap(put, [(shared, k) for k in range(4)])))
                    print(pool.apply(square, (7,)))
                print(sorted(shared.items()))
                with ProcessPoolExecutor(2) as ex:
                    print([f.result() for f in [ex.submit(put, shared, 10 + k) for k in range(2)]])
                    print(list(ex.map(square, range(3))))
                print(len(shared))
    """)
    plain, run = _both([script], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    notices = [line for line in run.stderr.splitlines() if line.startswith("manygil run: ")]
    assert len(notices) == 2, run.stderr
    assert all("multiprocessing.managers.DictProxy" in n and "in processes from now on" in n for n in notices)
    counts = _report(run.stderr)
    assert counts["__main__.put"] == (0, 6)
    assert counts["__main__.square"] == (5, 4)  # the pools' calls before the proxy came, then after
    assert "__main__.put: its multiprocessing.Pool switched to processes: a task's arguments include" in run.stderr


def _stdlib_tree(tmp_path: Path) -> Path:
    """30 small modules of the standard library's Lib/: a real tree nobody here wrote."""
    tree = tmp_path / "tree"
    tree.mkdir()
    lib = Path(sysconfig.get_paths()["stdlib"])
    small = sorted(p for p in lib.glob("*.py") if p.stat().st_size < 12_000)[:30]
    for path in small:
        shutil.copy(path, tree)
    assert len(small) == 30
    return tree


def test_flake8_gives_the_same_output(tmp_path):
    pytest.importorskip("flake8")
    _stdlib_tree(tmp_path)
    plain, run = _both(["-m", "flake8", "-j", "2", "tree"], tmp_path)
    assert plain.stdout, plain.stderr  # the standard library does not follow flake8's defaults
    assert run.returncode == plain.returncode
    assert run.stdout == plain.stdout
    assert _report(run.stderr) == {"flake8.checker._mp_run": (30, 0)}  # its initializer ran there too


@pytest.mark.xfail(
    sys.version_info < (3, 13),
    reason="CPython 3.12.1 aborts at exit once an own-GIL interpreter made the first keyword call of "
    "an Argument Clinic function (docs/limitations.md); pylint's tasks make one: its output is right",
    strict=True,
)
def test_pylint_gives_the_same_messages(tmp_path):
    """pylint -j 2: a ProcessPoolExecutor whose initializer gets the linter pickled by
    dill (initargs), and whose tasks return its messages."""
    pytest.importorskip("pylint")
    tree = _stdlib_tree(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tree.glob("*.py"))[:8]
    args = ["-m", "pylint", "-j", "2", "--disable=all", "--enable=W,E", "--score=n", *files]
    plain, run = _both(args, tmp_path)
    if "Traceback" in plain.stderr and not plain.stdout:
        pytest.skip(f"pylint itself does not run on this CPython: {plain.stderr.splitlines()[-1]}")
    assert plain.stdout, plain.stderr  # the standard library has pylint warnings
    assert run.returncode == plain.returncode
    assert sorted(run.stdout.splitlines()) == sorted(plain.stdout.splitlines())
    calls = sum(a + b for a, b in _report(run.stderr).values())
    assert calls > 0, run.stderr  # its pool was manygil's


def test_black_gives_the_same_verdicts(tmp_path):
    pytest.importorskip("black")
    _stdlib_tree(tmp_path)
    args = ["-m", "black", "--check", "--workers", "2", "tree"]
    plain = _python(args, tmp_path, BLACK_CACHE_DIR=str(tmp_path / "cache-plain"))
    run = _python(["-m", "manygil", "run", "--report", *args], tmp_path, BLACK_CACHE_DIR=str(tmp_path / "cache-run"))
    verdicts = [line for line in plain.stderr.splitlines() if line.startswith(("would", "30 files", "29 files"))]
    assert verdicts, plain.stderr
    assert run.returncode == plain.returncode
    assert sorted(plain.stderr.splitlines()) == sorted(
        line for line in run.stderr.split("manygil run --report")[0].splitlines() if "manygil" not in line
    )
    interpreters, processes = _report(run.stderr)["black.format_file_in_place"]
    assert interpreters + processes == 30
    if processes:
        # A mypyc-compiled black aborts an own-GIL interpreter on import (3.13, 3.14):
        # found by `manygil check black` before any task went there, and said; or it
        # refuses one (3.12): the executor's fallback, which says so in a warning.
        assert ("black.format_file_in_place runs in process workers: importing black crashes" in run.stderr
                or "FallbackWarning: manygil: black.format_file_in_place runs in a process worker from now on: "
                "the extension module black refuses" in run.stderr)


def test_black_diff_passes_a_manager_lock_and_keeps_processes(tmp_path):
    pytest.importorskip("black")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.py").write_text("x = ( 1 )\n")
    (tmp_path / "tree" / "b.py").write_text("y = [1,2]\n")
    args = ["-m", "black", "--diff", "--workers", "2", "tree"]
    plain = _python(args, tmp_path, BLACK_CACHE_DIR=str(tmp_path / "cache-plain"))
    run = _python(["-m", "manygil", "run", "--report", *args], tmp_path, BLACK_CACHE_DIR=str(tmp_path / "cache-run"))
    assert run.returncode == plain.returncode == 0, run.stderr

    def hunks(out: str) -> list[str]:
        return sorted(line for line in out.splitlines() if not line.startswith(("---", "+++")))  # no dates

    assert hunks(run.stdout) == hunks(plain.stdout)
    assert "a multiprocessing.Manager proxy (multiprocessing.managers.AcquirerProxy)" in run.stderr
    assert _report(run.stderr)["black.format_file_in_place"] == (0, 2)


def test_joblib_runs_on_the_manygil_backend(tmp_path):
    pytest.importorskip("joblib")
    pytest.importorskip("numpy")
    script = _script(tmp_path, """\
        from joblib import Parallel, delayed

        def square(x):
            return x * x

        def total(n):
            import numpy
            return int(numpy.arange(n).sum())

        if __name__ == "__main__":
            print(Parallel(n_jobs=2)(delayed(square)(i) for i in range(10)))
            print(Parallel(n_jobs=2)(delayed(total)(n) for n in (10, 100)))
    """)
    plain, run = _both([script], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    counts = _report(run.stderr)
    assert counts["__main__.square"] == (10, 0)
    assert counts["__main__.total"] == (0, 2)  # numpy, imported in its body, refuses interpreters
    assert "__main__.total runs in process workers: it imports numpy in its body" in run.stderr


# -- the command line --------------------------------------------------------------------


def test_the_program_gets_its_own_arguments(tmp_path):
    script = _script(tmp_path, """\
        import sys
        print(sys.argv, __name__)
    """)
    run = _python(["-m", "manygil", "run", script, "--report", "-m", "x", "--", "y"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{[script, '--report', '-m', 'x', '--', 'y']} __main__\n"
    assert "manygil run --report" not in run.stderr
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text("import sys\nprint(sys.argv[1:], __name__)\nsys.exit(3)\n")
    run = _python(["-m", "manygil", "run", "--report", "-m", "pkg", "-j", "2", "--help"], tmp_path)
    assert run.returncode == 3
    assert run.stdout == "['-j', '2', '--help'] __main__\n"
    assert "no task was sent to a pool" in run.stderr


def test_run_without_a_program_is_a_usage_error(capsys):
    assert main(["run"]) == 2
    assert "name a script or -m module" in capsys.readouterr().err
    assert main(["run", "--bogus", "x.py"]) == 2
    assert "unknown option --bogus" in capsys.readouterr().err
    assert main(["run", "--help"]) == 0
    assert "usage: manygil run [--report] script.py" in capsys.readouterr().out
