"""A mixed workload: half the tasks call numpy, half are pure Python (issue 14).

    python bench/mixed.py [--tasks 200] [--repeat 3] [--out FILE]     (./dev bench-mixed)

manygil's pool runs the pure-Python tasks in own-GIL interpreters and sends the numpy
ones (numpy refuses such an interpreter) to process workers by itself
(``fallback="process"``).  The alternatives run everything in processes: the default
``ProcessPoolExecutor`` (what ``ProcessPoolExecutor(n)`` picks: fork on Linux before
3.14, forkserver from 3.14, spawn on macOS and Windows), forkserver and spawn.  Same
run, medians of ``--repeat``; ratios are wall time over manygil's.  The results must be
identical to ``ProcessPoolExecutor``'s.  ``--out`` writes them as JSON
(``bench/results/mixed-3.X.json`` by default).

Two settings, each timed from creating the pool to the end of its ``with`` block:

- a program's first pool: each run is a new process (``--one NAME``), as when a script
  runs once; the forkserver starts there too, and manygil learns which functions go
  to processes;
- a later pool in the same process: the forkserver is up (with this script imported)
  and manygil's pool starts from the routes the earlier pools learned.

numpy's BLAS starts a thread per core in every process that imports it; with one
process per core those threads fight for the cores (seen here: 100 numpy tasks took
2-5.6 s in two processes instead of 0.3 s).  Like any process-pool program (and as loky
does for its workers), this one limits BLAS to one thread per process, for every pool
alike, unless the variables are set already.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS (see the docstring)

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from manygil import FallbackWarning, InterpreterPoolExecutor


def pure(seed: int) -> int:
    """A small rule engine: pure Python, about 20 ms."""
    x, total = seed, 0
    for _ in range(150_000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        total += x % 7 == 3
    return total


def with_numpy(seed: int) -> float:
    """Sort and solve with numpy on a few MB."""
    rng = np.random.default_rng(seed)
    a = rng.random(400_000)
    m = rng.random((120, 120)) + np.eye(120) * 120
    return float(np.sort(a)[200_000] + np.linalg.solve(m, np.ones(120)).sum())


def work(n: int) -> list[tuple[object, int]]:
    return [(with_numpy if i % 2 else pure, i) for i in range(n)]


def run(pool, tasks) -> tuple[float, list[object]]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    futures = [pool.submit(fn, arg) for fn, arg in tasks]
    results = [f.result() for f in futures]
    return time.perf_counter() - start, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--one", help="time one pool of this name in this process, print the seconds")
    here = os.path.dirname(os.path.abspath(__file__))
    version = "%d.%d" % sys.version_info[:2]
    ap.add_argument("--out", default=os.path.join(here, "results", f"mixed-{version}.json"))
    args = ap.parse_args()
    tasks = work(args.tasks)
    warnings.simplefilter("ignore", FallbackWarning)

    makers = {
        "manygil (fallback=process)": lambda: InterpreterPoolExecutor(args.workers),
        f"ProcessPool default ({multiprocessing.get_start_method()})": lambda: ProcessPoolExecutor(args.workers),
        "ProcessPool forkserver": lambda: ProcessPoolExecutor(
            args.workers, mp_context=multiprocessing.get_context("forkserver")),
        "ProcessPool spawn": lambda: ProcessPoolExecutor(
            args.workers, mp_context=multiprocessing.get_context("spawn")),
        "threads": lambda: ThreadPoolExecutor(args.workers),
    }
    if args.one:
        start = time.perf_counter()
        with makers[args.one]() as pool:
            _, results = run(pool, tasks)
        print(time.perf_counter() - start, hash(tuple(results)))
        return

    # A program's first pool: a new process per run.
    first: dict[str, list[float]] = {name: [] for name in makers}
    digests = set()
    for _ in range(args.repeat):
        for name in makers:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one", name, "--tasks", str(args.tasks),
                 "--workers", str(args.workers)],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            first[name].append(float(out[0]))
            digests.add(out[1])
    if len(digests) != 1:
        raise SystemExit("the pools' results differ between runs")

    times: dict[str, list[float]] = {name: [] for name in makers}
    reference = None
    for _ in range(args.repeat):
        for name, make in makers.items():
            pool = make()  # start-up counts: every pool is created cold
            start = time.perf_counter()
            with pool:
                _, results = run(pool, tasks)
            times[name].append(time.perf_counter() - start)
            if reference is None:
                reference = results
            elif results != reference:
                raise SystemExit(f"{name}: results differ from the first pool's")

    pure_tasks = [(fn, arg) for fn, arg in tasks if fn is pure]
    pure_only = {"manygil, the pure half alone": lambda: InterpreterPoolExecutor(args.workers)}
    for name, make in pure_only.items():
        times[name] = []
        for _ in range(args.repeat):
            with make() as pool:
                elapsed, _ = run(pool, pure_tasks)
            times[name].append(elapsed)

    print(f"CPython {sys.version.split()[0]}, {args.workers} workers, {args.tasks} tasks "
          f"(half numpy), medians of {args.repeat}; results identical in every pool")
    report: dict[str, object] = {
        "python": sys.version.split()[0], "workers": args.workers, "tasks": args.tasks,
        "repeats": args.repeat, "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    for key, title, table in (("first_pool", "a program's first pool (a new process per run)", first),
                              ("later_pool", "a later pool in the same process", times)):
        base = statistics.median(table["manygil (fallback=process)"])
        report[key] = {name: statistics.median(ts) for name, ts in table.items()}
        print(f"\n{title}\n{'pool':42} {'wall s':>8} {'ratio':>7}")
        for name, ts in table.items():
            med = statistics.median(ts)
            print(f"{name:42} {med:8.3f} {med / base:7.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
