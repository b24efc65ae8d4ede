"""``pytest --own-gil``: small suites run by pytester, each test in 2 own-GIL interpreters.

The inner suites say where they ran by writing files (interpreter id, process id) into a
folder the outer test reads; two interpreters meet through a FIFO, which opens only when
both ends are open at once, so "at once" is checked without a clock.  The shared-state
case uses a C extension built here that declares per-interpreter-GIL support but keeps a
C static counter; the same module with module state passes.  The same pairs from Cython
and pybind11 (tests/ext_pairs/) are built here too, with a third module each, built the
tool's default way, which refuses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from importlib import metadata

import pytest

pytest_plugins = ["pytester"]

# A child that gets stuck would otherwise wait for the outer time limit: fail sooner, reported.
CHILD_LIMIT = "--own-gil-timeout=40"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", CHILD_LIMIT, *args)


def where_ran(folder) -> list[tuple[str, int, int]]:
    """(test, interpreter id, pid) of each file the inner tests wrote."""
    rows = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("ran-"):
            _, test, interp, pid = path.name.split("-")
            rows.append((test, int(interp), int(pid)))
    return rows


RECORD = """
import os
from manygil import interpreters

def record(test):
    folder = os.environ["MG_OUT"]
    name = f"ran-{test}-{interpreters.get_current().id}-{os.getpid()}"
    with open(os.path.join(folder, name), "w"):
        pass
"""


@pytest.fixture
def out(tmp_path, monkeypatch):
    """The folder the inner tests write into (the child process inherits MG_OUT)."""
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.setenv("MG_OUT", str(folder))
    return folder


def test_the_plugin_is_registered_through_the_pytest11_entry_point():
    points = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert points.get("manygil") == "manygil.pytest_plugin"


def test_without_the_option_the_plugin_does_nothing(pytester, out):
    pytester.makepyfile(test_plain=RECORD + """
def test_here():
    record("here")
""")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert where_ran(out) == [("here", 0, os.getpid())]  # the main interpreter of this process
    assert "own-GIL" not in result.stdout.str()


def test_a_passing_suite_runs_each_test_in_two_interpreters_at_once(pytester, out):
    os.mkfifo(out / "fifo")
    pytester.makepyfile(test_pure=RECORD + """
import pytest

