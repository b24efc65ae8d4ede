"""A CPU-heavy pure-Python UDF over 1e6 rows: DuckDB's native UDF, its arrow UDF, and
manygil's parallel UDF, in one run, with identical results.

    ./dev bench-duckdb [--rows N] [--repeats N]

Also measured in the same run, outside DuckDB: the same rows' work in one loop in the
main interpreter, and split in as many equal shares as workers, one task each on a
manygil pool.  Their ratio is what this machine's cores give on this work when nothing
else runs (the ceiling for any parallel UDF here: on a shared or hyperthreaded machine,
two cores busy at once each run slower than one alone).
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
from tasks import collatz_steps, collatz_sum  # workers find it by module name


def main() -> None:
    import duckdb
    import pyarrow as pa

    from manygil.duckdb import create_parallel_function

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"PRAGMA threads={args.threads}")

    def arrow_udf(arr):  # type: ignore[no-untyped-def] - duckdb evaluates annotations
        return pa.array([collatz_steps(v) for v in arr.to_pylist()], type=pa.int64())

    con.create_function("native_udf", collatz_steps, ["BIGINT"], "BIGINT")
    con.create_function("arrow_udf", arrow_udf, ["BIGINT"], "BIGINT", type="arrow")
    handle = create_parallel_function(con, "manygil_udf", collatz_steps, ["BIGINT"], "BIGINT", workers=args.threads)
    # Two sources: a table, scanned by DuckDB's threads in parallel (each calls the UDF
    # on its own chunks), and range(), which one thread produces and feeds to the UDF
    # chunk after chunk: then the pool waits while DuckDB and the main interpreter work.
    con.execute(f"create table rows_table as select i from range({args.rows}) t(i)")
    sources = {"table": "rows_table", "range": f"range({args.rows}) t(i)"}
    query = "select sum({f}(i)), count(*) from {source}"
    udfs = ("native_udf", "arrow_udf", "manygil_udf")
    times: dict[tuple[str, str], list[float]] = {(s, f): [] for s in sources for f in udfs}
    answers = {}
    con.sql("select sum(manygil_udf(i)) from range(10000) t(i)").fetchall()  # warm the workers
    for _ in range(args.repeats):
        for source, f in times:
            t = time.perf_counter()
            answers[source, f] = con.sql(query.format(f=f, source=sources[source])).fetchall()
            times[source, f].append(time.perf_counter() - t)
    pool = handle.pool
    shares = [(k, args.rows, args.threads) for k in range(args.threads)]
    loop: list[float] = []
    split: list[float] = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        alone = collatz_sum(0, args.rows, 1)
        loop.append(time.perf_counter() - t)
        t = time.perf_counter()
        together = sum(pool.map(collatz_sum, *zip(*shares)))
        split.append(time.perf_counter() - t)
        assert alone == together, (alone, together)
    handle.close()
    assert len({tuple(a) for a in answers.values()}) == 1 and alone == answers["table", "native_udf"][0][0], answers
    med = {key: statistics.median(v) for key, v in times.items()}
    ceiling = statistics.median(loop) / statistics.median(split)
    print(f"CPython {platform.python_version()}, duckdb {duckdb.__version__}, {args.rows} rows, "
          f"PRAGMA threads={args.threads}, medians of {args.repeats}")
    speedups = {}
    for source in sources:
        print(f"from {sources[source]}:")
        for f in udfs:
            t = med[source, f]
            print(f"  {f:12} {t:7.2f} s   manygil is {t / med[source, 'manygil_udf']:.2f}x faster")
        speedups[source] = med[source, "native_udf"] / med[source, "manygil_udf"]
    print(f"the same work outside DuckDB: one loop {statistics.median(loop):.2f} s, {args.threads} equal "
          f"tasks {statistics.median(split):.2f} s: this machine's ceiling is {ceiling:.2f}x; the parallel "
          f"UDF reaches {speedups['table'] / ceiling:.0%} of it from a table, "
          f"{speedups['range'] / ceiling:.0%} from range()")
    out = HERE / "results" / "duckdb.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "duckdb": duckdb.__version__,
        "rows": args.rows,
        "seconds": {source: {f: med[source, f] for f in udfs} for source in sources},
        "speedup_over_native": speedups,
        "ceiling": ceiling,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
