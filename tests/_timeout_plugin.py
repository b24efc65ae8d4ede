"""pytest-timeout without ``sys._current_frames()``, which crashes a process that runs
interpreters.  Loaded by ``conftest.py``; ``-p tests._timeout_plugin`` loads it alone.

When a test runs past its time limit, a timer thread writes the stacks of every
interpreter (``manygil.dump_tracebacks``: the main interpreter's threads and those of
every interpreter manygil runs, each formatted inside its own interpreter) and makes
the test fail: a signal raises in the main thread, wherever it waits.  A main thread
that cannot take the signal (stuck in C inside another interpreter) is given
``_LAST_CHANCE`` seconds more; then the stacks are written again and the run exits
with status 1, as pytest-timeout's thread method does, instead of hanging CI.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading

import pytest

# $MANYGIL_TEST_LAST_CHANCE: a shorter wait for this plugin's own tests.
_LAST_CHANCE = float(os.environ.get("MANYGIL_TEST_LAST_CHANCE", "10"))


def _signal() -> int:
    """The signal that ends a test past its limit: SIGALRM, sent to the main thread;
    where there is none or no ``pthread_kill`` (Windows), SIGINT, which
    ``_thread.interrupt_main()`` raises there (a Ctrl-C before the limit still goes to
    the handler that was there before)."""
    if hasattr(signal, "SIGALRM") and hasattr(signal, "pthread_kill"):
        return int(signal.SIGALRM)
    return int(signal.SIGINT)


def _fire(signum: int) -> None:
    if signum != signal.SIGINT:
        signal.pthread_kill(threading.main_thread().ident, signum)  # type: ignore[arg-type]
    else:
        _thread.interrupt_main(signum)


class _Timer:
    def __init__(self, item: pytest.Item, seconds: float) -> None:
        self.item = item
        self.seconds = seconds
        self.done = threading.Event()
        self.fired = False
        self.signum = _signal()
        self.thread = threading.Thread(target=self.run, name=f"manygil-timeout {item.nodeid}", daemon=True)

    def run(self) -> None:
        if self.done.wait(self.seconds):
            return
        self.fired = True
        _dump(f"test {self.item.nodeid} timed out after {self.seconds:g} s; the stacks of every interpreter")
        _fire(self.signum)
        if self.done.wait(_LAST_CHANCE):
            return
        capture = self.item.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=True)  # what was captured goes out too
        _dump(f"test {self.item.nodeid} did not stop {_LAST_CHANCE:g} s after its time limit; exiting")
        os._exit(1)


def _dump(title: str) -> None:
    from manygil import dump_tracebacks

    sys.stderr.write(f"\n{'+' * 20} {title} {'+' * 20}\n")
    try:
        dump_tracebacks(sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - the dump must never hide the timeout
        sys.stderr.write(f"(could not dump the stacks: {exc!r})\n")
    sys.stderr.flush()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: object) -> bool:
    timer = _Timer(item, float(settings.timeout))  # type: ignore[attr-defined]

    previous: object = None

    def on_alarm(signum: int, frame: object) -> None:
        if timer.fired and not timer.done.is_set():
            pytest.fail(f"timed out after {timer.seconds:g} s (the stacks of every interpreter are above)", False)
        if callable(previous):  # not ours (a Ctrl-C, where the limit uses SIGINT)
            previous(signum, frame)

    if threading.current_thread() is threading.main_thread():
        previous = item._manygil_old_alarm = signal.signal(timer.signum, on_alarm)  # type: ignore[attr-defined]
    item._manygil_timer = timer  # type: ignore[attr-defined]
    timer.thread.start()
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool:
    timer = getattr(item, "_manygil_timer", None)
    if timer is not None:
        timer.done.set()
        timer.thread.join()
        del item._manygil_timer  # type: ignore[attr-defined]
    old = getattr(item, "_manygil_old_alarm", None)
    if old is not None:
        signal.signal(timer.signum if timer is not None else _signal(), old)
        del item._manygil_old_alarm  # type: ignore[attr-defined]
    return True
