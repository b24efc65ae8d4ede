"""Run a small rule engine over records on every core, and compare with a serial run.

    python examples/rule_engine.py [--records N]
"""

from __future__ import annotations

import argparse
import random
import time

from manygil import InterpreterPoolExecutor

RULES = [
    ("large-foreign", lambda r: r["amount"] > 5_000 and r["country"] != r["home"]),
    ("night-burst", lambda r: r["hour"] < 5 and r["count_24h"] > 8),
    ("new-device", lambda r: r["device_age_days"] < 1 and r["amount"] > 500),
    ("round-amount", lambda r: r["amount"] % 1000 == 0),
]


def make_records(n: int, seed: int = 7) -> list[dict[str, int | str]]:
    rnd = random.Random(seed)
    countries = ["NL", "DE", "FR", "US", "BR"]
    return [
        {
            "id": i,
            "amount": rnd.choice([rnd.randrange(1, 9_000), 1000 * rnd.randrange(1, 9)]),
            "country": rnd.choice(countries),
            "home": rnd.choice(countries),
            "hour": rnd.randrange(24),
            "count_24h": rnd.randrange(15),
            "device_age_days": rnd.randrange(30),
        }
        for i in range(n)
    ]


def evaluate(records: list[dict[str, int | str]]) -> list[tuple[int, list[str]]]:
    """Per-chunk work: the names of the rules each record trips (pure Python)."""
    out = []
    for record in records:
        tripped = [name for name, rule in RULES if rule(record)]
        score = 0
        for _ in range(200):  # stands in for a heavier scoring model
            score = (score * 31 + int(record["amount"])) % 1_000_003
        if tripped or score % 97 == 0:
            out.append((int(record["id"]), tripped))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    records = make_records(args.records)
    chunks = [records[i : i + 2_000] for i in range(0, len(records), 2_000)]

    t = time.perf_counter()
    expected = [hit for c in chunks for hit in evaluate(c)]
    serial = time.perf_counter() - t

    with InterpreterPoolExecutor() as pool:
        pool.submit(len, "warm").result()
        t = time.perf_counter()
        got = [hit for part in pool.map(evaluate, chunks) for hit in part]
        parallel = time.perf_counter() - t
    assert got == expected
    print(f"{len(records)} records, {len(got)} flagged")
    print(f"serial {serial:.2f} s, interpreters {parallel:.2f} s: speed-up {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
