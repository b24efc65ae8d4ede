"""How many tasks a free worker takes at once (``_interp_side.batch_limit``): the
policy alone, without a pool (issue 25)."""

from __future__ import annotations

import pytest

from manygil._interp_side import _MAX_BATCH, batch_limit


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
