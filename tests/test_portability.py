"""The guards that let manygil run on macOS and Windows, exercised here on Linux.

Each test makes this process look like the other platform where manygil asks (no
``forkserver`` start method, no ``os.register_at_fork``, ``sys.platform`` not
``linux``, a Windows exit status, ...) and checks the behaviour of that platform; each
fails if its guard is removed.  Nothing here ran on a real Mac or Windows machine.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.context
import os
import subprocess
import sys
import textwrap

import pytest

from manygil import _process_side, _run, check
from manygil._exceptions import NotShareableError
from manygil.shared import SharedBuffer

WINDOWS_METHODS = ["spawn"]  # multiprocessing.get_all_start_methods() there
LINUX_METHODS = ["fork", "spawn", "forkserver"]


class _Asked(Exception):
    """Raised by a stand-in get_context: the start method was chosen, start nothing."""


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """multiprocessing.get_context records the method it is asked for and raises _Asked."""
    methods: list[str] = []

    def get_context(method: str | None = None) -> object:
        methods.append(str(method))
        raise _Asked

    monkeypatch.setattr(multiprocessing, "get_context", get_context)
    return methods


@pytest.mark.parametrize(("available", "expected"), [(WINDOWS_METHODS, "spawn"), (LINUX_METHODS, "forkserver")])
def test_process_workers_start_with_forkserver_or_else_spawn(monkeypatch, asked, available, expected):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: list(available))
    assert _process_side.start_method() == expected
    side = _process_side.ProcessSide(1, None, (), None)
    with pytest.raises(_Asked):
        side.starter.new_slot()  # a pool's process worker
    with pytest.raises(_Asked):
        side.starter.run_alone(None)  # type: ignore[arg-type]  # a task at the end of a 3.12 program
    assert asked == [expected, expected]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method here")
def test_manygil_run_replaces_fork_with_spawn_where_there_is_no_forkserver(monkeypatch):
    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn"])
    assert _run.no_fork(fork).get_start_method() == "spawn"
    spawn = multiprocessing.get_context("spawn")
    assert _run.no_fork(spawn) is spawn
    # The default context: a fork default becomes spawn there (forkserver here).
    default = multiprocessing.context.DefaultContext(fork)
    monkeypatch.setattr(multiprocessing.context, "_default_context", default)
    _run._forkserver_default()
    assert default.get_start_method() == "spawn"


def test_manygil_run_limits_process_pools_to_61_workers_on_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)  # 3.12 has none
    import concurrent.futures.process

    executor = _run._executor_class(concurrent.futures.process.ProcessPoolExecutor)
    assert executor()._max_workers == 61  # as concurrent.futures' own on Windows
    assert executor(61)._max_workers == 61
    with pytest.raises(ValueError, match="max_workers must be <= 61"):
        executor(62)
    monkeypatch.setattr(sys, "platform", "linux")
    assert executor()._max_workers == 128


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_a_shared_buffer_refuses_a_process_worker_off_linux(monkeypatch, platform):
    buf = SharedBuffer(8)
    try:
        kept: list[object] = []
        monkeypatch.setattr(sys, "platform", platform)
        with pytest.raises(NotShareableError) as info:
            buf._to_process(buf.id, kept)
        message = str(info.value)
        assert f"cannot send <SharedBuffer id={buf.id} nbytes=8> to a process worker on {platform}" in message
        assert "only on Linux" in message and "pass bytes(buf) or a numpy array instead" in message
        assert not kept  # nothing held for a process that never maps it
    finally:
        buf.release()


@pytest.mark.parametrize(
    ("returncode", "detail"),
    [
        (-11, "killed by SIGSEGV"),
        (-99, "killed by signal 99"),  # no name in signal.Signals
        (0xC0000005, "ended by Windows exception 0xC0000005"),  # an access violation
        (0xC0000409, "ended by Windows exception 0xC0000409"),  # a fail-fast abort
    ],
)
def test_manygil_check_names_how_a_probe_crashed(monkeypatch, returncode, detail):
    def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, returncode, "", "  File \"<string>\", line 1 in <module>\n")

    monkeypatch.setattr(check.subprocess, "run", run)
    attempt = check._attempt("some_module", "own", 1.0, {})
    assert (attempt.status, attempt.detail) == ("crash", detail)


# The standard library modules that branch on sys.platform at import (subprocess,
# asyncio, multiprocessing ...) are imported first, as the platform is: only manygil's
# own modules are imported as on Windows.  Then a pool runs a task.
_AS_ON_WINDOWS = textwrap.dedent(
    """
    import importlib, json, os, signal, sys
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    sys.platform = "win32"
    for module, names in ((os, ("register_at_fork", "fork", "sched_getaffinity", "getpgid", "killpg")),
                          (signal, ("SIGKILL", "SIGALRM", "SIGUSR1", "SIGCHLD", "pthread_kill", "setitimer"))):
        for name in names:
            if hasattr(module, name):
                delattr(module, name)
    import multiprocessing
    multiprocessing.get_all_start_methods = lambda: ["spawn"]
    import manygil, manygil.interpreters, manygil.pool, manygil.shared, manygil.sync
    import manygil.check, manygil.doctor, manygil.mppool, manygil._run
    with manygil.InterpreterPoolExecutor(1) as pool:
        assert pool.submit(pow, 2, 5).result(timeout=60) == 32
    print("ok")
    """
)
_PUBLIC = "import manygil, manygil.interpreters, manygil.pool, manygil.shared, manygil.sync, manygil.check, " \
          "manygil.doctor, manygil.mppool, manygil._run"


def test_manygil_imports_and_runs_without_the_posix_only_calls():
    """No os.register_at_fork, os.fork, SIGKILL, pthread_kill ...: as on Windows."""
    listed = subprocess.run(
        [sys.executable, "-c", _PUBLIC + "; import json, sys; print(json.dumps(sorted(n for n in sys.modules "
         "if n.partition('.')[0] in sys.stdlib_module_names)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    stdlib = json.loads(listed.stdout)
    proc = subprocess.run([sys.executable, "-c", _AS_ON_WINDOWS, json.dumps(stdlib)],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
