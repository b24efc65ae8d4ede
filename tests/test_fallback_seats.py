"""The seats that both sides share (issue 14, issue 30): ``max_workers`` bounds the
interpreter and the process tasks together, each kind keeps its fair share, and a seat
given back always wakes the side that waits for one."""

from __future__ import annotations

import os
import threading

from manygil import InterpreterPoolExecutor
from manygil.sync import Event

from . import helpers


def test_max_workers_bounds_both_sides_together_and_they_share_it(refusing, tmp_path):
    """Two seats for interpreter and process tasks together.  A process task waits for
    an interpreter task to end; when both kinds have tasks waiting each keeps its fair
    share (one seat of two) instead of handing it over after every task.  Each task
    counts the tasks running as it starts."""
    for name in ("i1", "i2", "i3", "i4", "p1", "p2"):
        os.mkfifo(tmp_path / f"started-{name}")
        os.mkfifo(tmp_path / f"release-{name}")

    def started(name):
        with open(tmp_path / f"started-{name}") as f:
            assert f.read() == "started"

    def release(name):
        with open(tmp_path / f"release-{name}", "w") as f:
            f.write("go")

    folder = str(tmp_path)
    with InterpreterPoolExecutor(2) as pool:
        pool.route(refusing.ledger_task)  # a process from the first call on
        pool.route(refusing.where)
        assert pool.submit(refusing.where, 1).result(timeout=120)[0] == 2  # a process is ready
        futures = {name: pool.submit(helpers.ledger_task, folder, name) for name in ("i1", "i2")}
        started("i1")
        started("i2")
        futures |= {name: pool.submit(refusing.ledger_task, folder, name) for name in ("p1", "p2")}
        futures |= {name: pool.submit(helpers.ledger_task, folder, name) for name in ("i3", "i4")}
        # i1's seat goes to p1 (the interpreters held both); then each kind keeps one.
        for ends, starts in (("i1", "p1"), ("i2", "i3"), ("p1", "p2"), ("i3", "i4")):
            release(ends)
            started(starts)
            assert futures[ends].result(timeout=60) <= 2
        release("p2")
        release("i4")
        seen = {name: future.result(timeout=60) for name, future in futures.items()}
    assert max(seen.values()) == 2, seen  # never three at once
    assert seen["p1"] == seen["p2"] == 2  # each process task started beside a running task


def test_shutdown_stops_a_worker_that_waited_for_a_seat_when_another_retires(tmp_path):
    # Found by the fault injection (seed 3114417556): two interpreter workers wait for a
    # seat the process side holds; at shutdown one of them runs the last task and retires
    # (max_tasks_per_worker); the other must be stopped too, or shutdown waits forever.
    import threading

    gate = tmp_path / "go"
    pool = InterpreterPoolExecutor(2, max_tasks_per_worker=1)
    try:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]  # two interpreter workers, renewed
        pool.route(helpers.in_process_wait_for_path, "process")
        held = [pool.submit(helpers.in_process_wait_for_path, str(gate)) for _ in range(2)]
        seats = pool._router.other.books.seats
        while seats.held["process"] < 2:  # both seats taken by the process tasks
            assert not any(f.done() for f in held), [f.exception() for f in held]
            threading.Event().wait(0.01)
        last = pool.submit(abs, -3)  # waits for a seat, with the workers idle
        stopper = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
        stopper.start()
        while not pool._side.schedule.shutting_down:
            threading.Event().wait(0.01)
        gate.touch()
        assert [f.result(timeout=60) for f in held] == [str(gate)] * 2
        assert last.result(timeout=60) == 3
        stopper.join(timeout=60)
        assert not stopper.is_alive(), "shutdown(wait=True) never returned"
    finally:
        gate.touch()
        pool.shutdown(wait=True)


class _FakeSide:
    """A side as the seats see it: whether its tasks wait, and what a freed seat does."""

    def __init__(self, seats, name, waiting=False):
        self.seats, self.name, self.waiting, self.woken = seats, name, waiting, 0
        seats.attach(name, self.wants_seat, self.seat_freed)

    def wants_seat(self):
        return self.waiting

    def seat_freed(self):
        self.woken += 1
        if self.waiting and self.seats.take(self.name):
            self.waiting = False
            return True
        return False


def test_a_seat_given_back_wakes_the_side_that_found_none():
    # The policy, without threads: a side whose take() failed is woken by the other
    # side's next give(), under the seats' one lock (issue 30, section 2.1), even when
    # its hint (wants_seat) has not caught up yet.
    from manygil._seats import Seats

    seats = Seats(1)
    interp, process = _FakeSide(seats, "interp"), _FakeSide(seats, "process")
    assert seats.take("interp")
    assert seats.give("interp") is False and process.woken == 0  # nobody asked
    assert seats.take("interp")
    assert not seats.take("process")  # the process side found no seat...
    process.waiting = True  # (its hint is set after its take failed: the lost wake-up)
    assert seats.give("interp") is True and process.woken == 1  # ...so this give wakes it
    assert not seats.take("interp")
    interp.waiting = True
    assert seats.give("process") is True and interp.woken == 1  # it took the seat back
    assert seats.give("interp") is False and process.woken == 1  # its take succeeded since: nobody waits


