"""Parse web-server log lines on every core, and compare with a serial run.

    python examples/log_parser.py [--lines N]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter

from manygil import InterpreterPoolExecutor

LINE = re.compile(r'(\S+) \S+ \S+ \[([^\]]+)\] "(\w+) (\S+) [^"]*" (\d{3}) (\d+)')


def make_lines(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    paths = ["/", "/login", "/api/items", "/api/items/42", "/static/app.js", "/search?q=x"]
    return [
        f'10.0.{rnd.randrange(256)}.{rnd.randrange(256)} - - [25/Nov/2026:10:{i % 60:02d}:00 +0000] '
        f'"{rnd.choice(["GET", "POST"])} {rnd.choice(paths)} HTTP/1.1" {rnd.choice([200, 200, 200, 404, 500])} '
        f"{rnd.randrange(100, 50_000)}"
        for i in range(n)
    ]


def summarise(lines: list[str]) -> tuple[Counter[str], Counter[int], int]:
    """Per-chunk work: hits per path, responses per status, bytes sent."""
    paths: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    sent = 0
    for line in lines:
        m = LINE.match(line)
        if m is None:
            continue
        paths[m.group(4).split("?")[0]] += 1
        statuses[int(m.group(5))] += 1
        sent += int(m.group(6))
    return paths, statuses, sent


def merge(parts: list[tuple[Counter[str], Counter[int], int]]) -> tuple[Counter[str], Counter[int], int]:
    paths: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    sent = 0
    for p, s, b in parts:
        paths.update(p)
        statuses.update(s)
        sent += b
    return paths, statuses, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=400_000)
    args = parser.parse_args()
    lines = make_lines(args.lines)
    chunks = [lines[i : i + 10_000] for i in range(0, len(lines), 10_000)]

    t = time.perf_counter()
    expected = merge([summarise(c) for c in chunks])
    serial = time.perf_counter() - t

    with InterpreterPoolExecutor() as pool:
        pool.submit(len, "warm").result()
        t = time.perf_counter()
        got = merge(list(pool.map(summarise, chunks)))
        parallel = time.perf_counter() - t
    assert got == expected
    paths, statuses, sent = got
    print(f"{len(lines)} lines: top path {paths.most_common(1)[0]}, status {dict(statuses)}, {sent} bytes")
    print(f"serial {serial:.2f} s, interpreters {parallel:.2f} s: speed-up {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
