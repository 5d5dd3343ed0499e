"""Benchmark jobs: a no-op (plain, under a semaphore, with a uniqueness key), and one that reports when it
started (for pickup latency)."""

import time

from pgqueue import Event, Unique, job, subscriber


@job(queue="bench")
def noop() -> None:
    return None


@job(queue="bench")
def stamp() -> float:
    return time.time()


@job(queue="bench", concurrency_key="bench:{key}", concurrency_limit=5)
def noop_limited(key: int) -> None:
    """W1 under a semaphore: at most 5 jobs of each key ready or running at once."""
    return None


@job(queue="bench", unique=Unique(key="bench:{n}"))
def noop_unique(n: int) -> None:
    """W1 with a uniqueness key per job (held until it finishes)."""
    return None


@subscriber("bench.event", queue="bench-outbox")
def bench_subscriber_a(event: Event) -> None:
    """One of the two subscribers of the outbox benchmark (its jobs are counted, not run)."""


@subscriber("bench.*", queue="bench-outbox")
def bench_subscriber_b(event: Event) -> None:
    """The other subscriber of the outbox benchmark."""
