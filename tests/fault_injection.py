"""Random mixes of everything that can go wrong in a pool, with invariants checked after each.

    python tests/fault_injection.py --seed 7 --scenarios 50 [--exit-without-shutdown]

Each scenario builds a pool (1-3 workers, maybe ``max_tasks_per_worker``, maybe shared
objects in ``initargs``), runs 5-30 random operations on it -- submit, map with chunks,
tasks that raise, return shared buffers, take shared arguments, send large bytes both
ways (native blocks), spin in Python past a
time limit, wait in C past a time limit (abandoned workers), unpicklable arguments,
cancel of pending and running tasks, and in half the pools without shared ``initargs``
tasks routed to the process side (results, errors, a sleep past its time limit: the
process is terminated) -- and ends it one of four ways (shutdown with and without wait,
with ``cancel_futures``, or, for the last scenario with ``--exit-without-shutdown``, not
at all: the interpreter's exit must finish it; pools with process tasks end with
``shutdown(wait=True)``, see the known issues in docs/limitations.md).

After each scenario: every future resolved, each done-callback called exactly once,
each result the one its operation must give; no native object, interpreter, thread or
child process left.  A violation prints the seed and the scenario and exits 2.  The caller
(tests/test_fault_injection.py, ``./dev fault``) checks that the process exits with
status 0 within a bound and that nothing fatal reached stderr.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import sys
import threading
import time
from concurrent.futures import CancelledError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402

from manygil import InterpreterPoolExecutor, _native  # noqa: E402
from manygil import interpreters as I  # noqa: E402
from manygil.interpreters import NotShareableError  # noqa: E402
from manygil.shared import SharedBuffer, SharedValue  # noqa: E402
from manygil.sync import Lock  # noqa: E402

STUCK_SECONDS = 0.3  # how long a "stuck in C" task waits: abandoned, then it comes back


class Violation(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Violation(message)


class Op:
    """One submitted task and what its future may end as."""

    def __init__(self, name: str, future, expect) -> None:
        self.name = name
        self.future = future
        self.expect = expect  # callable(future) -> None, raising Violation
        self.calls = 0
        future.add_done_callback(self._done)

    def _done(self, _future) -> None:
        self.calls += 1


def outcome(future):
    """('ok', value) | ('cancelled', None) | ('raised', exception)."""
    if future.cancelled():
        return "cancelled", None
    exc = future.exception(timeout=0)
    return ("raised", exc) if exc is not None else ("ok", future.result(timeout=0))


def expect_value(value, may_cancel):
    def verify(future):
        kind, got = outcome(future)
        if kind == "cancelled" and may_cancel:
            return
        if kind == "raised" and may_cancel and isinstance(got, (CancelledError, TimeoutError)):
            return  # cancelled while it ran: interrupted
        check(kind == "ok" and got == value, f"expected {value!r}, got {kind} {got!r}")
    return verify


def expect_error(types, may_cancel):
    def verify(future):
        kind, got = outcome(future)
        if kind == "cancelled" and may_cancel:
            return
        check(kind == "raised" and isinstance(got, types), f"expected {types}, got {kind} {got!r}")
    return verify


def expect_buffer(size, fill, may_cancel):
    def verify(future):
        kind, got = outcome(future)
        if may_cancel and (kind == "cancelled" or isinstance(got, (CancelledError, TimeoutError))):
            return
        check(kind == "ok" and isinstance(got, SharedBuffer), f"expected a SharedBuffer, got {kind} {got!r}")
        check(len(got) == size and got[0] == fill and got[size - 1] == fill, "the buffer's contents changed")
    return verify


def scenario(rng: random.Random, number: int, leave_open: bool) -> list[Op]:
    workers = rng.choice([1, 2, 3])
    per_worker = rng.choice([None, None, 1, 3])
    # An open pool's abandoned workers must come back within the grace period that exit
    # gives them (time limit 0.05 + 2 * grace >= STUCK_SECONDS).
    grace = 0.2 if leave_open else rng.choice([0.05, 0.1, 0.2])
    init_objects = (SharedBuffer.from_bytes(b"I" * 64), SharedValue(5), Lock()) if rng.random() < 0.5 else None
    kwargs = {"grace_period": grace, "max_tasks_per_worker": per_worker}
    if init_objects is not None:
        kwargs.update(initializer=helpers.init_worker, initargs=(init_objects,))
    pool = InterpreterPoolExecutor(workers, **kwargs)
    kinds = ["add", "add", "add", "boom", "buffer_arg", "buffer_result", "map", "spin_limit",
             "stuck_in_c", "unpicklable", "cancel", "cancel", "bomb", "big_bytes"]
    processes = init_objects is None and not leave_open and rng.random() < 0.5
    if processes:
        for fn in (helpers.in_process_add, helpers.in_process_boom, helpers.in_process_sleep):
            pool.route(fn, "process")
        kinds += ["proc_add", "proc_add", "proc_boom", "proc_stuck"]
    ops: list[Op] = []
    may_cancel: set[int] = set()
    for _ in range(rng.randint(5, 30)):
        kind = rng.choice(kinds)
        i = len(ops)
        if kind == "add":
            x = rng.randint(0, 1000)
            ops.append(Op(kind, pool.submit(helpers.add, x, 1), expect_value(x + 1, True)))
        elif kind == "boom":
            ops.append(Op(kind, pool.submit(helpers.boom, "no"), expect_error(ValueError, True)))
        elif kind == "buffer_arg":
            size = rng.choice([1, 4096, 1 << 20])
            ops.append(Op(kind, pool.submit(len, SharedBuffer(size)), expect_value(size, True)))
        elif kind == "big_bytes":  # crosses both ways as a native block
            blob = rng.randbytes(rng.choice([1 << 16, 1 << 20]))
            ops.append(Op(kind, pool.submit(helpers.same, blob), expect_value(blob, True)))
        elif kind == "buffer_result":
            size, fill = rng.choice([16, 1 << 16]), rng.randint(1, 255)
            ops.append(Op(kind, pool.submit(helpers.make_buffer, size, fill), expect_buffer(size, fill, True)))
        elif kind == "map":
            data = list(range(rng.randint(0, 40)))
            chunk = rng.choice([1, 3, 10])
            try:
                got = list(pool.map(abs, data, chunksize=chunk, timeout=60))
            except Exception as exc:  # noqa: BLE001
                raise Violation(f"map failed: {exc!r}") from exc
            check(got == data, "map returned the wrong values")
        elif kind == "spin_limit":
            ops.append(Op(kind, pool.with_timeout(0.05).submit(helpers.spin), expect_error((TimeoutError,), True)))
        elif kind == "stuck_in_c":
            fut = pool.with_timeout(0.05).submit(helpers.block_in_c_for, STUCK_SECONDS)
            ops.append(Op(kind, fut, expect_error((TimeoutError,), True)))
        elif kind == "unpicklable":
            try:
                pool.submit(helpers.add, SharedBuffer(8), threading.Lock())
            except NotShareableError:
                pass
            else:
                raise Violation("an unpicklable argument was accepted")
        elif kind == "cancel" and ops:
            victim = rng.randrange(len(ops))
            may_cancel.add(victim)
            ops[victim].future.cancel()
            ops[victim].expect = _cancellable(ops[victim].expect)
        elif kind == "bomb":
            fut = pool.submit(helpers.make_bomb, "exit")
            ops.append(Op(kind, fut, expect_error((SystemExit,), True)))
        elif kind == "proc_add":
            x = rng.randint(0, 1000)
            ops.append(Op(kind, pool.submit(helpers.in_process_add, x, 1), expect_value(x + 1, True)))
        elif kind == "proc_boom":
            ops.append(Op(kind, pool.submit(helpers.in_process_boom, "no"), expect_error(ValueError, True)))
        elif kind == "proc_stuck":  # its time limit terminates the process, which is replaced
            fut = pool.with_timeout(0.2).submit(helpers.in_process_sleep, 60)
            ops.append(Op(kind, fut, expect_error((TimeoutError,), True)))
        del i
    end = "open" if leave_open else rng.choice(["wait", "cancel", "nowait"])
    if end == "wait":
        pool.shutdown(wait=True)
    elif end == "cancel":
        pool.shutdown(wait=True, cancel_futures=True)
    elif end == "nowait":
        pool.shutdown(wait=False)
    if end != "open":
        deadline = time.monotonic() + 60
        for op in ops:
            try:
                op.future.exception(timeout=max(0.0, deadline - time.monotonic()))
            except CancelledError:
                pass
            except TimeoutError:
                raise Violation(f"scenario {number}: a {op.name} future never resolved") from None
        for op in ops:
            check(op.calls == 1, f"scenario {number}: a {op.name} future's callbacks ran {op.calls} times")
            op.expect(op.future)
    return ops if end == "open" else []


def _cancellable(verify):
    def relaxed(future):
        if future.cancelled():
            return
        kind, got = outcome(future)
        if kind == "raised" and isinstance(got, (CancelledError, TimeoutError)):
            return
        verify(future)
    return relaxed


def settle(start: dict[str, int], main_threads: set[threading.Thread]) -> None:
    """Wait (bounded) until everything a scenario made is gone; abandoned workers come
    back from C after STUCK_SECONDS."""
    deadline = time.monotonic() + 10 + STUCK_SECONDS * 4
    while True:
        gc.collect()
        live = dict(_native.live())
        interps = [i.id for i in I.list_all()]
        threads = [t for t in threading.enumerate() if t not in main_threads and t.is_alive()]
        children = multiprocessing.active_children()
        if live == start and len(interps) == 1 and not threads and not children:
            return
        if time.monotonic() > deadline:
            raise Violation(
                f"left behind: native {live} (start {start}), interpreters {interps}, threads {threads}, "
                f"processes {children}"
            )
        time.sleep(0.02)


def main() -> int:
    import faulthandler

    faulthandler.enable()  # a crash prints the stacks of this (main) interpreter's threads
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--exit-without-shutdown", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = dict(_native.live())
    main_threads = set(threading.enumerate())
    kept: list[Op] = []
    for number in range(args.scenarios):
        last = number == args.scenarios - 1
        try:
            kept = scenario(rng, number, leave_open=last and args.exit_without_shutdown)
            if not kept:
                settle(start, main_threads)
        except Violation as exc:
            print(f"VIOLATION seed={args.seed} scenario={number}: {exc}", flush=True)
            return 2
    print(f"ok: {args.scenarios} scenarios, seed {args.seed}", flush=True)
    # With --exit-without-shutdown the last pool is still running: exit must finish it.
    return 0


if __name__ == "__main__":
    sys.exit(main())
