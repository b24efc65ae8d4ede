"""The same CPU-bound pure-Python work, run serially, on threads and on an interpreter pool.

    ./dev demo            (or: python examples/speedup.py [--tasks N] [--size N])
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from manygil import InterpreterPoolExecutor


def count_primes(limit: int) -> int:
    """Pure-Python CPU work: count the primes below ``limit`` by trial division."""
    count = 0
    for n in range(2, limit):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    tasks = [args.size] * args.tasks
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores: {args.tasks} tasks of count_primes({args.size})")

    t = time.perf_counter()
    expected = [count_primes(n) for n in tasks]
    serial = time.perf_counter() - t
    print(f"  serial        {serial:6.2f} s")

    # Parallelism = CPU time of the process / wall time: how many cores the run kept busy.
    # On a busy machine the speed-up can drop while the parallelism stays: the cores
    # were busy, just not all for us.
    t, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(args.workers) as pool:
        got = list(pool.map(count_primes, tasks))
    threads = time.perf_counter() - t
    par = (time.process_time() - cpu) / threads
    assert got == expected
    print(f"  threads       {threads:6.2f} s   speed-up {serial / threads:4.2f}x  parallelism {par:4.2f}  (one GIL)")

    t = time.perf_counter()
    with InterpreterPoolExecutor(args.workers) as pool:
        list(pool.map(count_primes, [10] * args.workers * 2))  # start every worker
        started = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        got = list(pool.map(count_primes, tasks))
        interps = time.perf_counter() - t
        par = (time.process_time() - cpu) / interps
    assert got == expected
    print(f"  interpreters  {interps:6.2f} s   speed-up {serial / interps:4.2f}x  parallelism {par:4.2f}  "
          f"(InterpreterPoolExecutor, {args.workers} workers, started in {started * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
