"""Ordinary data crossing to a worker and back: every executor in ONE run, each in its
own subprocess.

    ./dev bench-payloads                 all executors, 2 workers, 3 repeats
    ./dev bench-payloads --quick         fewer round trips, 1 repeat (a smoke run)

Payloads (bench/tasks.py): a list of 10,000 ints, a dict of 1,000 str keys to floats,
1,000 tuples (int, str, float), 200 records {"id", "tags": [3 str], "score"}; and two
controls: 1 MiB of bytes, and a 1 MiB shared buffer (manygil's SharedBuffer; a thread
pool passes its bytearray; the standard library's interpreter pool a memoryview, which
3.14 shares; processes have no shared object that a task can return as is: n/a).

Two measures per payload and executor, the median of the repeats:
- round trip: the median of 60 sequential ``echo(payload)`` (the task returns what it
  got) on a warm pool, in µs;
- map: ``map(echo, [payload] * 40)`` on 2 busy workers, in payloads per second.

The floor is what the payload costs to read and to build in C in one process, both
ways: ``marshal.dumps`` then ``marshal.loads``, twice (CPython's own C serializer for
exactly these types).

Where a round trip goes, for manygil and the process pools (the third table): the
round trip of ``echo(None)`` (the executor's fixed cost: a task there and a result
back, nothing to copy), and the executor's own encoding of the task and its result
done in one process, there and back (manygil: its copier, ``_transport.dumps`` and
``loads``; a process pool: ``pickle``); the rest is what neither explains (the wake-ups
and copies of a large message between processes).  With the fixed cost and the rest at
zero, manygil's round trip would be its encoding alone: "at best" is the process
pool's round trip over that.  Results: bench/results/payloads-X.Y.json; --chart draws them.
The machine is shared: compare only figures of one run.
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # the benchmark's driver: its executors and subprocesses
from tasks import echo, payload  # workers find them by module name

EXECUTORS = ("threads", "process-fork", "process-forkserver", "stdlib-interpreters", "manygil")
PAYLOADS = ("ints", "dict", "tuples", "records", "bytes", "shared")
ROUND_TRIPS = 60
MAPPED = 40


def value_for(name: str, executor: str) -> object:
    """The payload as this executor sends it; None: it has no such thing."""
    if name != "shared":
        return payload(name)
    if executor == "manygil":
        from manygil.shared import SharedBuffer

        return SharedBuffer.from_bytes(payload("bytes"))  # type: ignore[arg-type]
    if executor == "threads":
        return bytearray(payload("bytes"))  # type: ignore[arg-type]
    if executor == "stdlib-interpreters":
        return memoryview(bytearray(payload("bytes")))  # type: ignore[arg-type]
    return None


def check(sent: object, got: object) -> None:
    if isinstance(sent, (list, dict, bytes)):
        assert got == sent, "wrong result"
    else:  # a shared buffer: the same bytes
        assert bytes(memoryview(got)) == bytes(memoryview(sent)), "wrong result"  # type: ignore[arg-type]


def measure(executor: str, name: str, workers: int, quick: bool) -> dict[str, float]:
    """In a subprocess of its own: one payload on one executor."""
    value = value_for(name, executor)
    pool = run.executor_class(executor)(workers)
    try:
        # Warm: every worker has started, imported the tasks and sent this payload.
        for got in pool.map(echo, [value] * workers * 4):
            check(value, got)
        times = []
        for _ in range(ROUND_TRIPS // (3 if quick else 1)):
            t = time.perf_counter()
            got = pool.submit(echo, value).result()
            times.append(time.perf_counter() - t)
        check(value, got)
        t = time.perf_counter()
        n = 0
        for got in pool.map(echo, [value] * (MAPPED // (4 if quick else 1))):
            n += 1
        rate = n / (time.perf_counter() - t)
        check(value, got)
        fixed = []
        for _ in range(ROUND_TRIPS // (3 if quick else 1)):
            t = time.perf_counter()
            pool.submit(echo, None).result()
            fixed.append(time.perf_counter() - t)
        got = {"round_trip_us": statistics.median(times) * 1e6, "map_per_s": rate,
               "fixed_us": statistics.median(fixed) * 1e6}
        encode = encoding_us(executor, value) if name != "shared" else None
        if encode is not None:
            got["encode_us"] = encode
        return got
    finally:
        pool.shutdown(wait=True)


def encoding_us(executor: str, value: object) -> float | None:
    """The executor's own encoding of ``echo(value)`` and of its result, each dumped and
    loaded in this process (median of 60, µs); None for the pools without one of their
    own (threads) or whose encoding is not public (the standard library's)."""
    if executor == "manygil":
        from manygil import _transport

        def there_and_back() -> None:
            for obj in ((echo, (value,), {}), value):
                tag, data, pins = _transport.dumps(obj)
                _transport.loads(tag, data)
                assert not pins  # ordinary data holds no manygil object
    elif executor.startswith("process-"):
        import pickle

        def there_and_back() -> None:
            # what ProcessPoolExecutor sends: a _CallItem (id, fn, args, kwargs), and a
            # _ResultItem (id, exception, result) back
            pickle.loads(pickle.dumps((1, echo, (value,), {})))
            pickle.loads(pickle.dumps((1, None, value)))
    else:
        return None
    times = []
    for _ in range(ROUND_TRIPS):
        t = time.perf_counter()
        there_and_back()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def floor_us(name: str) -> float:
    """Read and build the payload in C, both ways (marshal), median of 60, in µs."""
    value = payload(name)
    times = []
    for _ in range(ROUND_TRIPS):
        t = time.perf_counter()
        marshal.loads(marshal.dumps(marshal.loads(marshal.dumps(value))))
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def run_child(args: list[str], timeout: float) -> dict[str, object]:
    return run.run_child(args, timeout, __file__)


def available(executor: str) -> str | None:
    if executor == "stdlib-interpreters" and sys.version_info < (3, 14):
        return f"not in the standard library of {platform.python_version()}"
    return None


def table(report: dict[str, object]) -> str:
    """Markdown: round trip (µs) and map (payloads/s) per payload; manygil's ratio to
    each alternative in brackets (above 1: manygil is faster)."""
    results: dict[str, dict[str, dict[str, float]]] = report["results"]  # type: ignore[assignment]
    floors: dict[str, float] = report["floor_us"]  # type: ignore[assignment]
    names = [e for e in EXECUTORS if e in results and "skipped" not in results[e]]
    lines = []
    for key, unit, lower in (("round_trip_us", "round trip, µs", True), ("map_per_s", "map, payloads/s", False)):
        lines.append(f"| {unit} | " + " | ".join(names) + (" | floor (marshal) |" if lower else " |"))
        lines.append("|---" * (len(names) + 1 + lower) + "|")
        for p in PAYLOADS:
            mine = results.get("manygil", {}).get(p, {}).get(key)
            cells = []
            for e in names:
                got = results[e].get(p, {})
                v = got.get(key)
                if v is None:
                    cells.append("n/a" if got.get("na") else "failed")
                    continue
                text = f"{v:,.0f}"
                if e != "manygil" and mine:
                    ratio = v / mine if lower else mine / v
                    text += f" ({ratio:.2f}x)"
                cells.append(text)
            row = f"| {p} | " + " | ".join(cells)
            if lower:
                f = floors.get(p)
                row += f" | {f:,.0f}" + (f" (manygil {mine / f:.2f}x)" if mine and f else "") if f else " | "
            lines.append(row + " |")
        lines.append("")
    if any("encode_us" in got for row in results.values() for got in row.values() if isinstance(got, dict)):
        lines.append(where_it_goes(results))  # results of a run that measured it
    return "\n".join(lines)


def where_it_goes(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: each round trip as fixed cost + encoding + the rest, for manygil and
    the process pools; "at best": the process pool's round trip over manygil's encoding."""
    names = [e for e in ("manygil", "process-fork", "process-forkserver") if "skipped" not in results.get(e, {"skipped": 1})]
    lines = ["| where a round trip goes, µs | " + " | ".join(names) + " | at best vs forkserver |",
             "|---" * (len(names) + 2) + "|"]
    for p in PAYLOADS[:-1]:
        cells = []
        for e in names:
            got = results[e].get(p, {})
            if "encode_us" not in got:
                cells.append("n/a")
                continue
            rest = got["round_trip_us"] - got["fixed_us"] - got["encode_us"]
            sign = "+" if rest >= 0 else "−"  # below 0: the parts' medians, each of its own runs
            cells.append(
                f"{got['round_trip_us']:,.0f} = {got['fixed_us']:,.0f} + {got['encode_us']:,.0f} {sign} {abs(rest):,.0f}"
            )
        mine = results.get("manygil", {}).get(p, {}).get("encode_us")
        theirs = results.get("process-forkserver", {}).get(p, {}).get("round_trip_us")
        best = f"{theirs / mine:.2f}x" if mine and theirs else "n/a"
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {best} |")
    lines.append("")
    lines.append(
        "(round trip = fixed + encoding + the rest; fixed: echo(None); encoding: dumped and loaded both ways in "
        "one process; each part is a median of its own runs, so the rest may come out below 0)"
    )
    return "\n".join(lines)


def draw_chart(report: dict[str, object], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results: dict[str, dict[str, dict[str, float]]] = report["results"]  # type: ignore[assignment]
    names = [e for e in EXECUTORS if e in results and "skipped" not in results[e]]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(names)
    for i, e in enumerate(names):
        ys = [results[e].get(p, {}).get("round_trip_us", 0) for p in PAYLOADS]
        ax.bar([x + i * width for x in range(len(PAYLOADS))], ys, width, label=e)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(PAYLOADS))], list(PAYLOADS))
    ax.set_ylabel("round trip, µs (lower is better)")
    ax.set_yscale("log")
    ax.set_title(f"A payload there and back, CPython {report['python']}, {report['cores']} cores ({report['date']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--chart", type=Path)
    parser.add_argument("--markdown", type=Path, help="print the tables of a results file, and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown:
        print(table(json.loads(args.markdown.read_text())))
        return
    if args.child:
        executor, name = args.child.split(":")
        print(json.dumps(measure(executor, name, args.workers, args.quick)))
        return
    if args.floor:
        print(json.dumps({"floor_us": floor_us(args.floor)}))
        return

    version = "%d.%d" % sys.version_info[:2]
    out = args.out or HERE / "results" / f"payloads-{version}.json"
    chart = args.chart or HERE / f"payloads-{version}.png"
    repeats = 1 if args.quick else args.repeats
    print(f"CPython {platform.python_version()}, {os.cpu_count()} cores, {args.workers} workers, {repeats} repeat(s)")
    results: dict[str, dict[str, object]] = {}
    for executor in EXECUTORS:
        reason = available(executor)
        if reason:
            results[executor] = {"skipped": reason}
            print(f"  {executor:<20} skipped: {reason}")
            continue
        row: dict[str, object] = {}
        for name in PAYLOADS:
            if name == "shared" and value_for(name, executor) is None:
                row[name] = {"na": True}
                continue
            runs = []
            for _ in range(repeats):
                child = ["--child", f"{executor}:{name}", "--workers", str(args.workers)] + (["--quick"] if args.quick else [])
                got = run_child(child, args.timeout)
                if "error" in got:
                    row[name] = {"error": got["error"]}
                    break
                runs.append(got)
            else:
                row[name] = {k: statistics.median(float(r[k]) for r in runs) for k in runs[0]}  # type: ignore[arg-type]
        results[executor] = row
        print(f"  {executor:<20} done")
    floors = {}
    for name in PAYLOADS[:-1]:
        got = run_child(["--floor", name], 60)
        if "floor_us" in got:
            floors[name] = float(got["floor_us"])  # type: ignore[arg-type]
    report = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "workers": args.workers,
        "repeats": repeats,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "floor_us": floors,
        "results": results,
    }
    print()
    print(table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    if draw_chart(report, chart):
        print(f"wrote {chart}")


if __name__ == "__main__":
    main()
