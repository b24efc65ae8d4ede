"""Write the benchmark figures that the docs quote, from bench/results/*.json.

    ./dev docs-figures            rewrite the figures in README.md and docs/*.md
    ./dev docs-figures --check    change nothing; exit 1 if a page differs from the results

A page quotes a figure only between two markers, on lines of their own or inline:

    <!-- figures:NAME -->generated text<!-- /figures -->

NAME is one of FIGURES below; the text between the markers is replaced by what that
function makes of the results files, and each piece names the command, the Python and
the date of the run it comes from.  So the pages cannot disagree with each other or with
the last run: after a benchmark, run this and commit the pages with the results.
tests/test_doc_figures.py fails when a page differs from what this writes, or quotes a
speed figure outside the markers.

A results file without a "date" (written before the benchmarks recorded it) is dated
by the day its file was committed (its "committed" field), and said so ("results committed ...").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
MARKED = re.compile(r"<!-- figures:([a-z0-9-]+) -->(.*?)<!-- /figures -->", re.S)

# The command that writes each results file.
COMMANDS = {
    "latest.json": "./dev bench",
    "py314.json": "MANYGIL_PYTHONS=3.14 ./dev bench --out bench/results/py314.json --chart bench/chart-314.png",
    "py314-stdlib.json": "MANYGIL_PYTHONS=3.14 ./dev bench --only manygil stdlib-interpreters --repeats 7 "
    "--out bench/results/py314-stdlib.json",
    "py315-stdlib.json": "MANYGIL_PYTHONS=3.15 ./dev bench --only manygil stdlib-interpreters --repeats 7 "
    "--out bench/results/py315-stdlib.json",
    "shared.json": "./dev bench-shared",
    "first_call-3.13.json": "./dev bench-first-call",
    "first_call-3.14.json": "./dev bench-first-call",
    "duckdb.json": "./dev bench-duckdb",
    "dask.json": "./dev bench-dask",
    "payloads-3.13.json": "./dev bench-payloads",
    "payloads-3.14.json": "MANYGIL_PYTHONS=3.14 ./dev bench-payloads",
    "programs-3.13.json": "./dev bench-programs",
    "programs-3.14.json": "MANYGIL_PYTHONS=3.14 ./dev bench-programs",
    **{f"mixed-3.{m}.json": "./dev bench-mixed --repeat 5" for m in (12, 13, 14, 15)},
}
# bench/run.py's metrics: key, label, unit.
METRICS = (
    ("speedup", "CPU speed-up over serial", "x"),
    ("latency_us", "submit→result latency", "µs/task"),
    ("map1_per_s", "map, chunksize 1", "tasks/s"),
    ("map100_per_s", "map, chunksize 100", "tasks/s"),
    ("cold_start_ms", "cold start to first result", "ms"),
    ("bytes_mb_s", "16 MiB bytes in and back", "MB/s"),
    ("uss_mib", "memory of the pool (USS)", "MiB"),
)
PROCESS_POOLS = ("process-fork", "process-forkserver", "process-spawn", "loky")


class Results(dict):  # type: ignore[type-arg]
    """One results file: its JSON, and where it came from (``.source``)."""

    name: str

    @property
    def date(self) -> str:
        if "date" in self:
            return str(self["date"])
        # Older runs recorded no date: the day their file was committed, written into it
        # (not read from git, which a test run in a chroot may not have).
        if "committed" in self:
            return f"results committed {self['committed']}"
        return "date not recorded"

    @property
    def source(self) -> str:
        """"`./dev bench`, CPython 3.13.0, 2026-11-27 02:15": what a quoted figure names."""
        return f"`{COMMANDS[self.name]}`, CPython {self['python']}, {self.date}"


def load(name: str) -> Results:
    r = Results(json.loads((RESULTS / name).read_text()))
    r.name = name
    return r


def num(value: float) -> str:
    """A figure as the tables print it: 66,586 / 39.9 / 1.96."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"


def ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def span(values: list[float], fmt: Callable[[float], str] = lambda v: f"{v:.0f}") -> str:
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


# ---------------------------------------------------------------------- the pieces


