"""Jobs the tests enqueue; workers import this module through job discovery."""

from __future__ import annotations

import asyncio
import os
import time

from pgqueue import JobContext, job
from pgqueue.exceptions import NonRetryable
from tests.testapp.models import Mark


@job
def noop() -> None:
    return None


@job
def add(a: int, b: int) -> int:
    return a + b


@job(queue="marks")
def mark(label: str, sleep: float = 0.0) -> int:
    """Record one execution (with the attempt number), optionally after sleeping."""
    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=label, job_id=ctx.job_id if ctx else None, attempt=ctx.attempt if ctx else None,
                        pid=os.getpid())
    if sleep:
        time.sleep(sleep)
    return os.getpid()


@job(queue="marks")
def mark_after(label: str, sleep: float) -> int:
    """Sleep first, then record: proves a job ran to the end."""
    time.sleep(sleep)
    Mark.objects.create(label=label, pid=os.getpid())
    return os.getpid()


@job(max_attempts=3)
def always_fails(label: str) -> None:
    Mark.objects.create(label=label)
    raise RuntimeError(f"boom {label}")


class Fatal(Exception):
    pass


@job(max_attempts=5, non_retryable=[Fatal])
def fatal(label: str) -> None:
    Mark.objects.create(label=label)
    raise Fatal("do not retry me")


@job(max_attempts=1)
def give_up() -> None:
    raise NonRetryable("nope")


@job(max_attempts=3)
def flaky(label: str, fail_times: int) -> str:
    """Fail the first `fail_times` attempts, then succeed."""
    Mark.objects.create(label=label)
    if Mark.objects.filter(label=label).count() <= fail_times:
        raise ValueError("not yet")
    return "ok"


@job(max_attempts=2, timeout=0.5)
def too_slow(label: str) -> None:
    Mark.objects.create(label=label)
    time.sleep(3)


@job(pass_context=True, max_attempts=1)
def with_progress(ctx: JobContext, steps: int, label: str) -> dict[str, int]:
    for i in range(steps):
        ctx.progress(100 * (i + 1) / steps, f"step {i + 1} of {steps}")
        time.sleep(0.05)
    Mark.objects.create(label=label, job_id=ctx.job_id, attempt=ctx.attempt)
    return {"steps": steps}


@job(pass_context=True, max_attempts=3)
def cancellable(ctx: JobContext, label: str) -> None:
    Mark.objects.create(label=label)
    for _ in range(200):
        ctx.raise_if_cancelled()
        time.sleep(0.05)


@job(max_attempts=2)
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@job(max_attempts=1, timeout=0.3)
async def async_slow() -> None:
    await asyncio.sleep(5)


@job(max_attempts=3)
async def async_cancellable() -> None:
    await asyncio.sleep(30)


@job
def returns_object() -> object:
    return object()


@job
def returns_nul() -> str:
    raise ValueError("bad\x00byte")


@job
def result_with_nul() -> str:
    return "a\x00b"
