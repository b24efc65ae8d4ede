"""The same CPU-bound pure-Python work, run serially, on threads and on interpreters.

    ./dev demo            (or: python examples/speedup.py [--tasks N] [--size N])
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


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


def run_interpreters(tasks: list[int], workers: int) -> list[int]:
    from manygil import interpreters

    interps = [interpreters.create() for _ in range(workers)]
    results: list[int] = [0] * len(tasks)
    try:
        def work(k: int) -> None:
            for i in range(k, len(tasks), workers):
                results[i] = interps[k].call(count_primes, tasks[i])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for it in interps:
            it.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--size", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    tasks = [args.size] * args.tasks
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores: {args.tasks} tasks of count_primes({args.size})")

    t = time.perf_counter()
    expected = [count_primes(n) for n in tasks]
    serial = time.perf_counter() - t
    print(f"  serial        {serial:6.2f} s")

    t = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        got = list(pool.map(count_primes, tasks))
    threads = time.perf_counter() - t
    assert got == expected
    print(f"  threads       {threads:6.2f} s   speed-up {serial / threads:4.2f}x  (one GIL)")

    t = time.perf_counter()
    got = run_interpreters(tasks, args.workers)
    interps = time.perf_counter() - t
    assert got == expected
    print(f"  interpreters  {interps:6.2f} s   speed-up {serial / interps:4.2f}x  (one GIL each, {args.workers} workers)")


if __name__ == "__main__":
    main()