def bench_table(r: Results) -> str:
    """bench/run.py's table (as its --markdown prints it), and what failed or was skipped."""
    results = r["results"]
    measured = [n for n, row in results.items() if any(k in row for k, *_ in METRICS)]
    base = results["manygil"]
    lines = ["| metric | " + " | ".join(measured) + " |", "|---" * (len(measured) + 1) + "|"]
    for key, label, unit in METRICS:
        cells = []
        for name in measured:
            value = results[name].get(key)
            if value is None:
                cells.append("failed")
                continue
            text = num(value)
            if name != "manygil" and base.get(key):
                text += f" ({value / base[key]:.2f})"
            cells.append(text)
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    notes = []
    for name, row in results.items():
        if "skipped" in row:
            notes.append(f"{name}, {row['skipped'].split(':')[0]}")
        elif "errors" in row and name not in measured:
            why = next(iter(row["errors"].values())).split(": ", 1)[-1].split(":")[0]
            notes.append(f"{name}, which failed to start ({why.rsplit('.', 1)[-1]})")
    head = (
        f"CPython {r['python']}, {r['cores']} cores, {r['workers']} workers, medians of "
        f"{r['repeats']} runs (`{COMMANDS[r.name]}`, {r.date}; `bench/results/{r.name}`); in brackets, the ratio "
        "to manygil:"
    )
    tail = f"Cold start floor (one bare interpreter created and one call run in it) in the same run: {r['floor_ms']:.1f} ms."
    if notes:
        tail += " Not in the table: " + "; ".join(notes) + "."
    return f"{head}\n\n" + "\n".join(lines) + f"\n\n{tail}"


def bench_313() -> str:
    return bench_table(load("latest.json"))


def bench_314() -> str:
    return bench_table(load("py314.json"))


def _stdlib_row(r: Results) -> str:
    m, s = r["results"]["manygil"], r["results"]["stdlib-interpreters"]
    return (
        f"| {r['python']} | {m['latency_us'] / s['latency_us']:.2f}x | {m['map1_per_s'] / s['map1_per_s']:.1f}x "
        f"| {m['cold_start_ms'] / s['cold_start_ms']:.2f}x ({m['cold_start_ms']:.1f} ms against {s['cold_start_ms']:.1f}) "
        f"| {m['bytes_mb_s'] / s['bytes_mb_s']:.2f}x | {m['uss_mib'] / s['uss_mib']:.2f}x | {r.date} |"
    )


def vs_stdlib() -> str:
    """manygil over the standard library's InterpreterPoolExecutor (3.14+)."""
    full = load("py314.json")
    m, s, t = (full["results"][n] for n in ("manygil", "stdlib-interpreters", "threads"))
    alone = [load("py314-stdlib.json"), load("py315-stdlib.json")]
    return (
        f"Against the standard library's pool in the full 3.14 run above: "
        f"{m['latency_us'] / s['latency_us']:.2f}x its submit→result latency "
        f"({m['latency_us'] / t['latency_us']:.2f}x a thread pool's), "
        f"{m['map1_per_s'] / s['map1_per_s']:.1f}x its tasks/s at chunksize 1 and "
        f"{m['map100_per_s'] / s['map100_per_s']:.0f}x at chunksize 100, "
        f"{m['cold_start_ms'] / s['cold_start_ms']:.2f}x its cold start, "
        f"{m['bytes_mb_s'] / s['bytes_mb_s']:.2f}x its MB/s for 16 MiB of `bytes` in and back, "
        f"{m['uss_mib'] / s['uss_mib']:.2f}x its memory, and "
        f"{m['speedup'] / s['speedup']:.2f}x its speed-up. "
        "Runs of manygil and the standard library's pool alone, 7 repeats each "
        f"(`{COMMANDS['py314-stdlib.json']}`, and the same with 3.15):\n\n"
        "| CPython | latency | map, chunksize 1 | cold start | 16 MiB bytes | memory (USS) | run |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(_stdlib_row(r) for r in alone) + "\n\n"
        "The ratios are manygil's figure over the standard library pool's: lower is better "
        "for latency, cold start and memory, higher for tasks/s and MB/s."
    )


