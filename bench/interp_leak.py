"""Memory that CPython keeps per interpreter created and closed (what each
``max_tasks_per_worker`` renewal costs).  ``./dev bench-leak`` runs it on every version.

    python bench/interp_leak.py [N]

Prints the resident set size growth per create+close, as the median over 3 rounds of
N interpreters each, after a warm-up round; a bare interpreter and a manygil pool
worker renewal (``max_tasks_per_worker=1``) are measured separately.
"""

from __future__ import annotations

import json
import statistics
import sys


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def bare(n: int) -> None:
    from manygil import interpreters

    for _ in range(n):
        interpreters.create().close()


def renewals(n: int) -> None:
    from manygil import InterpreterPoolExecutor

    with InterpreterPoolExecutor(1, max_tasks_per_worker=1) as pool:
        list(pool.map(abs, range(n)))


def per_interpreter(fn, n: int) -> float:
    fn(n)  # warm-up: caches, arenas
    rounds = []
    for _ in range(3):
        before = rss_kib()
        fn(n)
        rounds.append((rss_kib() - before) / n)
    return statistics.median(rounds)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    version = "%d.%d.%d" % sys.version_info[:3]
    result = {
        "python": version,
        "interpreters_per_round": n,
        "bare_create_close_kib": round(per_interpreter(bare, n), 1),
        "pool_renewal_kib": round(per_interpreter(renewals, n), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
