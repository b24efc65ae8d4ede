"""FIFO handshakes with a task in a process worker (``refusing_tasks.block``): the test
waits until the task runs, and releases it when it chooses, with no timing assumed."""

from __future__ import annotations

import os


def _fifos(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    os.mkfifo(release)
    return str(started), str(release)


def _wait_started(started):
    with open(started) as f:  # blocks until the task opened it: it runs
        assert f.read() == "started"
