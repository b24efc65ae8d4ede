"""A hung test fails with the stacks of every interpreter, and the run goes on (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys

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
    )
    out = proc.stdout + proc.stderr
    assert "Fatal Python error" not in out
    assert "2 failed, 1 passed" in proc.stdout, out
    assert "timed out after 2 s" in proc.stdout
    # The worker interpreter's stack, formatted inside it, names the task's function.
    assert "spin_named_for_the_dump" in proc.stdout, proc.stdout  # in the test's captured stderr
