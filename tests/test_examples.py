"""Every example program runs (small sizes), so no example rots."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXAMPLES = {
    "speedup.py": ["--tasks", "4", "--size", "3000", "--workers", "2"],
    "log_parser.py": ["--lines", "20000"],
    "monte_carlo.py": ["--samples", "200000", "--tasks", "4"],
    "rule_engine.py": ["--records", "4000"],
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), *EXAMPLES[name]],
        capture_output=True, text=True, timeout=170, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "speed-up" in proc.stdout


def test_every_example_is_tested():
    found = {f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")}
    assert found == set(EXAMPLES)
