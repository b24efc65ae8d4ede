"""Real programs nobody here wrote, unmodified, on their own processes and under
``python -m manygil run``: wall time and the peak memory of the whole process tree.

    ./dev bench-programs            3 runs of each, 2 workers
    ./dev bench-programs --quick    1 run each, a smaller tree

Programs (their released versions, from the test extra):
- flake8 -j 2 on a copy of CPython's own Lib/ (its top-level modules);
- black --check --workers 2 on the same tree (mypyc-compiled black refuses an own-GIL
  interpreter, or crashes one on 3.13: ``manygil run`` sends it to processes, so this
  row measures what that costs);
- CPython's documentation example for ``ProcessPoolExecutor`` (is_prime), as printed
  there (tests/fixtures/docs_process_pool.py);
- CPython's documentation example for ``multiprocessing.Pool`` (f(x) = x*x), with
  enough items to measure.

Memory: the sum of the USS of the program's process and all its children, sampled
every 20 ms; the peak of that sum.  Results: bench/results/programs-X.Y.json.  The
machine is shared: compare only figures of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PRIMES = (ROOT / "tests" / "fixtures" / "docs_process_pool.py").read_text()  # as printed in CPython's docs

SQUARES = """\
from multiprocessing import Pool

def f(x):
    return x*x

if __name__ == '__main__':
    with Pool(2) as p:
        print(sum(p.map(f, range(200_000))))
"""


def tree(quick: bool) -> Path:
    """A copy of CPython's Lib/ top-level modules (a real tree, already on the machine)."""
    where = Path(tempfile.mkdtemp(prefix="manygil-bench-tree-"))
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.glob("*.py") if p.stat().st_size < 200_000)
    for path in files[: 40 if quick else None]:
        shutil.copy(path, where / path.name)
    return where


def programs(src: Path, scripts: Path) -> dict[str, list[str]]:
    return {
        "flake8 -j 2": ["-m", "flake8", "-j", "2", "--exit-zero", str(src)],
        "black --check --workers 2": ["-m", "black", "--check", "--workers", "2", "-q", str(src)],
        "docs: ProcessPoolExecutor primes": [str(scripts / "primes.py")],
        "docs: Pool.map squares": [str(scripts / "squares.py")],
    }


def _tree_uss() -> float:
    """The USS of this process's children, all of them, in MiB."""
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_full_info().uss
        except psutil.Error:
            pass
    return total / 2**20


def run_once(args: list[str], under_manygil: bool, cwd: Path) -> dict[str, float | str]:
    cmd = [sys.executable, *(["-m", "manygil", "run"] if under_manygil else []), *args]
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, _tree_uss())

    sampler = threading.Thread(target=sample, daemon=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    sampler.start()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode not in (0, 1):  # black --check exits 1 when a file would change
        return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"}
    return {"wall_s": wall, "peak_uss_mib": peak, "stdout": proc.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    version = "%d.%d" % sys.version_info[:2]
    out = args.out or HERE / "results" / f"programs-{version}.json"
    src = tree(args.quick)
    scripts = Path(tempfile.mkdtemp(prefix="manygil-bench-scripts-"))
    (scripts / "primes.py").write_text(textwrap.dedent(PRIMES))
    (scripts / "squares.py").write_text(textwrap.dedent(SQUARES))
    print(f"CPython {platform.python_version()}, {os.cpu_count()} cores, {repeats} run(s) each, "
          f"{len(list(src.glob('*.py')))} files in the tree")
    results: dict[str, dict[str, object]] = {}
    try:
        for name, cmd in programs(src, scripts).items():
            row: dict[str, object] = {}
            for side, under in (("processes", False), ("manygil", True)):
                runs = [run_once(cmd, under, scripts) for _ in range(repeats)]
                errors = [r["error"] for r in runs if "error" in r]
                if errors:
                    row[side] = {"error": errors[0]}
                    continue
                row[side] = {
                    "wall_s": statistics.median(float(r["wall_s"]) for r in runs),
                    "peak_uss_mib": statistics.median(float(r["peak_uss_mib"]) for r in runs),
                }
                row[f"{side}_stdout"] = runs[0]["stdout"]
            same = row.get("processes_stdout") == row.get("manygil_stdout")
            row["same_output"] = same
            row.pop("processes_stdout", None)
            row.pop("manygil_stdout", None)
            results[name] = row
            print(f"  {name:<34} done" + ("" if same else " (OUTPUT DIFFERS)"))
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(scripts, ignore_errors=True)
    report = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "repeats": repeats,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results,
    }
    print()
    print(table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def table(report: dict[str, object]) -> str:
    """Markdown: wall time and peak memory on processes and under manygil run, with the
    ratios (manygil's over the processes': below 1, manygil is faster or smaller)."""
    results: dict[str, dict[str, dict[str, float]]] = report["results"]  # type: ignore[assignment]
    lines = [
        "| program | wall, processes | wall, manygil run | ratio | peak USS, processes | peak USS, manygil run "
        "| ratio | same output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        p, m = row.get("processes", {}), row.get("manygil", {})
        if "wall_s" not in p or "wall_s" not in m:
            lines.append(f"| {name} | {p.get('error', '')} | {m.get('error', '')} | | | | | |")
            continue
        lines.append(
            f"| {name} | {p['wall_s']:.2f} s | {m['wall_s']:.2f} s | {m['wall_s'] / p['wall_s']:.2f}x "
            f"| {p['peak_uss_mib']:.0f} MiB | {m['peak_uss_mib']:.0f} MiB "
            f"| {m['peak_uss_mib'] / p['peak_uss_mib']:.2f}x | {'yes' if row.get('same_output') else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