def test_a_side_that_no_longer_needs_the_seat_it_wanted_declines_it():
    # The process side wanted a seat, then its tasks were cancelled: the seat given back
    # is declined, and the giver may hand it to a task of its own (it waited until the
    # next submit before).
    from manygil._seats import Seats

    seats = Seats(1)
    process = _FakeSide(seats, "process")
    assert seats.take("interp")
    assert not seats.take("process")  # it wanted one...
    assert seats.give("interp") is False and process.woken == 1  # ...and declines it now
    assert seats.take("interp")


def test_a_seat_given_back_wakes_the_other_side_through_its_callback():
    # Policy with fake sides, no pool: the sides never call each other, the seats do.
    from manygil._seats import Seats

    seats = Seats(2)
    interp, process = _FakeSide(seats, "interp"), _FakeSide(seats, "process")
    assert seats.take("interp") and seats.take("interp")
    assert seats.give("interp") is False and process.woken == 0  # nobody waits: nobody woken
    assert seats.take("interp")
    process.waiting = True  # its tasks queue (a hint the seats read without a lock)...
    assert not seats.take("process")  # ...and it found no seat
    assert seats.give("interp") is True
    assert process.woken == 1 and not process.waiting  # it took the seat at once
    assert seats.held == {"interp": 1, "process": 1}
    # A side within its fair share keeps a seat for its own next task: nobody is woken.
    interp.waiting = True
    assert seats.give("process", keep=True) is False and interp.woken == 0
    assert seats.take("process")
    # Above its share while the other waits, a side hands a seat over.
    assert not seats.others_wait("interp")  # 1 of 2: within its share
    assert seats.give("process") is True and interp.woken == 1 and not interp.waiting
    assert seats.held == {"interp": 2, "process": 0}
    process.waiting = True
    assert seats.others_wait("interp")  # 2 of 2 while the process side waits: hand one over
    # nudge(): a seat handed over for a task that was cancelled goes to the other side.
    seats.give("interp", keep=True)
    seats.nudge("interp")
    assert process.woken == 2 and seats.held == {"interp": 1, "process": 1}


def test_the_seats_keep_no_side_alive():
    import gc

    from manygil._seats import Seats

    seats = Seats(1)
    side = _FakeSide(seats, "process")
    assert seats.take("interp")
    assert not seats.take("process")
    del side
    gc.collect()
    assert seats.give("interp") is False  # the process side wanted one; it is gone: nobody took it
    assert not seats.wants_seat("process")


def test_a_seat_freed_while_a_process_task_queues_itself_is_not_lost(fault_point):
    # The lost wake-up found by reading: the process side's pump found no seat and, before
    # it queued its task, the interpreter side gave its seat back and looked at the queue
    # (without the process side's lock): empty, so nobody was woken, and the task waited
    # beside a free seat (a caller in result() forever).  The window is forced open here.
    from manygil import interpreters as I

    checked = threading.Event()
    q = I.create_queue()
    forcing = []

    def given(seats, side, woke):
        if side == "interp":
            checked.set()  # the interpreter side has decided whether to wake this side

    def no_seat(books, task):  # the pump, its take() failed, the lock held, not queued yet
        if forcing:
            forcing.clear()
            q.put("go")  # the interpreter task ends: its worker gives its seat back
            assert checked.wait(60)

    fault_point("seats.given", given)
    fault_point("process.no_seat", no_seat)
    with InterpreterPoolExecutor(1) as pool:
        pool.route(helpers.add)
        assert pool.submit(helpers.add, 0, 1).result(timeout=120) == 1  # its process is up, idle
        started = Event()
        blocker = pool.submit(helpers.started_then_wait_on, started, q)
        assert started.wait(60)  # it holds the only seat
        forcing.append(True)
        checked.clear()
        assert pool.submit(helpers.add, 2, 3).result(timeout=30) == 5  # hung before
        assert blocker.result(timeout=60) == "go"
    assert not forcing, "the pump never found the seat taken: the window was not forced open"


def test_a_seat_freed_while_an_interpreter_task_queues_itself_is_not_lost(fault_point, tmp_path):
    # The mirror case: the interpreter side found no seat (a process task held it) and,
    # before it queued its task, the process side gave the seat back and looked (without
    # the pool's lock) for waiting tasks: none yet, so nobody was woken.
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    os.mkfifo(started)
    os.mkfifo(release)
    checked = threading.Event()
    forcing: list[bool] = []

    def no_seat(side, worker):  # the pool's lock held
        if forcing:
            forcing.clear()
            os.close(os.open(release, os.O_WRONLY))  # the process task ends: its seat comes back
            assert checked.wait(60)

    def given(seats, side, woke):
        if side == "process":
            checked.set()  # the process side has decided whether to wake this side

    fault_point("interp.no_seat", no_seat)
    fault_point("seats.given", given)
    with InterpreterPoolExecutor(1) as pool:
        assert pool.submit(helpers.cpu, 10).result(timeout=60) == helpers.cpu(10)  # a worker, idle
        pool.route(helpers.fifo_handshake)
        held = pool.submit(helpers.fifo_handshake, started, release)
        with open(started) as f:
            assert f.read() == "started"  # the process task runs, on the only seat
        forcing.append(True)
        checked.clear()
        assert pool.submit(helpers.cpu, 20).result(timeout=30) == helpers.cpu(20)  # hung before
        assert held.result(timeout=60) == ""
    assert not forcing, "no worker found the seat taken: the window was not forced open"
