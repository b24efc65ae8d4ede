"""The work the benchmarks send to every executor: a small module, as a user's would be,
so that each worker imports only this and not the benchmark's driver."""

from __future__ import annotations


def count_primes(limit: int) -> int:
    """Pure-Python CPU work: count the primes below ``limit`` by trial division."""
    count = 0
    for n in range(2, limit):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


def collatz_steps(n: int) -> int:
    """CPU-heavy pure Python for the UDF benchmark: the Collatz steps of n + 1."""
    steps = 0
    n = abs(int(n)) + 1
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def collatz_sum(start: int, stop: int, step: int) -> int:
    """The sum of ``collatz_steps`` over ``range(start, stop, step)``: one worker's share
    of the UDF benchmark's rows, to measure the machine's ceiling for that work."""
    return sum(collatz_steps(n) for n in range(start, stop, step))


def echo(value: object) -> object:
    """Return what it got: the payload benchmark's round trip."""
    return value


def payload(name: str) -> object:
    """The payload benchmark's values, made the same way in every process."""
    if name == "ints":
        return list(range(10_000))
    if name == "dict":
        return {f"key{i}": i * 0.5 for i in range(1000)}
    if name == "tuples":
        return [(i, f"s{i}", i * 1.5) for i in range(1000)]
    if name == "records":
        return [{"id": i, "tags": [f"t{i}", "a", "b"], "score": i * 0.1} for i in range(200)]
    if name == "bytes":
        return bytes(range(256)) * 4096  # 1 MiB
    raise ValueError(f"unknown payload {name!r}")