def bytes_vs_processes() -> str:
    r = load("latest.json")
    res = r["results"]
    return (
        f"a process pool is {span([res['manygil']['bytes_mb_s'] / res[p]['bytes_mb_s'] for p in PROCESS_POOLS])}x "
        f"slower ({r.source})"
    )


def bench_payloads() -> str:
    """bench/payloads.py's tables (as it prints them), on 3.13 and 3.14."""
    sys.path.insert(0, str(ROOT / "bench"))
    import payloads  # bench/payloads.py: its tables are the ones it prints

    parts = []
    for v in ("3.13", "3.14"):
        r = load(f"payloads-{v}.json")
        parts.append(
            f"CPython {r['python']}, {r['cores']} cores, {r['workers']} workers, medians of {r['repeats']} runs "
            f"({r.source}; `bench/results/payloads-{v}.json`); in brackets, manygil's advantage "
            "(the other's time over manygil's, manygil's rate over the other's: above 1, manygil is faster):"
            f"\n\n{payloads.table(r).strip()}"
        )
    return "\n\n".join(parts)


def bench_programs() -> str:
    """bench/programs.py's tables: real programs on their processes and under manygil run,
    on 3.13 (whose pools fork) and 3.14 (forkserver)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import programs  # bench/programs.py: its table is the one it prints

    parts = []
    for v in ("3.13", "3.14"):
        r = load(f"programs-{v}.json")
        parts.append(
            f"CPython {r['python']}, {r['cores']} cores, medians of {r['repeats']} runs ({r.source}; "
            f"`bench/results/programs-{v}.json`)"
            + ("; the ratios are the figure under `manygil run` over the figure on the program's own "
               "processes (below 1: faster, or smaller)" if not parts else "")
            + f":\n\n{programs.table(r)}"
        )
    return "\n\n".join(parts)


def bench_shared() -> str:
    r = load("shared.json")
    return (
        f"Shared memory and locks ({r.source}; `bench/results/shared.json`): a 1 GiB `SharedBuffer` "
        f"sent to a task and back took {r['shared_1GiB_us']:.1f} µs, against {r['shared_1MiB_us']:.1f} µs "
        "for 1 MiB (it crosses by id, whatever its size), "
        f"{r['bytes_16MiB_manygil_us'] / 1e3:.1f} ms for 16 MiB of `bytes` through the manygil pool and "
        f"{r['bytes_16MiB_forkserver_us'] / 1e3:.0f} ms through `ProcessPoolExecutor` (forkserver); "
        f"an uncontended `Lock` acquire+release took {r['lock_manygil_ns']:.0f} ns "
        f"(`threading.Lock` {r['lock_threading_ns']:.0f} ns, `multiprocessing.Lock` "
        f"{r['lock_multiprocessing_ns']:.0f} ns); `Event.set()` woke a waiter running in another "
        f"interpreter in {r['wakeup_us']:.1f} µs (median)."
    )


def bench_first_call() -> str:
    parts = []
    for v in ("3.13", "3.14"):
        r = load(f"first_call-{v}.json")
        m, fs, sp = (r["executors"][n] for n in ("manygil", "process-forkserver", "process-spawn"))
        if not parts:
            parts.append(
                f"on {r['python']} ({r.date}) the first `map` took {m['first_map_later_ms']:.1f} ms when the "
                "program had done 300 ms of its own work after creating the pool (the workers imported the "
                f"script meanwhile), and {m['first_map_at_once_ms']:.1f} ms right after creating it, against "
                f"{fs['first_map_at_once_ms']:.1f} ms for `ProcessPoolExecutor` with forkserver and "
                f"{sp['first_map_at_once_ms']:.1f} ms with spawn"
            )
        else:
            parts.append(
                f"on {r['python']} ({r.date}), {m['first_map_later_ms']:.1f} ms and "
                f"{m['first_map_at_once_ms']:.1f} ms against {fs['first_map_at_once_ms']:.1f} ms and "
                f"{sp['first_map_at_once_ms']:.1f} ms"
            )
    r = load("first_call-3.13.json")
    return (
        f"The first call of a script's function (`./dev bench-first-call`: a script whose imports took "
        f"{r['executors']['manygil']['script_import_ms']:.0f} ms, 2 workers, 20 calls of one of its "
        f"functions, medians of {r['repeat']} fresh processes; `bench/results/first_call-3.1[34].json`): "
        + "; ".join(parts) + "."
    )


def bench_mixed() -> str:
    """bench/mixed.py's results on every version: wall times, each process pool's over
    manygil's in brackets (above 1: manygil is faster)."""
    lines = [
        "| CPython | pool | manygil | default `ProcessPoolExecutor` | forkserver | spawn |",
        "|---|---|---|---|---|---|",
    ]
    dates = []
    for m in (12, 13, 14, 15):
        r = load(f"mixed-3.{m}.json")
        dates.append(r.date)
        for key, label in (("first_pool", "a program's first"), ("later_pool", "a later one")):
            row = r[key]
            mine = row["manygil (fallback=process)"]
            default = next(n for n in row if n.startswith("ProcessPool default"))
            method = default[default.index("(") + 1 : -1]
            cells = [f"{mine:.2f} s"] + [
                f"{row[n]:.2f} s ({row[n] / mine:.2f}x)" + (f", {method}" if n == default else "")
                for n in (default, "ProcessPool forkserver", "ProcessPool spawn")
            ]
            lines.append(f"| {r['python']} | {label} | " + " | ".join(cells) + " |")
    r = load("mixed-3.13.json")
    return (
        f"Half numpy, half pure Python (`{COMMANDS['mixed-3.13.json']}`: {r['tasks']} tasks, "
        f"{r['workers']} workers, medians of {r['repeats']}, {span(dates, str)}; "
        "`bench/results/mixed-3.1[2-5].json`), wall time from making the pool to the end of its "
        "`with` block; in brackets, the process pool's time over manygil's (above 1: manygil is faster):"
        "\n\n" + "\n".join(lines)
    )


