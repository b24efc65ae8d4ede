"""manygil's benchmark: every executor measured in ONE run, each in its own subprocess.

    ./dev bench                      all executors, 2 workers, 3 repeats
    ./dev bench --quick              fewer tasks and repeats (a smoke run)
    ./dev bench --only manygil threads

Executors: manygil's InterpreterPoolExecutor, ThreadPoolExecutor, ProcessPoolExecutor
with fork, forkserver and spawn, loky, the interpreters-pep-734 package's pool and,
on 3.14+, the standard library's InterpreterPoolExecutor.

Metrics (median of the repeats): CPU speed-up over serial (8 pure-Python tasks),
submit-to-result latency, map throughput at chunksize 1 and 100, cold start to the
first result (3 times the repeats, against a bare interpreter's start measured at the
same moments), 16 MiB of bytes in and back (after two warm-up transfers per worker, the
median of 7), and the memory (USS) of the pool.  It prints
a table with ratios against manygil, writes bench/results/latest.json and draws
bench/chart.png.  The machine is shared: compare only figures of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECUTORS = (
    "manygil",
    "threads",
    "process-fork",
    "process-forkserver",
    "process-spawn",
    "loky",
    "pep734-package",
    "stdlib-interpreters",
)
METRICS = (
    ("speedup", "CPU speed-up over serial", "x", True),
    ("latency_us", "submit→result latency", "µs/task", False),
    ("map1_per_s", "map, chunksize 1", "tasks/s", True),
    ("map100_per_s", "map, chunksize 100", "tasks/s", True),
    ("cold_start_ms", "cold start to first result", "ms", False),
    ("bytes_mb_s", "16 MiB bytes in and back", "MB/s", True),
    ("uss_mib", "memory of the pool (USS)", "MiB", False),
)
# Cold start and its floor take this many times the repeats: a fresh process each, the
# cheapest metric, and its ratio to the floor the noisiest on a shared machine.  The
# floor is measured just before each of manygil's cold starts.
COLD_SAMPLES = 3


# ---------------------------------------------------------------------- the work

sys.path.insert(0, str(HERE))
from tasks import count_primes  # workers find it by module name


def executor_class(name: str):  # a factory: workers -> Executor
    """Import what the executor needs (outside the timed part) and return a factory."""
    if name == "manygil":
        from manygil import InterpreterPoolExecutor

        return InterpreterPoolExecutor
    if name == "threads":
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor
    if name.startswith("process-"):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context(name.split("-", 1)[1])
        return lambda workers: ProcessPoolExecutor(workers, mp_context=context)
    if name == "loky":
        from loky import ProcessPoolExecutor as LokyPool

        return LokyPool
    if name == "pep734-package":
        from interpreters_backport.concurrent.futures import InterpreterPoolExecutor as Pep734Pool

        return Pep734Pool
    if name == "stdlib-interpreters":
        from concurrent.futures import InterpreterPoolExecutor as StdlibPool  # type: ignore[attr-defined]

        return StdlibPool
    raise ValueError(f"unknown executor {name!r}")


def available(name: str) -> str | None:
    """None if the executor can run here, else why not."""
    try:
        if name == "loky":
            import loky  # noqa: F401
        elif name == "pep734-package":
            import interpreters_backport  # noqa: F401
        elif name == "stdlib-interpreters":
            from concurrent.futures import InterpreterPoolExecutor  # type: ignore[attr-defined]  # noqa: F401
    except ImportError as exc:
        return f"not available on {platform.python_version()}: {exc}"
    return None


def _uss_mib(pids: list[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().uss
        except psutil.Error:
            pass
    return total / 2**20


def _all_pids() -> list[int]:
    import psutil

    me = psutil.Process()
    return [me.pid] + [c.pid for c in me.children(recursive=True)]


def measure(name: str, metric: str, workers: int, quick: bool) -> float:
    """Runs in a subprocess of its own: one metric of one executor."""
    factory = executor_class(name)
    baseline = _uss_mib(_all_pids()) if metric == "uss_mib" else 0.0
    t0 = time.perf_counter()
    pool = factory(workers)
    pool.submit(abs, -1).result()
    cold = (time.perf_counter() - t0) * 1e3
    try:
        if metric == "cold_start_ms":
            return cold
        # Warm every worker: enough concurrent work that each one starts and has
        # imported this script (where the task functions live).  The pep734 package's
        # pool hangs on any function that is not a builtin (0.5.0 on 3.13): it gets
        # builtins wherever the metric allows.
        if name == "pep734-package":
            list(pool.map(abs, range(workers * 4)))
        else:
            list(pool.map(count_primes, [3000] * workers * 4))
        if metric == "uss_mib":
            return _uss_mib(_all_pids()) - baseline
        if metric == "speedup":
            # Best of 3 for both sides, interleaved: the machine is shared and noisy.
            tasks = [20_000 if quick else 40_000] * 8
            serial = parallel = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                expected = [count_primes(n) for n in tasks]
                serial = min(serial, time.perf_counter() - t)
                t = time.perf_counter()
                got = list(pool.map(count_primes, tasks))
                parallel = min(parallel, time.perf_counter() - t)
                assert got == expected, "wrong results"
            return serial / parallel
        if metric == "latency_us":
            n = 300 if quick else 2000
            for _ in range(50):
                pool.submit(abs, 1).result()
            t = time.perf_counter()
            for i in range(n):
                pool.submit(abs, i).result()
            return (time.perf_counter() - t) / n * 1e6
        if metric in ("map1_per_s", "map100_per_s"):
            chunksize = 1 if metric == "map1_per_s" else 100
            n = (2000 if quick else 10_000) * (10 if chunksize > 1 else 1)
            t = time.perf_counter()
            assert sum(pool.map(abs, range(n), chunksize=chunksize)) == sum(range(n))
            return n / (time.perf_counter() - t)
        if metric == "bytes_mb_s":
            blob = os.urandom(16 * 2**20)
            # Transfers on every worker first (two per worker, at once): each worker's
            # first 16 MiB allocations fault their pages in, which costs more than the
            # copies on this VM; then the median of 7, what repeated transfers see.
            assert list(pool.map(bytes, [blob] * 2 * workers)) == [blob] * 2 * workers  # bytes(b) is b
            times = []
            for _ in range(7):
                t = time.perf_counter()
                back = pool.submit(bytes, blob).result()
                times.append(time.perf_counter() - t)
            assert back == blob
            return 2 * len(blob) / 1e6 / statistics.median(times)
        raise ValueError(f"unknown metric {metric!r}")
    finally:
        pool.shutdown(wait=True)


def floor_ms() -> float:
    """The floor for cold start: one bare interpreter created and one call run in it."""
    if sys.version_info >= (3, 13):
        import _interpreters as low

        t = time.perf_counter()
        interp = low.create()
        low.exec(interp, "pass")
        elapsed = time.perf_counter() - t
        low.destroy(interp)
    else:
        import _xxsubinterpreters as low  # type: ignore[no-redef]

        t = time.perf_counter()
        interp = low.create()
        low.run_string(interp, "pass")
        elapsed = time.perf_counter() - t
        low.destroy(interp)
    return elapsed * 1e3


# ---------------------------------------------------------------------- the driver


def run_child(args: list[str], timeout: float, script: str = __file__) -> dict[str, object]:
    """Run ``script`` (this one) with ``args`` in a subprocess: the JSON of its last line."""
    cmd = [sys.executable, str(Path(script).resolve()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def compile_bytecode() -> None:
    """Write the bytecode caches of manygil and of the tasks, as ``pip install`` does.
    Without them (an editable install run with PYTHONDONTWRITEBYTECODE=1, as on some
    machines) every worker compiles manygil's modules again: about 6 ms more per start,
    which no user with an installed manygil pays.  The other pools' modules are in the
    standard library or site-packages, compiled already."""
    import compileall

    import manygil

    for folder in (Path(manygil.__file__).parent, HERE):
        compileall.compile_dir(folder, quiet=1, maxlevels=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer tasks and 1 repeat (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=EXECUTORS, help="measure only these executors")
    parser.add_argument("--timeout", type=float, default=90, help="seconds for one metric of one executor")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--chart", type=Path, default=HERE / "chart.png")
    parser.add_argument("--markdown", type=Path, help="print the table of a results file as markdown, and stop")
    parser.add_argument("--redraw", type=Path, help="draw the chart (--chart) of a results file, and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return
    if args.redraw:
        if draw_chart(json.loads(args.redraw.read_text()), args.chart):
            print(f"wrote {args.chart}")
        return
    if args.child:
        name, metric = args.child.split(":")
        print(json.dumps({metric: measure(name, metric, args.workers, args.quick)}))
        return
    if args.floor:
        print(json.dumps({"floor_ms": floor_ms()}))
        return

    repeats = 1 if args.quick else args.repeats
    names = args.only or list(EXECUTORS)
    compile_bytecode()
    print(f"CPython {platform.python_version()}, {os.cpu_count()} cores, {args.workers} workers, {repeats} repeat(s)")
    results: dict[str, dict[str, object]] = {}
    floors: list[dict[str, object]] = []
    for name in names:
        reason = available(name)
        if reason:
            results[name] = {"skipped": reason}
            print(f"  {name:<20} skipped: {reason}")
            continue
        row: dict[str, object] = {}
        for key, *_ in METRICS:
            values, errors = [], []
            cold = key == "cold_start_ms"
            for _ in range(repeats * COLD_SAMPLES if cold else repeats):
                if cold and name == "manygil":
                    floors.append(run_child(["--floor"], 60))  # the same moments as manygil's
                child = ["--child", f"{name}:{key}", "--workers", str(args.workers)] + (["--quick"] if args.quick else [])
                out = run_child(child, args.timeout)
                if "error" in out:
                    errors.append(str(out["error"]))
                    if "timed out" in errors[-1]:
                        break  # do not spend the time limit again on a hang
                else:
                    values.append(float(out[key]))  # type: ignore[arg-type]
            if values:
                row[key] = statistics.median(values)
            else:
                row.setdefault("errors", {})[key] = errors[0]  # type: ignore[index]
        results[name] = row
        print(f"  {name:<20} done" + (f" (failed: {', '.join(row['errors'])})" if "errors" in row else ""))  # type: ignore[arg-type]
    if not floors:
        floors = [run_child(["--floor"], 60) for _ in range(repeats * COLD_SAMPLES)]
    floor = statistics.median(float(f["floor_ms"]) for f in floors if "floor_ms" in f)  # type: ignore[arg-type]

    report = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "workers": args.workers,
        "repeats": repeats,
        "cold_repeats": repeats * COLD_SAMPLES,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "floor_ms": floor,
        "results": results,
    }
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    if draw_chart(report, args.chart):
        print(f"wrote {args.chart}")
        docs = HERE.parent / "docs"
        if docs.is_dir() and args.chart == HERE / "chart.png":
            import shutil

            shutil.copy(args.chart, docs / "chart.png")  # the guide page shows it
            print(f"copied it to {docs / 'chart.png'}")


def markdown_table(report: dict[str, object]) -> str:
    """The README's table: one column per executor, (ratio to manygil) in brackets."""
    results: dict[str, dict[str, float]] = report["results"]  # type: ignore[assignment]
    measured = [n for n, r in results.items() if any(k in r for k, *_ in METRICS)]
    base = results.get("manygil", {})
    lines = ["| metric | " + " | ".join(measured) + " |", "|---" * (len(measured) + 1) + "|"]
    for key, label, unit, _ in METRICS:
        cells = []
        for name in measured:
            value = results[name].get(key)
            if value is None:
                cells.append("—")
                continue
            text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
            if name != "manygil" and base.get(key):
                text += f" ({value / base[key]:.2f})"
            cells.append(text)
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_table(report: dict[str, object]) -> None:
    results: dict[str, dict[str, float]] = report["results"]  # type: ignore[assignment]
    measured = [n for n, r in results.items() if any(k in r for k, *_ in METRICS)]
    base = results.get("manygil", {})
    cold = report.get("cold_repeats", report["repeats"])
    print(f"\nmedians of {report['repeats']} run(s), cold start of {cold}; (ratio) = this executor / manygil")
    head = f"{'metric':<30}" + "".join(f"{n:>22}" for n in measured)
    print(head)
    print("-" * len(head))
    for key, label, unit, _ in METRICS:
        row = f"{label + ' (' + unit + ')':<30}"
        for name in measured:
            value = results[name].get(key)
            if value is None:
                row += f"{'failed':>22}"
                continue
            ratio = f" ({value / base[key]:.2f})" if key in base and base[key] and name != "manygil" else ""
            row += f"{value:>14.1f}{ratio:>8}" if abs(value) < 1000 else f"{value:>14.0f}{ratio:>8}"
        print(row)
    if "cold_start_ms" in base:
        print(
            f"\ncold start floor (one bare interpreter + one call): {report['floor_ms']:.1f} ms; "
            f"manygil's cold start is {base['cold_start_ms'] / report['floor_ms']:.2f}x the floor"
        )
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name}: skipped: {r['skipped']}")
        for key, why in r.get("errors", {}).items():  # type: ignore[union-attr]
            print(f"{name}: {key} failed: {why}")


