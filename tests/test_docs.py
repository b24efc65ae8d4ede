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


def test_examples_need_only_what_the_set_up_installs():
    """The set-up installs manygil and cloudpickle, no numpy: an example that uses numpy
    fails for a new user (issue 29: the SharedArray example called arr.numpy()). A
    comment may mention it."""
    for name, code in _blocks():
        used = [line for line in code.splitlines() if re.search(r"\bnumpy\b", line.split("#")[0])]
        assert not used, f"{name} needs numpy, which the set-up does not install: {used}"


def test_a_time_limit_example_shows_its_timeout_error():
    """A with_timeout() example waits for the result, or no TimeoutError appears (issue 29:
    the README's did not)."""
    for name, code in _blocks():
        if "with_timeout(" in code:
            assert ".result()" in code and "except TimeoutError" in code, name
