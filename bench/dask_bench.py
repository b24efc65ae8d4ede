"""CPU-bound pure-Python tasks on a Dask LocalCluster: the interpreters executor of one
worker with 2 threads, against its default thread executor, and against 2
single-threaded worker processes; time and memory, in one run.

    ./dev bench-dask [--tasks N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import count_primes  # workers find it by module name


def worker_uss() -> int:
    """Runs on a Dask worker: the USS of its process (its interpreters included)."""
    import psutil

    return int(psutil.Process().memory_full_info().uss)


def run(client, annotate: bool, items: list[int]) -> float:
    import dask

    t = time.perf_counter()
    if annotate:
        with dask.annotate(executor="interpreters"):
            futures = client.map(count_primes, items, pure=False)
    else:
        futures = client.map(count_primes, items, pure=False)
    client.gather(futures)
    return time.perf_counter() - t


def main() -> None:
    import manygil.dask  # noqa: F401 - turns distributed's profiler off first
    from dask.distributed import Client, LocalCluster

    from manygil.dask import InterpreterPoolPlugin

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    items = [args.size] * args.tasks
    out: dict[str, dict[str, float]] = {}
    setups = [
        ("1 worker x 2 threads, default executor", dict(n_workers=1, threads_per_worker=2), False),
        ("1 worker x 2 threads, interpreters", dict(n_workers=1, threads_per_worker=2), True),
        ("2 worker processes x 1 thread", dict(n_workers=2, threads_per_worker=1), False),
    ]
    for label, kw, interp in setups:
        with LocalCluster(processes=True, dashboard_address=None, **kw) as cluster, Client(cluster) as client:
            if interp:
                client.register_plugin(InterpreterPoolPlugin())
            run(client, interp, items[:4])  # warm
            times = [run(client, interp, items) for _ in range(args.repeats)]
            uss = sum(client.run(worker_uss).values()) / 2**20
            out[label] = {"seconds": statistics.median(times), "uss_mib": uss}
    print(f"CPython {platform.python_version()}, {args.tasks} tasks of count_primes({args.size}), medians of {args.repeats}")
    ref = out["1 worker x 2 threads, interpreters"]["seconds"]
    for label, r in out.items():
        print(f"  {label:42} {r['seconds']:6.2f} s ({r['seconds'] / ref:.2f}x the interpreters' time)"
              f"   USS of the worker processes {r['uss_mib']:6.1f} MiB")
    path = HERE / "results" / "dask.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), **out}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
