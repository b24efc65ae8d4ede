"""The first call of a script's function: what importing the script in each worker costs.

    ./dev bench-first-call               every version, 2 workers, 7 repeats
    MANYGIL_PYTHONS=3.14 ./dev bench-first-call --repeat 3

A generated script imports about 80 ms of standard-library modules at its top (as real
scripts import their libraries), creates a pool, and maps a trivial function of its own
over 20 items.  Each run is a fresh process; every worker must import the script to find
the function (spawn and forkserver do that too).  Measured, in one run, for manygil and
ProcessPoolExecutor with forkserver and spawn:

- ``first map, at once``: the map right after the pool is created;
- ``first map, later``: the map after the program spent 300 ms on its own work (here a
  sleep, as when it reads its input), during which manygil's workers import the script;
- ``warm map``: the same map again.

It prints medians and writes bench/results/first_call-3.X.json.  On 3.12 manygil's
workers import the script when a task first needs it (see limitations.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECUTORS = ("manygil", "process-forkserver", "process-spawn")

SCRIPT = textwrap.dedent("""
    import time
    T0 = time.perf_counter()
    import asyncio, argparse, csv, dataclasses, decimal, difflib, email.mime.multipart
    import http.client, inspect, json, logging, typing, unittest, xml.etree.ElementTree
    IMPORT_MS = (time.perf_counter() - T0) * 1e3

    def work(n):
        return n * n

    def make(name):
        if name == "manygil":
            from manygil import InterpreterPoolExecutor
            return InterpreterPoolExecutor(2)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        ctx = multiprocessing.get_context(name.removeprefix("process-"))
        return ProcessPoolExecutor(2, mp_context=ctx)

    if __name__ == "__main__":
        import sys
        name, later = sys.argv[1], sys.argv[2] == "later"
        with make(name) as pool:
            if later:
                time.sleep(0.3)  # the program's own work: reading its input, say
            t0 = time.perf_counter()
            assert list(pool.map(work, range(20))) == [n * n for n in range(20)]
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            list(pool.map(work, range(20)))
            warm = time.perf_counter() - t0
        print(json.dumps({"first_ms": first * 1e3, "warm_ms": warm * 1e3, "import_ms": IMPORT_MS}))
""")


def run_once(script: Path, name: str, when: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(script), name, when], capture_output=True, text=True, timeout=300, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} {when} failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    version = "%d.%d" % sys.version_info[:2]
    parser.add_argument("--out", default=str(HERE / "results" / f"first_call-{version}.json"))
    args = parser.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "user_script.py"
        script.write_text(SCRIPT)
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.repeat):  # interleaved, so that a noisy moment hits every column
            for name in EXECUTORS:
                for when in ("now", "later"):
                    runs.setdefault((name, when), []).append(run_once(script, name, when))
        for name in EXECUTORS:
            now, later = runs[(name, "now")], runs[(name, "later")]
            rows[name] = {
                "first_map_at_once_ms": statistics.median(r["first_ms"] for r in now),
                "first_map_later_ms": statistics.median(r["first_ms"] for r in later),
                "warm_map_ms": statistics.median(r["warm_ms"] for r in now + later),
                "script_import_ms": statistics.median(r["import_ms"] for r in now + later),
            }
    print(f"CPython {sys.version.split()[0]}, 2 workers, medians of {args.repeat} fresh processes")
    print(f"{'':22}{'first map, at once':>20}{'first map, later':>20}{'warm map':>12}")
    for name, row in rows.items():
        print(
            f"{name:22}{row['first_map_at_once_ms']:17.1f} ms{row['first_map_later_ms']:17.1f} ms"
            f"{row['warm_map_ms']:9.1f} ms"
        )
    print(f"(the script's imports take {rows['manygil']['script_import_ms']:.0f} ms in the main interpreter)")
    report = {"python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M"), "repeat": args.repeat, "executors": rows, "cpus": os.cpu_count()}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
