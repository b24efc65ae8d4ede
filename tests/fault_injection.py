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

``--program-end K`` adds K scenarios that end the way a script does (issue 23): each is a
script generated from the seed and run as ``python script.py`` in a child process.  It
makes one or two pools without ``with``, submits 4-20 random tasks -- of helper-module
functions, of functions defined in the script itself (at its top, under its main guard,
lambdas), and, in most scripts, process tasks (functions of a module that imports an
extension refusing an own-GIL interpreter, ``mg_single_phase``, built here; sometimes the
script imports it too) -- with errors, time limits, shared buffers, large bytes, cancels,
and ends by falling off its end, ``del pool`` or ``sys.exit(0)``, never calling
``shutdown()``.  The interpreter's exit must run every task: each callback prints one
line, and the driver checks one line per task, the right outcome, exit status 0 and an
empty stderr (``KNOWN_FAILURES`` lists what is left out until it is fixed)::

    python tests/fault_injection.py --seed 7 --scenarios 12 --program-end 3 [--known-failures]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time
import zlib
from concurrent.futures import CancelledError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers

from manygil import InterpreterPoolExecutor, _native
from manygil import interpreters as I
from manygil.interpreters import NotShareableError
from manygil.shared import SharedBuffer, SharedValue
from manygil.sync import Lock

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
            except Exception as exc:
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


# ------------------------------------------------------------------ the program's end

TESTS = os.path.dirname(os.path.abspath(__file__))

# What the program-end scripts leave out, unless --known-failures: cases that fail today,
# for the product to fix (issue 23, section 1).
# - CPython 3.12 starts no thread once the program's end has begun, and a process worker
#   needs some: process tasks left then run each in a process of their own (_Starter.run_alone),
#   where no time limit reaches them (a 0.3 s task runs its 60 s: seeds 14, 15), and a
#   slot whose process was still starting as the end began can put a forkserver
#   traceback (FileNotFoundError for its semaphore) on stderr (seed 12).  So on 3.12
#   the scripts have no process tasks.
# (Fixed and no longer left out: a process worker that had to start once the end had
# begun failed with "can't register atexit after shutdown" on 3.13+, seeds 14 and 12:
# 7dbb943 and 135307c; a refusing script's `del pool` failed every task of the script's
# own functions with "Can't get attribute": f12c682.)
KNOWN_FAILURES = False

# Process tasks: a module that imports an extension refusing an own-GIL interpreter.
REFUSING_MODULE = '''"""Written by tests/fault_injection.py: its functions run in process workers."""
import time

import mg_single_phase  # noqa: F401 - refuses an own-GIL interpreter


def triple(x):
    return 3 * x


def fail(message):
    raise ValueError(message)


def nap(seconds):
    time.sleep(seconds)  # in C: only terminating the process stops it early
    return seconds
'''

# The top of every generated script: its own functions, and the callback that prints one
# line per task (one write per line: callbacks run on several threads).
SCRIPT_HEAD = '''
import random
import sys
import warnings
import zlib
from concurrent.futures import wait as futures_wait
{refuse}
import helpers

from manygil import FallbackWarning, InterpreterPoolExecutor
from manygil.shared import SharedBuffer

warnings.simplefilter("ignore", FallbackWarning)  # the process side says it once


def summary(value):
    if isinstance(value, SharedBuffer):
        return f"buffer {{len(value)}} {{value[0]}} {{value[len(value) - 1]}}"
    if isinstance(value, bytes):
        return f"bytes {{len(value)}} {{zlib.crc32(value)}}"
    return repr(value)


def report(i):
    def done(f):
        if f.cancelled():
            line = "cancelled"
        elif f.exception() is not None:
            e = f.exception()
            line = "raised " + type(e).__name__ + " " + " ".join(str(e).split())[:300]
        else:
            line = "ok " + summary(f.result())
        sys.stdout.write(f"{{i}} {{line}}\\n")
        sys.stdout.flush()
    return done


def script_add(a, b):
    return a + b


def script_boom(message):
    raise ValueError(message)


def script_buffer(size, fill):
    buf = SharedBuffer(size)
    buf[:] = bytes([fill]) * size
    return buf


if __name__ == "__main__":
    import fault_refusing  # here, not at the top: else the whole script refuses (see refuse)

    def guarded_mul(a, b):  # under the main guard: the workers' import never defines it
        return a * b

'''


def blob(key: int, size: int) -> bytes:
    return random.Random(key).randbytes(size)


