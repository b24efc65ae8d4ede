"""The process side before and after a change, in one run: tasks/s of 2,000 small tasks
routed to process workers (``pool.route``) and the latency of one, on 2 workers, each
sample a fresh process, the two trees taking turns (see ``ab.py`` for the checkout).

    .venv/3.13/bin/python bench/ab_process.py --base 2c8bd38 [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from ab import checkout

CHILD = r'''
import json, sys, time
sys.path.insert(0, %(tests)r)
import helpers
from manygil import InterpreterPoolExecutor

def main():
    with InterpreterPoolExecutor(2) as pool:
        pool.route(helpers.add, "process")
        assert pool.submit(helpers.add, 1, 2).result(timeout=120) == 3  # processes up
        t = time.perf_counter()
        fs = [pool.submit(helpers.add, i, 1) for i in range(2000)]
        assert [f.result(timeout=120) for f in fs] == [i + 1 for i in range(2000)]
        per_s = 2000 / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(200):
            pool.submit(helpers.add, i, 1).result(timeout=60)
        lat = (time.perf_counter() - t) / 200 * 1e6
    print(json.dumps({"process_tasks_per_s": per_s, "process_latency_us": lat}))

if __name__ == "__main__":
    main()
'''


def sample(tree: Path) -> dict[str, float]:
    script = ROOT / ".venv" / "ab_process_child.py"
    script.write_text(CHILD % {"tests": str(ROOT / "tests")})
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    trees = {"before": checkout(args.base), "after": ROOT}
    values: dict[str, dict[str, list[float]]] = {s: {} for s in trees}
    for turn in range(args.repeats):
        order = list(trees.items()) if turn % 2 == 0 else list(reversed(trees.items()))
        for side, tree in order:
            for k, v in sample(tree).items():
                values[side].setdefault(k, []).append(v)
    print(f"CPython {sys.version.split()[0]}, base {args.base}, {args.repeats} samples each (medians)")
    for k in values["after"]:
        b, a = statistics.median(values["before"][k]), statistics.median(values["after"][k])
        print(f"  {k:22} before {b:10.1f}  after {a:10.1f}  after/before {a / b:.2f}")


if __name__ == "__main__":
    main()