def test_meet():
    # Opening a FIFO blocks until its other end is open: both interpreters run this at once.
    folder = os.environ["MG_OUT"]
    try:
        os.close(os.open(os.path.join(folder, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        mode = os.O_WRONLY
    except FileExistsError:
        mode = os.O_RDONLY
    os.close(os.open(os.path.join(folder, "fifo"), mode))
    record("meet")

@pytest.mark.parametrize("x, y", [(1, 2), ("a", "aa")])
def test_param(x, y):
    assert x + x == y
    record(f"param{y!s}")

class TestInAClass:
    def setup_method(self):
        self.value = 3

    def test_method(self):
        assert self.value == 3
        record("method")

@pytest.mark.skip(reason="skipped in the main interpreter")
def test_skipped():
    record("skipped")

def test_skips_inside():
    pytest.skip("skipped inside")

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False

@pytest.mark.xfail(raises=KeyError, strict=True)
def test_xfail_raises():
    {}["missing"]
""")
    result = run(pytester, "--own-gil=2", "-v")
    result.assert_outcomes(passed=4, skipped=2, xfailed=2)
    rows = where_ran(out)
    tests = {t for t, _, _ in rows}
    assert tests == {"meet", "param2", "paramaa", "method"}
    for test in tests:
        interps = sorted(i for t, i, _ in rows if t == test)
        assert len(interps) == 2 and len(set(interps)) == 2 and 0 not in interps, (test, rows)
    assert {pid for _, _, pid in rows} - {os.getpid()} == {pid for _, _, pid in rows}  # a child process
    result.stdout.fnmatch_lines([
        "*manygil: each test runs in 2 own-GIL interpreters at once, in a child process*",
        "*test_pure.py::test_meet PASSED [[]2 interpreters[]]*",
        "*test_pure.py: loads; 7 run, 0 fail under own GIL*",
    ])


def test_iterations_run_each_test_k_times_in_each_interpreter(pytester, out):
    pytester.makepyfile(test_again=RECORD + """
def test_count():
    with open(os.path.join(os.environ["MG_OUT"], "runs"), "a") as f:
        f.write(f"{interpreters.get_current().id}\\n")
""")
    result = run(pytester, "--own-gil=2", "--own-gil-iterations=3")
    result.assert_outcomes(passed=1)
    lines = (out / "runs").read_text().split()
    assert len(lines) == 6 and len(set(lines)) == 2


def test_a_failure_shows_the_interpreter_and_the_traceback_from_inside_it(pytester):
    pytester.makepyfile(test_fails="""
import pytest
from manygil import interpreters

def helper():
    return interpreters.get_current().id

def test_wrong():
    value = helper()
    assert value == -1

@pytest.mark.xfail(raises=KeyError)
def test_not_the_expected_type():
    raise ValueError("not a KeyError")
""")
    result = run(pytester, "--own-gil=2")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    # each interpreter's own traceback: the value is that interpreter's id
    ids = re.findall(r"^---- in interpreter (\d+) ----$", text, re.M)
    assert len(set(ids)) == 2 and "0" not in ids, text
    for interp in ids:
        result.stdout.fnmatch_lines([
            f"---- in interpreter {interp} ----",
            "Traceback (most recent call last):",
            '*test_fails.py", line 9, in test_wrong',
            "*assert value == -1",
            f"AssertionError: assert {interp} == -1",  # pytest's assert rewriting, inside the interpreter
        ])
    result.stdout.fnmatch_lines(["*test_fails.py: loads; 2 run, 2 fail under own GIL*"])
    # a failure of another type than xfail(raises=...) names is a failure
    result.stdout.fnmatch_lines(["*_ test_not_the_expected_type _*", "*ValueError: not a KeyError"])


def test_tmp_path_monkeypatch_capsys_and_module_fixtures_work_inside(pytester, out):
    pytester.makepyfile(test_fixtures=RECORD + """
import pytest

CALLS = []

@pytest.fixture
def note(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("set up")
    yield path
    path.write_text("torn down")

def test_fixtures(note, tmp_path, monkeypatch, capsys):
    assert tmp_path.name.startswith("interpreter-")
    assert note.read_text() == "set up"
    monkeypatch.setattr(os, "sep", "!")
    monkeypatch.setitem(os.environ, "MG_PATCHED", "1")
    print("from inside")
    assert capsys.readouterr().out == "from inside\\n"
    record("fixtures")

def test_patches_were_undone():
    assert os.sep == "/" and "MG_PATCHED" not in os.environ
""")
    result = run(pytester, "--own-gil=2", "--basetemp", str(pytester.path / "bt"))
    result.assert_outcomes(passed=2)
    assert len(where_ran(out)) == 2
    notes = sorted((pytester.path / "bt").rglob("note.txt"))
    # set up in each interpreter, in its own tmp_path; not in the main interpreter
    assert [n.parent.name for n in notes] == ["interpreter-0", "interpreter-1"]
    assert {n.read_text() for n in notes} == {"torn down"}  # the fixture's teardown ran there


def test_a_test_needing_another_fixture_runs_in_the_main_interpreter_and_says_which(pytester, out):
    pytester.makepyfile(test_needs=RECORD + """
def test_config(pytestconfig):
    record("config")

def test_inside():
    record("inside")
""")
    result = run(pytester, "--own-gil=2", "-v")
    result.assert_outcomes(passed=2)
    rows = where_ran(out)
    assert [(i, pid) for t, i, pid in rows if t == "config"] == [(0, os.getpid())]
    assert len([t for t, _, _ in rows if t == "inside"]) == 2
    result.stdout.fnmatch_lines([
        "*test_needs.py::test_config PASSED [[]main interpreter[]]*",
        "*test_needs.py: loads; 1 run, 0 fail under own GIL; 1 ran in the main interpreter*",
        "*ran in the main interpreter:*",
        "*test_needs.py::test_config: fixture 'pytestconfig' cannot cross into an interpreter*",
    ])


def test_a_module_importing_a_refusing_extension_is_reported_once(pytester, out, single_phase_dir):
    pytester.makepyfile(test_refuses=RECORD + f"""
import sys
sys.path.insert(0, {single_phase_dir!r})
import mg_single_phase

def test_one():
    assert mg_single_phase.answer() == 42
    record("one")

def test_two():
    record("two")

def test_three():
    record("three")
""")
    result = run(pytester, "--own-gil=2")
    result.assert_outcomes(passed=3)  # in the main interpreter, not 3 x 2 failures
    assert sorted(t for t, _, _ in where_ran(out)) == ["one", "three", "two"]
    assert {(i, pid) for _, i, pid in where_ran(out)} == {(0, os.getpid())}
    text = result.stdout.str()
    assert len(re.findall(r"^  mg_single_phase: ", text, re.M)) == 1, text
    result.stdout.fnmatch_lines([
        "*test_refuses.py: refuses (mg_single_phase); 0 run, 0 fail under own GIL; 3 ran in the main interpreter*",
        "*refuses an own GIL (reported once*",
        "  mg_single_phase: refuses: module mg_single_phase does not support loading in subinterpreters "
        "(single-phase init*; test modules: test_refuses.py",
    ])


def test_numpy_refuses_and_is_reported_in_one_line(pytester):
    pytest.importorskip("numpy")
    pytester.makepyfile(test_np="""
import numpy as np

def test_sum():
    assert np.arange(4).sum() == 6

def test_mean():
    assert np.ones(3).mean() == 1.0
""")
    result = run(pytester, "--own-gil=2")
    result.assert_outcomes(passed=2)
    refusals = [line for line in result.outlines if "does not support loading in subinterpreters" in line]
    assert len(refusals) == 1, result.outlines
    assert re.fullmatch(
        r"  numpy\._core\._multiarray_umath: numpy [\d.]+; refuses: module numpy\._core\._multiarray_umath "
        r"does not support loading in subinterpreters \(.*\); test modules: test_np\.py",
        refusals[0],
    ), refusals[0]


def test_a_crash_is_reported_as_a_crash_of_that_test_and_the_run_goes_on(pytester, out):
    pytester.makepyfile(test_crash=RECORD + """
import signal

def test_before():
    record("before")

def test_abort():
    os.abort()

def test_segfault():
    # what a bad pointer brings (not ctypes.string_at(0): on 3.12 _ctypes refuses an own GIL)
    os.kill(os.getpid(), signal.SIGSEGV)

def test_after():
    record("after")
""")
    # a process of its own: should a crash ever reach the main interpreter, it ends that one
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", CHILD_LIMIT, "--own-gil=2", "-v", timeout=50)
    result.assert_outcomes(passed=2, failed=2)
    rows = where_ran(out)
    assert len([r for r in rows if r[0] == "after"]) == 2
    pids = {t: {pid for tt, _, pid in rows if tt == t} for t in ("before", "after")}
    assert len(pids["before"]) == 1 and pids["before"] != pids["after"]  # a fresh child for the rest
    result.stdout.fnmatch_lines([
        "*test_crash.py::test_abort CRASHED*",
        "*test_crash.py::test_segfault CRASHED*",
        "*test_crash.py::test_after PASSED*",
        "crashed: the child process running this test in 2 own-GIL interpreters died, killed by SIGABRT; "
        "the run goes on with a fresh child.",
        "The end of the child's output:",
        "Fatal Python error:*",  # Aborted: two interpreters may write it at once
        "*crashed or hung (the child process died or was stopped; the run went on with a fresh child):*",
        "*test_crash.py::test_abort: killed by SIGABRT",
        # SIGSEGV, or SIGBUS when faulthandler's dump of the other interpreter's thread
        # faults too (CPython's dump reads frames another thread is leaving: seen in CI)
        "*test_crash.py::test_segfault: killed by SIG[SB][EU][GS]*",
    ])


def test_a_hang_is_reported_with_the_stacks_and_the_run_goes_on(pytester, out):
    pytester.makepyfile(test_hang=RECORD + """
import threading

def test_waits_forever():
    threading.Event().wait()  # nothing sets it

def test_after():
    record("after")
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--own-gil=2", "--own-gil-timeout=3", "-v",
                                           timeout=50)
    result.assert_outcomes(passed=1, failed=1)
    assert len(where_ran(out)) == 2
    result.stdout.fnmatch_lines([
        "*test_hang.py::test_waits_forever HUNG*",
        "*test_hang.py::test_after PASSED*",
        "hung: no answer within 3 s from the 2 own-GIL interpreters running this test; the child process "
        "was stopped with SIGABRT (its stacks are below); the run goes on with a fresh child.",
        "The end of the child's output:",
        "Fatal Python error:*",
        "*test_hang.py::test_waits_forever: no answer within 3 s",
    ])


COUNTER_C = r"""
#include <Python.h>

/* bump() counts its calls: in a C static (shared by every interpreter of the process,
   the bug) or, with MODULE_STATE, in the module's state (one count per interpreter). */
static long calls;

typedef struct { long calls; } state;

static PyObject *
bump(PyObject *module, PyObject *unused)
{
#ifdef MODULE_STATE
    state *st = PyModule_GetState(module);
    return PyLong_FromLong(++st->calls);
#else
    return PyLong_FromLong(__atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST));
#endif
}

static PyMethodDef methods[] = {{"bump", bump, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static PyModuleDef_Slot slots[] = {
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, NAME, NULL, sizeof(state), methods, slots};

PyMODINIT_FUNC
INIT(void)
{
    return PyModuleDef_Init(&def);
}
"""


def compile_ext(compiler: str, source, target, *flags: str) -> None:
    """Build one extension module from ``source``; ``compiler`` is sysconfig's CC or CXX
    (the compiler this Python was built with), unoptimised: the tests need no speed."""
    subprocess.run(
        [compiler, "-O0", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], *flags, str(source),
         "-o", str(target)],
        check=True, capture_output=True, timeout=120,
    )


def build_counters(folder) -> None:
    source = folder / "counter.c"
    source.write_text(COUNTER_C)
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name, flags in (("mg_static_counter", []), ("mg_state_counter", ["-DMODULE_STATE"])):
        compile_ext(cc, source, folder / (name + suffix), *flags, f"-DNAME=\"{name}\"", f"-DINIT=PyInit_{name}")


def test_a_c_static_shared_by_the_interpreters_is_flagged_as_differing(pytester, tmp_path):
    ext = tmp_path / "ext"
    ext.mkdir()
    build_counters(ext)
    header = f"import sys\nsys.path.insert(0, {str(ext)!r})\n"
    pytester.makepyfile(
        test_static=header + "import mg_static_counter\n\ndef test_first_call():\n"
                             "    assert mg_static_counter.bump() == 1\n",
        test_state=header + "import mg_state_counter\n\ndef test_first_call():\n"
                            "    assert mg_state_counter.bump() == 1\n",
    )
    result = run(pytester, "--own-gil=2", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines_random([
        "*test_state.py::test_first_call PASSED*",
        "*test_static.py::test_first_call DIFFERS*",
        "differs between interpreters: likely shared state (a C static, a cached global...)",
        "passed in interpreter *, failed in interpreter *",
        "*assert 2 == 1*",
        "*test_static.py: loads; 1 run, 1 fail under own GIL*",
        "*test_state.py: loads; 1 run, 0 fail under own GIL*",
        "*test_static.py::test_first_call: passed in interpreter *, failed in interpreter *",
    ])


# The same check on modules that Cython and pybind11 generate, from tests/ext_pairs/: each
# tool's counter in three modules, built once per session and version, unoptimised (about
# 2 s for Cython's three, 4 s for pybind11's, on a busy 2-core machine).  mg_cy_static and
# mg_pb_static opt in to an own GIL but count in a C static; mg_cy_state and mg_pb_state opt
# in and count per interpreter; mg_cy_refuses and mg_pb_refuses are built the tool's
# default way, which does not opt in.
EXT_PAIRS = os.path.join(os.path.dirname(__file__), "ext_pairs")


def compiler(var: str) -> str:
    """sysconfig's CC or CXX, or a skip that names the missing compiler."""
    import shutil

    name = (sysconfig.get_config_var(var) or {"CC": "cc", "CXX": "c++"}[var]).split()[0]
    if shutil.which(name) is None:
        pytest.skip(f"no {'C++' if var == 'CXX' else 'C'} compiler: {name} (sysconfig's {var}) is not installed")
    return name


def build_cython_counters(folder) -> None:
    """mg_cy_static, mg_cy_state and mg_cy_refuses, from Cython."""
    import shutil

    pytest.importorskip("Cython", reason="Cython is not installed (pip install -e .[test])")
    cc = compiler("CC")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    names = ("mg_cy_static", "mg_cy_state", "mg_cy_refuses")
    for name in names:
        shutil.copy(os.path.join(EXT_PAIRS, name + ".pyx"), folder)
    # one Cython run for the three (a third of the time of three runs)
    subprocess.run([sys.executable, "-m", "cython", "-3", *(name + ".pyx" for name in names)],
                   cwd=folder, check=True, capture_output=True, timeout=120)
    for name in names:
        # Opting in takes the directive (in the .pyx) and module state, without which
        # Cython leaves the slot out: the module would refuse all the same.
        opt_in = ["-DCYTHON_USE_MODULE_STATE=1"] if name != "mg_cy_refuses" else []
        compile_ext(cc, folder / (name + ".c"), folder / (name + suffix), *opt_in)


def build_pybind11_counters(folder) -> None:
    """mg_pb_static, mg_pb_state and mg_pb_refuses, from pybind11: one shared object that
    defines the three modules (one C++ build instead of three), under each module's name."""
    pybind11 = pytest.importorskip("pybind11", reason="pybind11 is not installed (pip install -e .[test])")
    cxx = compiler("CXX")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = folder / ("mg_pb_static" + suffix)
    compile_ext(cxx, os.path.join(EXT_PAIRS, "mg_pb_counters.cpp"), built, "-std=c++17", "-I", pybind11.get_include())
    for name in ("mg_pb_state", "mg_pb_refuses"):
        os.symlink(built.name, folder / (name + suffix))


@pytest.fixture(scope="module")
def counters(request, tmp_path_factory) -> str:
    """The folder of a tool's three counter modules (request.param: the tool), built once."""
    folder = tmp_path_factory.mktemp(request.param)
    {"cython": build_cython_counters, "pybind11": build_pybind11_counters}[request.param](folder)
    return str(folder)


@pytest.mark.parametrize("counters, prefix, why", [
    # Cython leaves the slot out unless the module opts in
    ("cython", "mg_cy", "multi-phase init, but no Py_mod_multiple_interpreters slot, which means a shared GIL only*"),
    # pybind11 writes it, saying no
    ("pybind11", "mg_pb", "*its Py_mod_multiple_interpreters slot says Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED"),
], ids=["cython", "pybind11"], indirect=["counters"])
def test_cython_and_pybind11_modules_static_differs_state_passes_default_refuses(pytester, counters, prefix, why):
    header = f"import sys\nsys.path.insert(0, {counters!r})\n"
    pytester.makepyfile(**{
        f"test_{kind}": header + f"import {prefix}_{kind} as counter\n\n"
                                 "def test_first_call():\n    assert counter.bump() == 1\n"
        for kind in ("static", "state", "refuses")
    })
    result = run(pytester, "--own-gil=2", "-v")
    result.assert_outcomes(passed=2, failed=1)  # test_refuses passes, in the main interpreter
    result.stdout.fnmatch_lines_random([
        "*test_state.py::test_first_call PASSED [[]2 interpreters[]]*",
        "*test_static.py::test_first_call DIFFERS*",
        "*test_refuses.py::test_first_call PASSED [[]main interpreter[]]*",
        "differs between interpreters: likely shared state (a C static, a cached global...)",
        "passed in interpreter *, failed in interpreter *",
        "*assert 2 == 1*",
        "*test_static.py: loads; 1 run, 1 fail under own GIL*",
        "*test_state.py: loads; 1 run, 0 fail under own GIL*",
        f"*test_refuses.py: refuses ({prefix}_refuses); 0 run, 0 fail under own GIL; 1 ran in the main interpreter*",
        f"  {prefix}_refuses: refuses: module {prefix}_refuses does not support loading in subinterpreters "
        f"({why}); test modules: test_refuses.py",
        "*test_static.py::test_first_call: passed in interpreter *, failed in interpreter *",
    ])


def test_bare_option_before_a_path_means_one_interpreter_per_core(pytester):
    pytester.makepyfile(test_bare="def test_ok():\n    pass\n")
    result = run(pytester, "--own-gil", "test_bare.py")
    result.assert_outcomes(passed=1)
    cores = getattr(os, "process_cpu_count", os.cpu_count)()
    result.stdout.fnmatch_lines([f"*each test runs in {cores} own-GIL interpreters at once*"])


def test_a_bad_count_is_a_usage_error(pytester):
    result = run(pytester, "--own-gil=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--own-gil: the number of interpreters must be at least 1, got 0*"])


def markupsafe_sdist_tests(tmp_path_factory) -> str:
    """The tests of markupsafe's sdist, for the installed version (or the newest one)."""
    markupsafe = pytest.importorskip("markupsafe")
    version = metadata.version("markupsafe")
    folder = tmp_path_factory.mktemp("markupsafe")
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", "-d", str(folder)]
    for args in (["--no-build-isolation", f"markupsafe=={version}"], [f"markupsafe=={version}"], ["markupsafe"]):
        proc = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            break
    else:
        pytest.skip(f"cannot download markupsafe's sdist: {proc.stderr.strip().splitlines()[-1:]}")
    import tarfile

    (archive,) = folder.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (tests,) = folder.glob("*/tests")
    assert markupsafe.__name__ == "markupsafe"
    return str(tests)


@pytest.mark.timeout(180)
def test_markupsafe_own_suite_passes_in_four_interpreters(pytester, tmp_path_factory):
    tests = markupsafe_sdist_tests(tmp_path_factory)
    # a subprocess: the sdist's "tests" package is not this suite's
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--own-gil=4", CHILD_LIMIT, tests, timeout=150)
    text = result.stdout.str()
    assert result.ret == 0, text
    assert "failed" not in text.rpartition("\n=")[2]
    counts = result.parseoutcomes()
    assert counts["passed"] >= 70, counts
    assert re.search(r"manygil: (\d+) of \1 tests run in own-GIL interpreters", text), text
    assert "ran in the main interpreter" not in text
    assert "refuses" not in text
