"""Shared memory and cross-interpreter locks, against the alternatives, in one run.

    ./dev bench-shared        (or: python bench/shared.py [--repeats N])

* A SharedBuffer of 1 MiB and of 1 GiB sent to a pool task and back (it crosses by id),
  against 16 MiB of bytes through ProcessPoolExecutor (forkserver) and through the
  manygil pool as plain bytes.
* Uncontended Lock acquire+release: manygil.sync.Lock, threading.Lock,
  multiprocessing.Lock.
* Wake-up across interpreters: Event.set() in the main interpreter to the waiter
  running again in a worker interpreter (both stamp time.perf_counter_ns).
Prints medians and ratios and writes bench/results/shared.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from manygil import InterpreterPoolExecutor
from manygil.shared import SharedBuffer, SharedValue
from manygil.sync import Event, Lock

HERE = Path(__file__).resolve().parent


def touch(buf: object) -> object:
    """Read one byte through the buffer protocol and send the object back."""
    memoryview(buf)[0]  # type: ignore[call-overload]
    return buf


def wait_and_stamp(event: Event, stamp: SharedValue) -> None:
    event.wait(30)
    stamp.value = time.perf_counter_ns()


def roundtrip_us(pool: object, obj: object, n: int) -> float:
    pool.submit(touch, obj).result()  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(n):
        pool.submit(touch, obj).result()  # type: ignore[attr-defined]
    return (time.perf_counter() - t) / n * 1e6


def lock_ns(lock: object, n: int = 200_000) -> float:
    acquire, release = lock.acquire, lock.release  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - t) / n * 1e9


def wakeup_us(pool: InterpreterPoolExecutor, n: int) -> list[float]:
    out = []
    for _ in range(n):
        event, stamp = Event(), SharedValue(0)
        future = pool.submit(wait_and_stamp, event, stamp)
        while not future.running():
            time.sleep(0.001)
        time.sleep(0.005)  # let the waiter block
        t0 = time.perf_counter_ns()
        event.set()
        future.result(timeout=30)
        out.append((stamp.value - t0) / 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "shared.json")
    args = parser.parse_args()
    r: dict[str, float] = {}
    with InterpreterPoolExecutor(2) as pool:
        small, big = SharedBuffer(2**20), SharedBuffer(2**30)
        r["shared_1MiB_us"] = statistics.median(roundtrip_us(pool, small, 50) for _ in range(args.repeats))
        r["shared_1GiB_us"] = statistics.median(roundtrip_us(pool, big, 50) for _ in range(args.repeats))
        del big
        blob = bytes(16 * 2**20)
        r["bytes_16MiB_manygil_us"] = statistics.median(roundtrip_us(pool, blob, 3) for _ in range(args.repeats))
        r["wakeup_us"] = statistics.median(wakeup_us(pool, 30 * args.repeats))
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=ctx) as ppe:
        r["bytes_16MiB_forkserver_us"] = statistics.median(roundtrip_us(ppe, blob, 3) for _ in range(args.repeats))
    r["lock_manygil_ns"] = statistics.median(lock_ns(Lock()) for _ in range(args.repeats))
    r["lock_threading_ns"] = statistics.median(lock_ns(threading.Lock()) for _ in range(args.repeats))
    r["lock_multiprocessing_ns"] = statistics.median(lock_ns(multiprocessing.Lock()) for _ in range(args.repeats))

    print(f"CPython {platform.python_version()}, medians of {args.repeats} runs")
    print(f"  SharedBuffer 1 MiB to a task and back   {r['shared_1MiB_us']:10.1f} µs")
    print(f"  SharedBuffer 1 GiB to a task and back   {r['shared_1GiB_us']:10.1f} µs"
          f"   ({r['shared_1GiB_us'] / r['shared_1MiB_us']:.2f}x the 1 MiB time)")
    print(f"  16 MiB bytes, manygil pool              {r['bytes_16MiB_manygil_us']:10.1f} µs")
    print(f"  16 MiB bytes, ProcessPool(forkserver)   {r['bytes_16MiB_forkserver_us']:10.1f} µs"
          f"   (SharedBuffer is {r['bytes_16MiB_forkserver_us'] / r['shared_1GiB_us']:.0f}x faster, even at 1 GiB)")
    print(f"  Lock acquire+release: manygil           {r['lock_manygil_ns']:10.1f} ns")
    print(f"                        threading         {r['lock_threading_ns']:10.1f} ns"
          f"   (manygil is {r['lock_manygil_ns'] / r['lock_threading_ns']:.1f}x)")
    print(f"                        multiprocessing   {r['lock_multiprocessing_ns']:10.1f} ns"
          f"   (manygil is {r['lock_manygil_ns'] / r['lock_multiprocessing_ns']:.2f}x)")
    print(f"  Event.set → waiter running in another interpreter: {r['wakeup_us']:.1f} µs median")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), **r}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
