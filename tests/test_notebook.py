"""A real Jupyter kernel: a notebook's own functions and classes run in the pool, and
what tasks print appears in the cell's output (issue 13)."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    "from manygil import InterpreterPoolExecutor\npool = InterpreterPoolExecutor(2)",
    "SCALE = 3\n\ndef helper(x):\n    return x * SCALE\n\n"
    "class Point:\n    def __init__(self, v):\n        self.v = v\n\n"
    "def task(x):\n    print('in task', x)\n    return Point(helper(x))",
    "p = pool.submit(task, 2).result(timeout=60)\nprint(type(p).__name__, p.v, isinstance(p, Point))",
    "print(sorted(pt.v for pt in pool.map(task, range(4))))",
    "class Invalid(Exception):\n    pass\n\ndef check(x):\n    raise Invalid(f'bad {x}')\n\n"
    "try:\n    pool.submit(check, 7).result(timeout=60)\nexcept Invalid as exc:\n    print('caught', exc)",
    "pool.shutdown()",
]


@pytest.mark.timeout(180)
def test_a_notebook_runs_its_own_functions_and_classes_and_shows_their_output(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    def text(cell):
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert text(nb.cells[2]) == "in task 2\nPoint 6 True\n"
    assert text(nb.cells[4]) == "caught bad 7\n"
    assert sorted(text(nb.cells[3]).splitlines()) == sorted(
        ["in task 0", "in task 1", "in task 2", "in task 3", "[0, 3, 6, 9]"]
    )
