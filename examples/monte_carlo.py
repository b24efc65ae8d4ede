"""Estimate pi by Monte-Carlo on every core, and compare with a serial run.

    python examples/monte_carlo.py [--samples N]
"""

from __future__ import annotations

import argparse
import random
import time

from manygil import InterpreterPoolExecutor


def hits(samples: int, seed: int) -> int:
    """How many random points of the unit square fall inside the quarter circle."""
    rnd = random.Random(seed)
    inside = 0
    for _ in range(samples):
        x, y = rnd.random(), rnd.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=4_000_000)
    parser.add_argument("--tasks", type=int, default=16)
    args = parser.parse_args()
    per_task = args.samples // args.tasks
    seeds = range(args.tasks)

    t = time.perf_counter()
    expected = sum(hits(per_task, s) for s in seeds)
    serial = time.perf_counter() - t

    with InterpreterPoolExecutor() as pool:
        pool.submit(len, "warm").result()
        t = time.perf_counter()
        got = sum(pool.map(hits, [per_task] * args.tasks, seeds))
        parallel = time.perf_counter() - t
    assert got == expected  # same seeds, same points
    print(f"pi ~ {4 * got / (per_task * args.tasks):.5f} from {per_task * args.tasks} samples")
    print(f"serial {serial:.2f} s, interpreters {parallel:.2f} s: speed-up {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