def program_end_script(rng: random.Random) -> tuple[str, list[tuple[str, str, bool]], str]:
    """A random script and, per task, (kind, the line its callback must print, whether a
    cancel may have hit it)."""
    refuse = rng.random() < 0.25  # the script itself imports the refusing extension
    processes = refuse or rng.random() < 0.7
    if sys.version_info < (3, 13) and not KNOWN_FAILURES:
        refuse = processes = False  # see KNOWN_FAILURES
    pools = 2 if rng.random() < 0.3 else 1
    body = []
    for p in range(pools):
        workers, per_worker = rng.choice([1, 2, 3]), rng.choice([None, None, 1, 3])
        body.append(f"pool{p} = InterpreterPoolExecutor({workers}, grace_period=0.2, max_tasks_per_worker={per_worker})")
    body.append("futures = {}")
    kinds = ["add", "script_add", "script_add", "guarded", "lambda", "boom", "script_boom",
             "buffer_result", "script_buffer", "buffer_arg", "big_bytes", "spin_limit", "cancel", "wait"]
    if processes:
        kinds += ["proc_triple", "proc_triple", "proc_triple", "proc_fail", "proc_stuck"]
    tasks: list[tuple[str, str, bool]] = []
    for _ in range(rng.randint(4, 20)):
        kind = rng.choice(kinds)
        pool = f"pool{rng.randrange(pools)}"
        x = rng.randint(0, 1000)
        call = expect = None
        if kind == "add":
            call, expect = f"{pool}.submit(helpers.add, {x}, 1)", f"ok {x + 1}"
        elif kind == "script_add":
            call, expect = f"{pool}.submit(script_add, {x}, 2)", f"ok {x + 2}"
        elif kind == "guarded":
            call, expect = f"{pool}.submit(guarded_mul, {x}, 3)", f"ok {x * 3}"
        elif kind == "lambda":
            call, expect = f"{pool}.submit(lambda a: a - 1, {x})", f"ok {x - 1}"
        elif kind == "boom":
            call, expect = f"{pool}.submit(helpers.boom, 'no')", "raised ValueError no"
        elif kind == "script_boom":
            call, expect = f"{pool}.submit(script_boom, 'no')", "raised ValueError no"
        elif kind in ("buffer_result", "script_buffer"):
            size, fill = rng.choice([16, 1 << 16]), rng.randint(1, 255)
            fn = "helpers.make_buffer" if kind == "buffer_result" else "script_buffer"
            call, expect = f"{pool}.submit({fn}, {size}, {fill})", f"ok buffer {size} {fill} {fill}"
        elif kind == "buffer_arg":
            size = rng.choice([1, 4096, 1 << 20])
            call, expect = f"{pool}.submit(len, SharedBuffer({size}))", f"ok {size}"
        elif kind == "big_bytes":  # crosses both ways as a native block
            size = rng.choice([1 << 16, 1 << 20])
            data = blob(x, size)
            call = f"{pool}.submit(helpers.same, random.Random({x}).randbytes({size}))"
            expect = f"ok bytes {size} {zlib.crc32(data)}"
        elif kind == "spin_limit":
            call, expect = f"{pool}.with_timeout(0.05).submit(helpers.spin)", "raised TimeoutError"
        elif kind == "proc_triple":
            call, expect = f"{pool}.submit(fault_refusing.triple, {x})", f"ok {3 * x}"
        elif kind == "proc_fail":
            call, expect = f"{pool}.submit(fault_refusing.fail, 'no')", "raised ValueError no"
        elif kind == "proc_stuck":  # its time limit terminates the process
            call, expect = f"{pool}.with_timeout(0.3).submit(fault_refusing.nap, 60)", "raised TimeoutError"
        elif kind == "cancel" and tasks:
            victim = rng.randrange(len(tasks))
            body.append(f"futures[{victim}].cancel()")
            tasks[victim] = (tasks[victim][0], tasks[victim][1], True)
        elif kind == "wait" and tasks:  # some results are taken before the end
            body.append(f"futures_wait([futures[{rng.randrange(len(tasks))}]], timeout=60)")
        if call is not None:
            body.append(f"futures[{len(tasks)}] = {call}")
            body.append(f"futures[{len(tasks)}].add_done_callback(report({len(tasks)}))")
            tasks.append((kind, expect, False))
    end = rng.choice(["fall off", "del", "exit"])
    body.append('sys.stdout.write(f"submitted {len(futures)}\\n")')  # one write: callbacks print too
    body.append("sys.stdout.flush()")
    if end == "del":
        body.append("del " + ", ".join(f"pool{p}" for p in range(pools)) + ", futures")
    elif end == "exit":
        body.append("sys.exit(0)")
    head = SCRIPT_HEAD.format(refuse="import mg_single_phase  # noqa: F401" if refuse else "")
    script = head + textwrap.indent("\n".join(body), "    ") + "\n"
    how = f"{pools} pool(s), {'script refuses, ' if refuse else ''}{'process tasks, ' if processes else ''}end: {end}"
    return script, tasks, how


