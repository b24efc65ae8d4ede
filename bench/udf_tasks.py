"""The UDF the DuckDB benchmark runs (a module of its own, as a user's would be)."""

from __future__ import annotations


def collatz_steps(n: int) -> int:
    """CPU-heavy pure Python: the Collatz steps of n + 1 (a few hundred operations)."""
    steps = 0
    n = abs(int(n)) + 1
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps
