from __future__ import annotations

import gc
import threading
import time

import pytest

from manygil import _native, interpreters

# A test past its time limit fails with the stacks of every interpreter (see there).
from ._timeout_plugin import pytest_timeout_cancel_timer, pytest_timeout_set_timer  # noqa: F401


def _snapshot() -> tuple[set[int], set[threading.Thread], dict[str, int]]:
    return (
        {i.id for i in interpreters.list_all()},
        set(threading.enumerate()),
        dict(_native.live()),
    )


@pytest.fixture
def fault_point():
    """``fault_point(name, hook)``: run ``hook`` at one of manygil's named fault points
    (``manygil._faults.POINTS``) until the test ends."""
    import contextlib

    from manygil import _faults

    with contextlib.ExitStack() as stack:
        yield lambda name, hook: stack.enter_context(_faults.hooked(name, hook))


@pytest.fixture(autouse=True)
def unlearned():
    """Each test starts from a process whose pools learned no route (see _router._LEARNED)."""
    from manygil import _refusals, _router

    _router._LEARNED.clear()
    _router._SCRIPTS_REFUSED.clear()
    _refusals._REFUSING.clear()
    yield
    _router._LEARNED.clear()
    _router._SCRIPTS_REFUSED.clear()
    _refusals._REFUSING.clear()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """After each test: no interpreter, thread or native object left behind."""
    before_interps, before_threads, before_live = _snapshot()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        interps, threads, live = _snapshot()
        leaked_threads = {t for t in threads - before_threads if t.is_alive()}
        ok = interps <= before_interps and not leaked_threads and live == before_live
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # threads that were told to stop may take a moment to end
    assert interps <= before_interps, f"leaked interpreters: {sorted(interps - before_interps)}"
    assert not leaked_threads, f"leaked threads: {leaked_threads}"
    assert live == before_live, f"leaked native objects: before {before_live}, after {live}"


@pytest.fixture(scope="session")
def single_phase_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding ``mg_single_phase``, a single-phase-init extension module built
    here: it refuses an interpreter with its own GIL on every CPython version."""
    import os
    import subprocess
    import sys
    import sysconfig

    out = tmp_path_factory.mktemp("ext")
    source = os.path.join(os.path.dirname(__file__), "fixtures", "mg_single_phase.c")
    target = out / ("mg_single_phase" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    subprocess.run(
        [cc, "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], source, "-o", str(target)],
        check=True, capture_output=True, timeout=120,
    )
    assert sys.version_info >= (3, 12)
    return str(out)


@pytest.fixture
def refusing(single_phase_dir, monkeypatch):
    """The module ``refusing_tasks``, whose top imports a refusing extension (the
    tests/test_fallback_*.py files use it)."""
    import multiprocessing
    import os

    monkeypatch.syspath_prepend(single_phase_dir)
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "fixtures"))
    import refusing_tasks

    yield refusing_tasks
    assert not multiprocessing.active_children()  # the process side was shut down


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: the test leaves objects on purpose")