def matches(line: str, expect: str, may_cancel: bool) -> bool:
    if line == expect or (expect == "raised TimeoutError" and line.startswith("raised TimeoutError")):
        return True
    if may_cancel and (line == "cancelled" or line.startswith(("raised CancelledError", "raised TimeoutError"))):
        return True
    # CPython 3.12 starts no thread once the program's end has begun: a task that needs a
    # new worker then (an interpreter or a process one) fails, saying how to avoid it.
    return sys.version_info < (3, 13) and line.startswith("raised ") and (
        "before the script ends" in line or "can't create new thread at interpreter shutdown" in line
    )


def build_refusing(folder: str) -> None:
    """mg_single_phase (tests/fixtures/mg_single_phase.c) and fault_refusing in ``folder``."""
    source = os.path.join(TESTS, "fixtures", "mg_single_phase.c")
    target = os.path.join(folder, "mg_single_phase" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    subprocess.run([cc, "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], source, "-o", target],
                   check=True, capture_output=True, timeout=120)
    with open(os.path.join(folder, "fault_refusing.py"), "w") as f:
        f.write(REFUSING_MODULE)


def program_end(rng: random.Random, number: int, folder: str) -> None:
    script, tasks, how = program_end_script(rng)
    path = os.path.join(folder, f"program_end_{number}.py")
    with open(path, "w") as f:
        f.write(script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [folder, TESTS, os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, path], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        raise Violation(f"program-end scenario {number} ({how}, script {path}) did not end within 120 s; "
                        f"stdout:\n{out}") from None
    where = (f"program-end scenario {number} ({how}); run it again with "
             f"PYTHONPATH={env['PYTHONPATH']} {sys.executable} {path}")
    check(proc.returncode == 0, f"{where}: exit status {proc.returncode}\n{proc.stdout}{proc.stderr}")
    check(proc.stderr == "", f"{where}: stderr:\n{proc.stderr}")
    lines: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        index, _, rest = line.partition(" ")
        if index.isdigit():
            lines.setdefault(int(index), []).append(rest)
    for i, (kind, expect, may_cancel) in enumerate(tasks):
        got = lines.get(i, [])
        check(len(got) == 1, f"{where}: task {i} ({kind}) printed {len(got)} callback lines: {got}; "
                             f"stdout:\n{proc.stdout}")
        check(matches(got[0], expect, may_cancel), f"{where}: task {i} ({kind}) gave {got[0]!r}, not {expect!r}")


def main() -> int:
    import faulthandler

    faulthandler.enable()  # a crash prints the stacks of this (main) interpreter's threads
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--exit-without-shutdown", action="store_true")
    parser.add_argument("--program-end", type=int, default=0, metavar="K",
                        help="also K scenarios that end as a script does, each in a child process")
    parser.add_argument("--known-failures", action="store_true",
                        help="program-end scripts may be the cases that fail today (see KNOWN_FAILURES)")
    args = parser.parse_args()
    global KNOWN_FAILURES
    KNOWN_FAILURES = args.known_failures
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
    if args.program_end:
        folder = tempfile.mkdtemp(prefix="manygil-fault-")
        try:
            build_refusing(folder)
            for number in range(args.program_end):
                program_end(rng, number, folder)
        except Violation as exc:
            print(f"VIOLATION seed={args.seed} {exc}", flush=True)
            return 2  # the scripts stay in the folder, to run again
        shutil.rmtree(folder, ignore_errors=True)
        print(f"ok: {args.scenarios} scenarios and {args.program_end} at the program's end, seed {args.seed}",
              flush=True)
        return 0
    print(f"ok: {args.scenarios} scenarios, seed {args.seed}", flush=True)
    # With --exit-without-shutdown the last pool is still running: exit must finish it.
    return 0


if __name__ == "__main__":
    sys.exit(main())
