"""The manygil command line."""

from __future__ import annotations

import subprocess

import pytest

from manygil.__main__ import main


def test_bench_passes_its_options_to_the_benchmark(monkeypatch):
    seen = []
    monkeypatch.setattr(subprocess, "call", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "--quick", "--only", "threads"]) == 0
    assert seen[0][-3:] == ["--quick", "--only", "threads"] and seen[0][-4].endswith("run.py")


def test_an_unknown_option_elsewhere_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
