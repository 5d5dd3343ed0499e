"""Benchmark jobs: a no-op, and one that reports when it started (for pickup latency)."""

import time

from pgqueue import job


@job(queue="bench")
def noop() -> None:
    return None


@job(queue="bench")
def stamp() -> float:
    return time.time()
