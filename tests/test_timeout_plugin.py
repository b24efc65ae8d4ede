"""A hung test fails with the stacks of every interpreter, and the run goes on (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HUNG = '''
import sys
import pytest
sys.path.insert(0, {tests!r})
import helpers
from manygil import InterpreterPoolExecutor, interpreters


@pytest.mark.timeout(2)
def test_waits_on_a_task_that_never_ends():
    with InterpreterPoolExecutor(1, grace_period=0.1) as pool:
        pool.submit(helpers.spin_named_for_the_dump).result()


@pytest.mark.timeout(2)
def test_main_thread_stuck_in_c_waiting():
    interpreters.create_queue().get()


def test_the_run_goes_on():
    pass
'''


def test_a_hung_test_fails_with_every_interpreters_stacks_and_the_run_goes_on(tmp_path):
    (tmp_path / "test_hung.py").write_text(HUNG.format(tests=os.path.join(ROOT, "tests")))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests._timeout_plugin", "-p", "no:cacheprovider",
         "-o", "faulthandler_timeout=0", "--rootdir", str(tmp_path), str(tmp_path / "test_hung.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        # The stuck-in-C test waits LAST_CHANCE; the spinning task, abandoned, is waited for at
        # exit (exit_timeout) before the process ends.
        env=dict(os.environ, MANYGIL_TEST_LAST_CHANCE="3", MANYGIL_EXIT_TIMEOUT="2"),
    )
    out = proc.stdout + proc.stderr
    assert "Fatal Python error" not in out
    assert "2 failed, 1 passed" in proc.stdout, out
    assert "timed out after 2 s" in proc.stdout
    # The worker interpreter's stack, formatted inside it, names the task's function.
    assert "spin_named_for_the_dump" in proc.stdout, proc.stdout  # in the test's captured stderr


USERS_SUITE = '''
import time
import pytest
from manygil import InterpreterPoolExecutor


def add(a, b):
    return a + b


@pytest.mark.timeout(2, method={method!r})
def test_sleeps_past_its_time_limit():
    with InterpreterPoolExecutor(2) as pool:
        assert pool.submit(add, 1, 2).result() == 3
        time.sleep(30)
'''


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_a_users_suite_timed_out_by_the_real_pytest_timeout_fails_cleanly(tmp_path, method):
    # pytest-timeout dumps the stacks with sys._current_frames(), which on 3.12/3.13
    # crashed a process that ran interpreters (SIGSEGV on 3.13, abort on 3.12): with
    # neither manygil's plugin nor its conftest, as a user's own suite runs (issue 23).
    (tmp_path / "test_user.py").write_text(USERS_SUITE.format(method=method))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "faulthandler_timeout=0",
         "--rootdir", str(tmp_path), str(tmp_path / "test_user.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src")),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Fatal Python error" not in out and "Segmentation fault" not in out
    assert "Timeout" in out and "test_sleeps_past_its_time_limit" in out  # pytest-timeout's dump
    if method == "signal":
        assert "1 failed" in out


def test_without_sigalrm_a_hung_test_fails_by_sigint(tmp_path):
    """Windows has neither SIGALRM nor signal.pthread_kill: the limit raises SIGINT in
    the main thread (_thread.interrupt_main) instead; the run goes on."""
    (tmp_path / "conftest.py").write_text(
        "import signal\n"
        "del signal.SIGALRM\n"
        "del signal.pthread_kill\n"
    )
    (tmp_path / "test_hung.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.timeout(2)\n"
        "def test_waits_for_ever():\n"
        "    while True:  # a simulated signal is seen between two sleeps\n"
        "        time.sleep(0.05)\n"
        "def test_the_run_goes_on():\n"
        "    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "faulthandler_timeout=0",
         "--rootdir", str(tmp_path), "-p", "tests._timeout_plugin", str(tmp_path / "test_hung.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout, out
    assert "timed out after 2 s" in proc.stdout, out
