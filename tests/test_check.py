from __future__ import annotations

import json
import os
import importlib.util
import subprocess
import sys

import pytest

import manygil
from manygil.check import check_modules, installed_extension_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """A module that crashes on import, one that hangs, and a private result cache."""
    (tmp_path / "mg_crashes_on_import.py").write_text("import os\nos.abort()\n")
    (tmp_path / "mg_hangs_on_import.py").write_text("while True:\n    pass\n")
    (tmp_path / "mg_fine.py").write_text("VALUE = 1\n")
    monkeypatch.setenv("MANYGIL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.timeout(120)
def test_survey_gives_each_module_its_row_and_finishes(modules):
    names = ["_json", "mg_fine", "mg_crashes_on_import", "mg_hangs_on_import", "mg_no_such_module"]
    # 6 s: an attempt runs beside the one that burns a core until its own time is up.
    reports = check_modules(names, timeout=6, path=[str(modules)])
    by = {r.module: r for r in reports}
    assert [r.module for r in reports] == names
    assert by["_json"].own.status == "ok" and by["_json"].shared.status == "ok" and by["_json"].ok
    assert by["mg_fine"].own.status == "ok"
    assert by["mg_crashes_on_import"].main.status == "crash"
    assert "SIGABRT" in by["mg_crashes_on_import"].main.detail
    assert by["mg_hangs_on_import"].main.status == "hang"
    assert by["mg_no_such_module"].main.status == "import-error"
    assert "ModuleNotFoundError" in by["mg_no_such_module"].main.detail
    assert not by["mg_crashes_on_import"].ok


@pytest.mark.timeout(120)
def test_a_module_that_refuses_an_own_gil(single_phase_dir):
    (report,) = check_modules(["mg_single_phase"], timeout=30, path=[single_phase_dir], use_cache=False)
    assert report.own.status == "refuses"
    assert "does not support loading in subinterpreters" in report.own.detail
    assert report.shared.status == "ok"


@pytest.mark.timeout(120)
def test_results_are_cached(modules):
    (first,) = check_modules(["mg_fine"], path=[str(modules)])
    (second,) = check_modules(["mg_fine"], path=[str(modules)])
    assert not first.cached and second.cached
    assert second.own.status == "ok"
    (fresh,) = check_modules(["mg_fine"], path=[str(modules)], use_cache=False)
    assert not fresh.cached


def test_installed_extension_modules_lists_compiled_packages():
    found = installed_extension_modules()
    assert all(name.isidentifier() for name in found)
    numpy = importlib.util.find_spec("numpy")  # a compiled package the test extras bring
    assert ("numpy" in found) == (numpy is not None)


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "manygil", *args], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, **(env or {})),
    )


@pytest.mark.timeout(150)
def test_cli_check_json_and_exit_status(modules):
    env = {"PYTHONPATH": str(modules), "MANYGIL_CACHE_DIR": str(modules / "cache")}
    ok = _cli("check", "--json", "_json", env=env)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data[0]["module"] == "_json" and data[0]["own_gil"]["status"] == "ok"
    bad = _cli("check", "--timeout", "3", "_json", "mg_crashes_on_import", env=env)
    assert bad.returncode == 1
    assert "mg_crashes_on_import" in bad.stdout and "crash" in bad.stdout
    assert "\033[" not in bad.stdout  # no colour when not on a terminal
    none = _cli("check")
    assert none.returncode == 2 and "--installed" in none.stderr
    missing = _cli("check", "mg_no_such_module", "mg_crashes_on_import", "--timeout", "3", env=env)
    assert "not installed here: mg_no_such_module (check the name" in missing.stdout
    assert "fail to import even in the main interpreter: mg_crashes_on_import" in missing.stdout
    assert "do not load under an own GIL" not in missing.stdout  # no fix offered for these


def test_cli_help_shows_examples():
    out = _cli("--help")
    assert out.returncode == 0 and "manygil check --installed" in out.stdout


@pytest.mark.timeout(120)
def test_doctor_says_when_workers_compile_manygil_at_every_start(tmp_path):
    env = {"PYTHONPYCACHEPREFIX": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}  # no cache there
    found = {f["name"]: f for f in json.loads(_cli("doctor", "--json", env=env).stdout)}["bytecode cache"]
    assert found["verdict"] == "warn" and "-m compileall -q" in found["fix"]
    written = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.dirname(manygil.__file__)],
        env=dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp_path)), capture_output=True, text=True, timeout=120,
    )
    assert written.returncode == 0, written.stderr
    found = {f["name"]: f for f in json.loads(_cli("doctor", "--json", env=env).stdout)}["bytecode cache"]
    assert found["verdict"] == "ok" and found["value"] == "manygil's modules are compiled"


def test_doctor_reports_pythonmalloc_and_tracemalloc():
    plain = _cli("doctor", "--json")
    assert plain.returncode == 0, plain.stderr
    findings = {f["name"]: f for f in json.loads(plain.stdout)}
    assert findings["own GIL"]["verdict"] == "ok"
    assert findings["tracemalloc"]["verdict"] == "ok"
    debug = _cli("doctor", "--json", env={"PYTHONMALLOC": "debug"})
    findings = {f["name"]: f for f in json.loads(debug.stdout)}
    assert findings["PYTHONMALLOC"]["value"] == "debug" and findings["PYTHONMALLOC"]["verdict"] == "warn"
    traced = subprocess.run(
        [sys.executable, "-X", "tracemalloc", "-m", "manygil", "doctor", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    findings = {f["name"]: f for f in json.loads(traced.stdout)}
    assert findings["tracemalloc"]["value"] == "tracing"
    assert findings["tracemalloc"]["verdict"] in ("warn", "fail")
    if sys.version_info < (3, 13):
        assert findings["tracemalloc"]["verdict"] == "fail" and traced.returncode == 1
