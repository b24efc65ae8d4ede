from __future__ import annotations

import contextlib
import io
import logging

import pytest

from manygil import InterpreterPoolExecutor
from manygil import interpreters as I

from . import helpers


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def pool(request):
    with InterpreterPoolExecutor(request.param) as p:
        yield p


def test_print_reaches_capsys_in_order(pool, capsys):
    assert pool.submit(helpers.chatty, 50).result(timeout=30) == 50
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"line {i}" for i in range(50)]
    assert err == "line to stderr\n"


def test_each_tasks_output_stays_in_order(pool, capsys):
    futures = [pool.submit(helpers.chatty, 20, f"task{k}") for k in range(6)]
    for f in futures:
        f.result(timeout=30)
    lines = capsys.readouterr().out.splitlines()
    for k in range(6):
        mine = [line for line in lines if line.startswith(f"task{k} ")]
        assert mine == [f"task{k} {i}" for i in range(20)]


def test_print_reaches_a_redirected_stdout(pool):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        pool.submit(helpers.chatty, 3).result(timeout=30)
    assert buf.getvalue() == "line 0\nline 1\nline 2\n"


def test_logging_records_reach_the_callers_handlers():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler = Keep()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with InterpreterPoolExecutor(1) as pool:  # created after logging is set up
            assert pool.submit(helpers.logs, "app.worker", "hello").result(timeout=30)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert [(r.name, r.levelname, r.getMessage()) for r in records] == [
        ("app.worker", "WARNING", "hello from a worker")
    ]
    assert records[0].funcName == "logs"


def test_warnings_reach_stderr(pool, capsys):
    assert pool.submit(helpers.warns).result(timeout=30)
    assert "UserWarning: careful from a worker" in capsys.readouterr().err


def test_interpreter_exec_and_call_output(capsys):
    interp = I.create()
    try:
        interp.exec("print('from exec')")
        interp.call(helpers.chatty, 2)
    finally:
        interp.close()
    out, err = capsys.readouterr()
    assert out == "from exec\nline 0\nline 1\n"
    assert err == "line to stderr\n"


def test_forwarding_can_be_turned_off(capfd):
    with InterpreterPoolExecutor(1, forward_output=False) as pool:
        pool.submit(helpers.chatty, 2).result(timeout=30)
    out, _ = capfd.readouterr()
    assert "line 0" in out  # written straight to file descriptor 1