def draw_chart(report: dict[str, object], path: Path) -> bool:
    """One panel per metric, two columns, sized to be read at the docs' width (~700 px):
    log scales where values span orders of magnitude, each bar labelled with its value,
    and a pool that measured no memory of its own (fork shares pages) drawn at 0."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, FuncFormatter
    except ImportError:
        print("matplotlib is not installed: no chart (pip install 'manygil[bench]')")
        return False
    results: dict[str, dict[str, float]] = report["results"]  # type: ignore[assignment]
    names = [n for n, r in results.items() if any(k in r for k, *_ in METRICS)]
    rows = (len(METRICS) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(9, 2.3 * rows + 0.8))
    colours = ["#d62728" if n == "manygil" else "#7f7f7f" for n in names]

    def compact(value: float, _pos: object = None) -> str:
        for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if value >= size:
                return f"{value / size:.3g}{suffix}"
        return f"{value:.3g}"

    for ax, (key, label, unit, higher) in zip(axes.flat, METRICS):
        values = [max(0.0, float(results[n].get(key, 0.0))) for n in names]
        ax.barh(names, values, color=colours)
        ax.set_title(f"{label} ({unit}, {'higher' if higher else 'lower'} is better)", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.invert_yaxis()
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 30:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(numticks=4))
            ax.xaxis.set_minor_locator(LogLocator(subs=(), numticks=4))
            ax.set_xlim(min(positive) / 2, max(positive) * 6)
        else:
            ax.set_xlim(0, max(values or [1]) * 1.35 or 1)
        ax.xaxis.set_major_formatter(FuncFormatter(compact))
        for y, (name, value) in enumerate(zip(names, values)):
            raw = results[name].get(key)
            text = "n/a" if raw is None else ("~0 (shared)" if float(raw) <= 0 and key.endswith("mib") else compact(float(raw)))
            ax.text(value if value > 0 else ax.get_xlim()[0], y, " " + text, va="center", fontsize=8)
    for ax in list(axes.flat)[len(METRICS):]:
        ax.axis("off")
    fig.suptitle(
        f"manygil vs the alternatives: CPython {report['python']}, {report['cores']} cores, "
        f"{report['workers']} workers, medians of {report['repeats']} ({report['date']}, ./dev bench)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


if __name__ == "__main__":
    main()
