"""How many tasks a free worker takes at once (``_interp_side.batch_limit``), and how
long a caller and an idle worker poll before they sleep (``_interp_side.caller_spin``,
``_worker.idle_spin``): the policies alone, without a pool (issues 24 and 25)."""

from __future__ import annotations

import pytest

from manygil._interp_side import _CALLER_SPIN, _MAX_BATCH, _SPIN_MAX, batch_limit, caller_spin
from manygil._worker import _IDLE_SPIN, _IDLE_SPIN_MAX, idle_spin


@pytest.mark.parametrize("task_time", [None, 0.0005, 0.002])
def test_tasks_travel_alone_until_they_are_known_to_be_short(task_time):
    assert batch_limit(1000, 2, task_time, None) == 1


def test_short_tasks_travel_in_bulk_up_to_the_cap():
    assert batch_limit(10_000, 2, 10e-6, None) == _MAX_BATCH


def test_a_batch_takes_at_most_a_share_of_what_is_pending_so_the_tail_stays_balanced():
    assert batch_limit(20, 2, 10e-6, None) == 5  # 1/(2 * workers)
    assert batch_limit(20, 4, 10e-6, None) == 2
    assert batch_limit(3, 2, 10e-6, None) == 1  # never none


def test_a_batch_is_about_five_milliseconds_of_work():
    assert batch_limit(10_000, 2, 100e-6, None) == 50
    assert batch_limit(10_000, 2, 400e-6, None) == 12


def test_a_batch_never_takes_more_than_the_worker_may_still_run():
    assert batch_limit(10_000, 2, 10e-6, 3) == 3
    assert batch_limit(10_000, 2, None, 3) == 1
    assert batch_limit(10_000, 2, 10e-6, 0) == 1  # its renewal comes first


def test_no_active_worker_counts_as_one():
    assert batch_limit(20, 0, 10e-6, None) == 10


def test_a_caller_polls_through_about_two_short_tasks_when_a_cpu_is_free():
    assert caller_spin(100e-6, 1, 1) == pytest.approx(2 * 100e-6 + _CALLER_SPIN)
    assert caller_spin(800e-6, 1, 1) == _SPIN_MAX  # never longer


def test_a_caller_does_not_poll_for_tasks_of_unknown_or_long_time():
    assert caller_spin(None, 0, 7) == 0.0
    assert caller_spin(_SPIN_MAX, 0, 7) == 0.0


def test_a_caller_polls_only_briefly_when_the_busy_workers_take_every_cpu():
    assert caller_spin(20e-6, 2, 1) == _CALLER_SPIN  # map() of short tasks on two cores
    assert caller_spin(300e-6, 2, 1) == 0.0
    assert caller_spin(20e-6, 1, 0) == _CALLER_SPIN  # one CPU: no CPU is free


def test_an_idle_worker_polls_through_about_the_gap_between_its_batches():
    assert idle_spin(50e-6, 200e-6) == pytest.approx(300e-6)  # a caller's round trips
    assert idle_spin(50e-6, 0.0) == _IDLE_SPIN  # its batches come back to back
    assert idle_spin(50e-6, 900e-6) == _IDLE_SPIN_MAX


def test_an_idle_worker_sleeps_soon_after_long_batches_or_long_gaps():
    assert idle_spin(0.002, 100e-6) == 0.0
    assert idle_spin(50e-6, 0.5) == _IDLE_SPIN  # tasks come seldom: a wake-up costs little then
