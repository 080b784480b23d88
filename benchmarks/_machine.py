"""A check of the machine for benchmarks on shared cores: is the timing measuring work?

When other processes keep the cores busy, every parallel torch operation with several
threads waits for a descheduled thread (milliseconds instead of microseconds); timings then
count operations rather than measure work. Benchmarks print this check before and after.
"""

from __future__ import annotations

import time

import torch


def parallel_op_seconds(threads: int, window: float = 0.3) -> float:
    """Mean wall time of a multiply of 100,000 floats (parallel above 32,768) at ``threads``.

    Averaged over ``window`` seconds, several scheduler time slices, so that the waits for a
    descheduled thread on busy cores are counted as often as they happen.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(2, 100_000, generator=torch.Generator().manual_seed(0))
        a.mul(b)
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < window:
            a.mul(b)
            count += 1
        return elapsed / count
    finally:
        torch.set_num_threads(previous)


def machine_check(threads: int, when: str) -> None:
    """Print the cost of a parallel operation, and say when busy cores distort the timings."""
    own = parallel_op_seconds(threads)
    line = f"  machine check ({when}): a parallel 100k-element multiply takes {own * 1e6:.0f} µs"
    if threads > 1:
        single = parallel_op_seconds(1)
        line += f" with {threads} threads, {single * 1e6:.0f} µs with 1"
        if own > 10 * single:
            line += (
                "; the cores are busy (each parallel operation waits for a descheduled thread), "
                "so these timings count operations rather than measure work"
            )
    print(line)
