"""``manygil.joblib``: joblib's ``Parallel`` on interpreters (issue 27, part 2).

The same calls run on joblib's default backend (loky) and on ``"manygil"`` and must
give the same results in the same order, or the same exception.  Tasks that must block
wait on a queue the test controls, and are ended by the backend (cancel), never by the
clock.

The tasks live in modules that import neither joblib nor numpy (tests/helpers.py, and
``joblib_tasks``, written here): a function whose module imports joblib cannot load in
an own-GIL interpreter (joblib imports faulthandler, which refuses one), so it runs in
a process worker, which is what ``joblib_nested`` checks on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from manygil import interpreters as I

from . import helpers

joblib = pytest.importorskip("joblib")
from joblib import Parallel, delayed, parallel_config

import manygil.joblib  # registers "manygil"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TASKS = '''
import os


def where(x):
    """x squared, and the interpreter and process that computed it."""
    from manygil import interpreters

    return x * x, interpreters.get_current().id, os.getpid()


def signal_then_spin(started):
    """Say so on the queue ``started``, then loop in pure Python until interrupted."""
    started.put("running")
    while True:
        pass


def fail_once_started(started):
    """Wait until another task runs, then fail."""
    started.get(timeout=30)
    raise KeyError("first error")


def with_kwargs(a, *, scale=1, shift=0):
    return a * scale + shift


def imports_numpy_inside(x):
    import numpy

    return int(numpy.int64(x)) + 1, os.getpid()


def uses_joblib_inside(n):
    from joblib import Parallel, delayed

    return Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(n))
'''

NUMPY_TASKS = '''
import os

import numpy as np


def np_total(values):
    return int(np.sum(np.asarray(values)))


def np_where(values):
    return int(np.sum(values)), os.getpid()
'''

NESTED_TASKS = '''
import os

from joblib import Parallel, delayed
from joblib.parallel import get_active_backend


def nested(n):
    """A Parallel call inside a task: its results and the backend it used."""
    inner = Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(n))
    return inner, type(get_active_backend()[0]).__name__
'''


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """The task modules, on sys.path (workers, loky's too, inherit the caller's)."""
    folder = tmp_path_factory.mktemp("joblib_tasks")
    sources = {"joblib_tasks": TASKS, "joblib_np_tasks": NUMPY_TASKS, "joblib_nested": NESTED_TASKS}
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in sources:
            sys.modules.pop(name, None)


@pytest.fixture
def tasks(modules):
    import joblib_tasks

    return joblib_tasks


@pytest.fixture
def loky():
    """joblib's default backend; its reusable workers are shut down after the test."""
    yield
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def run(calls, backend, **kwargs):
    calls = list(calls)
    with parallel_config(backend=backend):
        return Parallel(**{"n_jobs": 2, **kwargs})(calls)


def outcome(calls, backend, **kwargs):
    """('ok', results) or ('raised', type, message) of a Parallel call."""
    try:
        return ("ok", run(calls, backend, **kwargs))
    except Exception as exc:  # noqa: BLE001 - compared between backends
        return ("raised", type(exc), str(exc))


# -- registration and n_jobs ---------------------------------------------------------------

def test_importing_the_module_registers_the_backend():
    from joblib.parallel import BACKENDS

    assert BACKENDS["manygil"] is manygil.joblib.ManygilBackend
    manygil.joblib.register()  # again: harmless
    with parallel_config(backend="manygil"):
        backend, _ = joblib.parallel.get_active_backend()
    assert isinstance(backend, manygil.joblib.ManygilBackend)


def test_n_jobs_means_what_it_means_for_joblibs_process_backends():
    cores = joblib.cpu_count()
    with parallel_config(backend="manygil"):
        assert joblib.effective_n_jobs(-1) == cores
        assert joblib.effective_n_jobs(-2) == max(cores - 1, 1)
        assert joblib.effective_n_jobs(-1000) == 1
        assert joblib.effective_n_jobs(3) == 3
        assert joblib.effective_n_jobs(None) == 1
        with pytest.raises(ValueError, match="n_jobs == 0"):
            joblib.effective_n_jobs(0)


def test_tasks_run_in_own_gil_interpreters_of_this_process(tasks):
    out = run((delayed(tasks.where)(i) for i in range(40)), "manygil")
    assert [value for value, _, _ in out] == [i * i for i in range(40)]
    main = I.get_main().id
    assert {pid for _, _, pid in out} == {os.getpid()}
    assert main not in {interp for _, interp, _ in out}


def test_n_jobs_1_runs_the_calls_in_the_caller_as_joblib_does(tasks):
    out = run((delayed(tasks.where)(i) for i in range(3)), "manygil", n_jobs=1)
    assert out == [(i * i, I.get_main().id, os.getpid()) for i in range(3)]


# -- the same results as joblib's default backend ------------------------------------------

@pytest.mark.parametrize("batch_size", ["auto", 1, 7])
@pytest.mark.parametrize("n_jobs", [2, -1])
def test_results_and_order_equal_the_default_backend(tasks, loky, batch_size, n_jobs):
    def calls():
        for i in range(200):
            if i % 3 == 0:
                yield delayed(helpers.add)(i, b=-1)
            elif i % 3 == 1:
                yield delayed(tasks.with_kwargs)(i, scale=2, shift=i)
            else:
                yield delayed(divmod)(i, 7)

    options = {"n_jobs": n_jobs, "batch_size": batch_size}
    expected = run(calls(), "loky", **options)
    assert run(calls(), "manygil", **options) == expected
    assert expected[:3] == [-1, 3, (0, 2)]


def test_a_batch_crosses_as_one_task(tasks, monkeypatch):
    sizes = []
    submit = manygil.joblib.ManygilBackend.submit

    def spy(self, func, callback=None):
        sizes.append(len(func))
        return submit(self, func, callback)

    monkeypatch.setattr(manygil.joblib.ManygilBackend, "submit", spy)
    out = run((delayed(tasks.where)(i) for i in range(100)), "manygil", batch_size=25)
    assert [value for value, _, _ in out] == [i * i for i in range(100)]
    assert sum(sizes) == 100 and max(sizes) > 1
    start = 0
    for size in sizes:  # batches are sent in the calls' order: each ran in one interpreter
        assert len({interp for _, interp, _ in out[start:start + size]}) == 1
        start += size


def test_an_exception_propagates_with_its_type_as_on_the_default_backend(tasks, loky):
    calls = [delayed(helpers.fails_on_seven)(i) for i in range(1, 14)]  # one fails
    mine = outcome(calls, "manygil")
    assert mine == outcome(calls, "loky")
    assert mine == ("raised", ValueError, "seven divides 7")


def test_the_first_error_cancels_the_calls_still_running(tasks):
    # The spinning task ends only when cancelled: without that, the pool's shutdown at the
    # end of the Parallel call would wait for it until the test's time limit.
    started = I.create_queue()
    calls = [delayed(tasks.signal_then_spin)(started), delayed(tasks.fail_once_started)(started)]
    calls += [delayed(tasks.signal_then_spin)(started) for _ in range(5)]
    with pytest.raises(KeyError, match="first error"):
        run(calls, "manygil", batch_size=1)


def test_a_managed_parallel_keeps_its_workers_and_works_after_an_error(tasks):
    with parallel_config(backend="manygil"):
        with Parallel(n_jobs=2) as parallel:
            assert parallel(delayed(helpers.add)(i, 1) for i in range(5)) == [1, 2, 3, 4, 5]
            for _ in range(5):
                with pytest.raises(ValueError, match="seven divides 7"):
                    parallel(delayed(helpers.fails_on_seven)(i) for i in range(1, 10))
                # nothing of the failed call leaks into the next one
                assert parallel(delayed(helpers.add)(i, 2) for i in range(3)) == [2, 3, 4]


def test_backend_options_go_to_the_executor():
    with parallel_config(backend="manygil", initializer=helpers.init_worker, initargs=(7,)):
        out = Parallel(n_jobs=2)(delayed(helpers.read_init)() for _ in range(4))
    assert out == [[7]] * 4


# -- generators ----------------------------------------------------------------------------

def test_a_generator_gives_the_results_in_order():
    calls = [delayed(helpers.add)(i, 10) for i in range(50)]
    with parallel_config(backend="manygil"):
        gen = Parallel(n_jobs=2, return_as="generator")(calls)
        assert not isinstance(gen, list)
        assert list(gen) == [i + 10 for i in range(50)]


def test_an_unordered_generator_gives_the_same_values():
    calls = [delayed(helpers.add)(i, 10) for i in range(50)]
    with parallel_config(backend="manygil"):
        try:
            unordered = Parallel(n_jobs=2, return_as="generator_unordered")(calls)
        except ValueError:
            pytest.skip(f"joblib {joblib.__version__} has no return_as='generator_unordered'")
        assert sorted(unordered) == [i + 10 for i in range(50)]


def test_a_generator_closed_early_cancels_what_is_left(tasks):
    started = I.create_queue()
    calls = [delayed(helpers.add)(1, 1)] + [delayed(tasks.signal_then_spin)(started) for _ in range(3)]
    with parallel_config(backend="manygil"):
        gen = Parallel(n_jobs=2, return_as="generator", batch_size=1)(calls)
        assert next(gen) == 2
        assert started.get(timeout=30) == "running"
        with pytest.warns(UserWarning, match="have been cancelled"):
            gen.close()


# -- the fallback: numpy ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::manygil.FallbackWarning")
def test_numpy_tasks_mixed_with_pure_ones_give_the_default_backends_results(tasks, loky):
    pytest.importorskip("numpy")
    import joblib_np_tasks as np_tasks

    def calls():
        for i in range(30):
            yield delayed(np_tasks.np_total)([i, i, 1]) if i % 3 == 0 else delayed(helpers.add)(i, i)

    for batch_size in (1, 4):  # 4: batches that hold both functions
        expected = run(calls(), "loky", batch_size=batch_size)
        assert run(calls(), "manygil", batch_size=batch_size) == expected


@pytest.mark.filterwarnings("ignore::manygil.FallbackWarning")
def test_numpy_tasks_run_in_process_workers_and_the_others_in_interpreters(tasks):
    np = pytest.importorskip("numpy")
    import joblib_np_tasks as np_tasks

    calls = []
    for i in range(12):
        calls.append(delayed(tasks.where)(i))
        calls.append(delayed(np_tasks.np_where)([i]))  # its module imports numpy
        calls.append(delayed(np_tasks.np_where)(np.arange(i)))
    out = run(calls, "manygil", batch_size=3)
    main = I.get_main().id
    pure, by_module, by_argument = out[0::3], out[1::3], out[2::3]
    assert [value for value, _, _ in pure] == [i * i for i in range(12)]
    assert all(pid == os.getpid() and interp != main for _, interp, pid in pure)
    assert [value for value, _ in by_module] == list(range(12))
    assert [value for value, _ in by_argument] == [i * (i - 1) // 2 for i in range(12)]
    assert os.getpid() not in {pid for _, pid in by_module + by_argument}


# -- nesting -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::manygil.FallbackWarning")
def test_a_nested_parallel_runs_in_a_process_worker_with_joblibs_nested_backend(modules, loky):
    import joblib_nested

    calls = [delayed(joblib_nested.nested)(n) for n in (3, 5)]
    expected = run(calls, "loky")
    assert expected == [([0, 1, 2], "ThreadingBackend"), ([0, 1, 2, 3, 4], "ThreadingBackend")]
    assert run(calls, "manygil") == expected


def test_a_task_that_imports_joblib_while_running_says_why_it_fails_and_runs_when_named(tasks):
    calls = [delayed(tasks.uses_joblib_inside)(3), delayed(helpers.add)(1)]
    with pytest.raises(ImportError, match=r"joblib does not load in an interpreter with its own GIL.*"
                                          r"in_processes=\[uses_joblib_inside\]"):
        run(calls, "manygil", batch_size=1)
    with parallel_config(backend="manygil", in_processes=[tasks.uses_joblib_inside]):
        assert Parallel(n_jobs=2, batch_size=1)(calls) == [[0, 1, 2], 1]


def test_a_task_that_imports_numpy_while_running_runs_in_processes_when_named(tasks):
    pytest.importorskip("numpy")
    calls = [delayed(tasks.imports_numpy_inside)(i) for i in range(4)]
    with pytest.raises(ImportError, match=r"in_processes=\[imports_numpy_inside\]"):
        run(calls, "manygil")
    with parallel_config(backend="manygil", in_processes=[tasks.imports_numpy_inside]):
        out = Parallel(n_jobs=2)(calls)
    assert [value for value, _ in out] == [1, 2, 3, 4]
    assert os.getpid() not in {pid for _, pid in out}


# -- a program -----------------------------------------------------------------------------

def test_a_script_using_the_backend_ends_cleanly(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(
        """
        from joblib import Parallel, delayed, parallel_config
        import manygil.joblib

        def square(x):
            return x * x

        def fail(x):
            if x == 3:
                raise ValueError(f"bad {x}")
            return x

        if __name__ == "__main__":
            with parallel_config(backend="manygil"):
                print(Parallel(n_jobs=2)(delayed(square)(i) for i in range(6)))
                print(list(Parallel(n_jobs=2, return_as="generator")(delayed(square)(i) for i in range(3))))
                try:
                    Parallel(n_jobs=2)(delayed(fail)(i) for i in range(6))
                except ValueError as exc:
                    print("raised", exc)
            manygil.joblib.register(make_default=True)
            print(Parallel(n_jobs=2)(delayed(square)(i) for i in range(2)))
        """
    ))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[0, 1, 4, 9, 16, 25]\n[0, 1, 4]\nraised bad 3\n[0, 1]\n"
    assert proc.stderr == ""