def bench_duckdb() -> str:
    r = load("duckdb.json")
    t, g = r["seconds"]["table"], r["seconds"]["range"]
    return (
        f"DuckDB ({r.source}, duckdb {r['duckdb']}, {r['rows']:.0e} rows; "
        "`bench/results/duckdb.json`): a pure-Python UDF over a table took "
        f"{t['manygil_udf']:.2f} s with manygil, {t['native_udf']:.2f} s as DuckDB's native UDF "
        f"({t['native_udf'] / t['manygil_udf']:.2f}x) and {t['arrow_udf']:.2f} s as its arrow UDF "
        f"({t['arrow_udf'] / t['manygil_udf']:.2f}x); over `range()`, {g['manygil_udf']:.2f} s against "
        f"{g['native_udf']:.2f} s ({g['native_udf'] / g['manygil_udf']:.2f}x) and {g['arrow_udf']:.2f} s "
        f"({g['arrow_udf'] / g['manygil_udf']:.2f}x). Two equal tasks of the same work outside DuckDB "
        f"reach {r['ceiling']:.2f}x on this machine."
    ).replace("1e+06", "1e6")


def duckdb_table() -> str:
    r = load("duckdb.json")
    rows = []
    for source, label in (("table", "a table"), ("range", f"`range({r['rows']})`")):
        s = r["seconds"][source]
        m = s["manygil_udf"]
        rows.append(
            f"| {label} | {m:.2f} s | {s['native_udf']:.2f} s ({s['native_udf'] / m:.2f}x) "
            f"| {s['arrow_udf']:.2f} s ({s['arrow_udf'] / m:.2f}x) |"
        )
    sp = r["speedup_over_native"]
    return (
        f"Measured with {r.source} (duckdb {r['duckdb']}, {r['rows']:,} rows, `bench/results/duckdb.json`; "
        "DuckDB's own native and arrow UDFs of the same function in the same run):\n\n"
        "| rows from | manygil | DuckDB native UDF | DuckDB arrow UDF |\n|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        "The same run also measures the machine's ceiling for this work outside DuckDB, the rows "
        f"split in two equal tasks on two workers against one loop: {r['ceiling']:.2f}x (on this shared "
        "machine two busy cores each run slower than one alone). The parallel UDF reaches "
        f"{sp['table'] / r['ceiling']:.0%} of that ceiling from a table, {sp['range'] / r['ceiling']:.0%} "
        "from `range()`."
    )


