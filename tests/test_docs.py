"""Every ```python block of the docs and the README runs, so no example rots.

Blocks fenced as ```py are fragments (a remote cluster, a bare call) and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for i, code in enumerate(BLOCK.findall(page.read_text())):
            out.append((f"{page.name}:{i + 1}", code))
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name,code", _blocks(), ids=[n for n, _ in _blocks()])
def test_doc_example_runs(name, code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=170, cwd=tmp_path, env=env)
    if proc.returncode != 0 and "ModuleNotFoundError: No module named 'duckdb'" in proc.stderr:
        pytest.skip("duckdb is not installed for this Python")
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr}"


def test_there_are_examples_to_run():
    assert len(_blocks()) >= 10
