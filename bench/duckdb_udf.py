"""A CPU-heavy pure-Python UDF over 1e6 rows: DuckDB's native UDF, its arrow UDF, and
manygil's parallel UDF, in one run, with identical results.

    ./dev bench-duckdb [--rows N] [--repeats N]
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
from tasks import collatz_steps  # noqa: E402 - workers find it by module name


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
    query = "select sum({f}(i)), count(*) from range({n}) t(i)"
    times: dict[str, list[float]] = {"native_udf": [], "arrow_udf": [], "manygil_udf": []}
    answers = {}
    con.sql(query.format(f="manygil_udf", n=10_000)).fetchall()  # warm the workers
    for _ in range(args.repeats):
        for f in times:
            t = time.perf_counter()
            answers[f] = con.sql(query.format(f=f, n=args.rows)).fetchall()
            times[f].append(time.perf_counter() - t)
    handle.close()
    assert answers["native_udf"] == answers["arrow_udf"] == answers["manygil_udf"], answers
    med = {f: statistics.median(v) for f, v in times.items()}
    print(f"CPython {platform.python_version()}, duckdb {duckdb.__version__}, {args.rows} rows, "
          f"PRAGMA threads={args.threads}, medians of {args.repeats}")
    for f, t in med.items():
        print(f"  {f:12} {t:7.2f} s   manygil is {t / med['manygil_udf']:.2f}x faster")
    out = HERE / "results" / "duckdb.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "rows": args.rows, "seconds": med}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