def bench_dask() -> str:
    r = load("dask.json")
    d = r["1 worker x 2 threads, default executor"]
    i = r["1 worker x 2 threads, interpreters"]
    p = r["2 worker processes x 1 thread"]
    return (
        f"Dask (a `LocalCluster`, 16 tasks of `count_primes(30000)`, medians of 3; {r.source}; "
        f"`bench/results/dask.json`): one worker with 2 threads took {d['seconds']:.2f} s on its default "
        f"executor and {i['seconds']:.2f} s on the interpreters executor; 2 single-threaded worker processes "
        f"took {p['seconds']:.2f} s ({p['seconds'] / i['seconds']:.2f}x); the worker processes' USS was "
        f"{i['uss_mib']:.0f} MiB for the interpreters against {p['uss_mib']:.0f} MiB for the two processes."
    )


def guide_summary() -> str:
    """The guide's bullets: what the last ./dev bench says, against each alternative."""
    r, r14 = load("latest.json"), load("py314.json")
    res = r["results"]
    m, t = res["manygil"], res["threads"]
    procs = [res[p] for p in PROCESS_POOLS]
    s14 = r14["results"]["stdlib-interpreters"]
    m14 = r14["results"]["manygil"]
    per_worker = lambda row: row["uss_mib"] / r["workers"]
    return (
        f"From the last run ({r.source}; `bench/results/latest.json`, the table in the README), "
        f"and for the standard library's pool, the 3.14 run ({r14.source}):\n\n"
        f"- **CPU speed-up** on {r['cores']} cores: interpreters {m['speedup']:.2f}x, process pools "
        f"{span([p['speedup'] for p in procs], lambda v: f'{v:.2f}')}x, threads {t['speedup']:.2f}x.\n"
        f"- **Task round trip**: submit→result took {m['latency_us']:.1f} µs on an interpreter pool, "
        f"{ratio(m['latency_us'] / t['latency_us'])} a thread pool's {t['latency_us']:.1f} µs and "
        f"{span([m['latency_us'] / p['latency_us'] for p in procs], lambda v: f'{v:.2f}')}x a process pool's "
        f"({span([p['latency_us'] for p in procs])} µs: no pipe, no second process to wake); on 3.14, "
        f"{m14['latency_us'] / s14['latency_us']:.2f}x the standard library's interpreter pool. "
        f"`map` at chunksize 1 ran {m['map1_per_s'] / t['map1_per_s']:.2f}x a thread pool's tasks per second and "
        f"{span([m['map1_per_s'] / p['map1_per_s'] for p in procs], lambda v: f'{v:.1f}')}x a process pool's "
        f"({m14['map1_per_s'] / s14['map1_per_s']:.1f}x the standard library's interpreter pool on 3.14).\n"
        f"- **Cold start** to the first result: {m['cold_start_ms']:.1f} ms ({m14['cold_start_ms']:.1f} ms on "
        f"3.14), against {res['process-forkserver']['cold_start_ms']:.0f} ms for forkserver, "
        f"{res['process-spawn']['cold_start_ms']:.0f} ms for spawn, {res['loky']['cold_start_ms']:.0f} ms for "
        f"loky and {s14['cold_start_ms']:.1f} ms for the standard library's pool on 3.14 (fork took "
        f"{res['process-fork']['cold_start_ms']:.1f} ms, but forking a process that has threads is unsafe and "
        f"deprecated). Creating one bare interpreter and running one call in it took {r['floor_ms']:.1f} ms "
        "of that.\n"
        f"- **Memory**: {per_worker(m):.1f} MiB per worker, against "
        f"{span([per_worker(res[p]) for p in PROCESS_POOLS[1:]])} MiB per worker process (forkserver, spawn, "
        "loky); fork shares pages with the parent until they are written.\n"
        f"- **Big arguments**: a large `bytes` crosses with one copy each way (the other side reads "
        f"the sender's own object): 16 MiB in and back at {num(m['bytes_mb_s'])} MB/s, "
        f"{span([m['bytes_mb_s'] / p['bytes_mb_s'] for p in procs])}x a process pool's, and "
        f"{m14['bytes_mb_s'] / s14['bytes_mb_s']:.2f}x the standard library's pool on 3.14 (which also copies "
        "once); threads copy nothing. A `SharedBuffer` crosses in O(1): see `./dev bench-shared`."
    )


