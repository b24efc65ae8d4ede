"""The pool before and after a change, in one run: bench/run.py's per-task metrics for
manygil, measured alternately in a checkout of an earlier commit and in this tree.

    .venv/3.13/bin/python bench/ab.py --base 23da131 [--repeats 7]
    .venv/3.14/host/python bench/ab.py --base 23da131

The earlier commit is checked out (git worktree) under .venv/ab/<base>, with this
tree's built native module copied in (so a change of the C sources is not compared:
rebuild there by hand for that).  Each metric runs in a fresh process per sample, the
two trees taking turns in alternating order; it prints medians and after/before ratios
(latency and cold start: below 1 is better; tasks/s: above 1 is better).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("latency_us", "map1_per_s", "map100_per_s", "cold_start_ms")


def checkout(base: str) -> Path:
    """A worktree of ``base`` under .venv/ab/, with this tree's native modules in it."""
    tree = ROOT / ".venv" / "ab" / base
    if not tree.exists():  # (git is not in the 3.14/3.15 chroot: run it on the host first)
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), base], cwd=ROOT, check=True)
    for native in (ROOT / "src" / "manygil").glob("_native.*"):
        shutil.copy2(native, tree / "src" / "manygil" / native.name)
    # Both trees load from bytecode: a fresh checkout run with PYTHONDONTWRITEBYTECODE
    # compiled every module in every worker, which doubled its cold start.
    for src in (tree / "src", ROOT / "src"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, capture_output=True)
    return tree


def sample(tree: Path, metric: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    proc = subprocess.run(
        [sys.executable, str(tree / "bench" / "run.py"), "--child", f"manygil:{metric}", "--workers", "2", "--quick"],
        capture_output=True, text=True, env=env, cwd=tree, timeout=300, check=True,
    )
    return float(json.loads(proc.stdout.strip().splitlines()[-1])[metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    trees = {"before": checkout(args.base), "after": ROOT}
    values: dict[str, dict[str, list[float]]] = {side: {m: [] for m in METRICS} for side in trees}
    for turn in range(args.repeats):
        order = list(trees.items()) if turn % 2 == 0 else list(reversed(trees.items()))
        for metric in METRICS:
            for side, tree in order:
                values[side][metric].append(sample(tree, metric))
    print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} cores, {args.repeats} samples each, "
          f"{args.base} (before) against this tree (after), alternating")
    for metric in METRICS:
        before, after = (statistics.median(values[side][metric]) for side in ("before", "after"))
        print(f"  {metric:15} before {before:12.1f}   after {after:12.1f}   after/before {after / before:5.2f}")


if __name__ == "__main__":
    main()