def pool_intro() -> str:
    r = load("latest.json")
    res = r["results"]
    m, t = res["manygil"], res["threads"]
    slow = [res[p] for p in ("process-forkserver", "process-spawn")]
    procs = [res[p] for p in PROCESS_POOLS]
    return (
        f"it started in {m['cold_start_ms']:.0f} ms against {span([p['cold_start_ms'] for p in slow])} ms for "
        f"forkserver and spawn; a task's round trip took "
        f"{span([m['latency_us'] / p['latency_us'] for p in procs], lambda v: f'{v:.2f}')}x a process pool's "
        f"and {m['latency_us'] / t['latency_us']:.2f}x a thread pool's; and a worker was "
        f"{m['uss_mib'] / r['workers']:.1f} MiB ({r.source})"
    )


def latency_manygil() -> str:
    r = load("latest.json")
    return f"{r['results']['manygil']['latency_us']:.1f} µs ({r.source})"


def shared_summary() -> str:
    r = load("shared.json")
    return (
        f"Measured by {r.source} (`bench/results/shared.json`): sending a 1 GiB `SharedBuffer` to a task "
        f"and back took {r['shared_1GiB_us']:.1f} µs, about the same as 1 MiB ({r['shared_1MiB_us']:.1f} µs, "
        "the pool's round trip), and "
        f"{r['bytes_16MiB_forkserver_us'] / r['shared_1GiB_us']:,.0f} times less than sending 16 MiB of bytes "
        "through `ProcessPoolExecutor` (forkserver); an uncontended `Lock` acquire+release took "
        f"{r['lock_manygil_ns']:.0f} ns (`multiprocessing.Lock` {r['lock_multiprocessing_ns']:.0f} ns, "
        f"`threading.Lock` {r['lock_threading_ns']:.0f} ns); `Event.set()` woke a waiter in another "
        f"interpreter in {r['wakeup_us']:.1f} µs (median)."
    )


FIGURES: dict[str, Callable[[], str]] = {
    "bench-313": bench_313,
    "bench-314": bench_314,
    "vs-stdlib": vs_stdlib,
    "bytes-vs-processes": bytes_vs_processes,
    "bench-shared": bench_shared,
    "bench-payloads": bench_payloads,
    "bench-programs": bench_programs,
    "bench-first-call": bench_first_call,
    "bench-mixed": bench_mixed,
    "bench-duckdb": bench_duckdb,
    "bench-dask": bench_dask,
    "guide-summary": guide_summary,
    "pool-intro": pool_intro,
    "latency-manygil": latency_manygil,
    "shared-summary": shared_summary,
    "duckdb-table": duckdb_table,
}


# ---------------------------------------------------------------------- the pages


def render(text: str, where: str = "page") -> str:
    """The page with the text between each pair of markers made again from the results.
    A piece that spans lines is written on lines of its own, with a blank line on each
    side, so that Markdown reads the table or paragraph inside it."""

    def fill(match: re.Match[str]) -> str:
        name, old = match.group(1), match.group(2)
        if name not in FIGURES:
            raise SystemExit(f"{where}: unknown figures marker {name!r}; known: {', '.join(FIGURES)}")
        new = FIGURES[name]()
        if "\n" in old or "\n" in new:
            new = f"\n\n{new}\n\n"
        return f"<!-- figures:{name} -->{new}<!-- /figures -->"

    return MARKED.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        old = page.read_text()
        new = render(old, str(page.relative_to(ROOT)))
        if new != old:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new)
    verb = "differ from bench/results" if args.check else "rewritten from bench/results"
    print(f"{len(stale)} page(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
