"""Jobs the tests enqueue; workers import this module through job discovery."""

from __future__ import annotations

import asyncio
import os
import time

from pgqueue import Event, JobContext, Unique, job, subscriber
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


# -- jobs that misbehave (tests/process/test_misbehaving_jobs.py) ----------------------------------------

@job(queue="misbehave", max_attempts=1)
def leaves_atomic_open(label: str) -> str:
    """Enters transaction.atomic() and never leaves it: its write must not count as done."""
    from django.db import transaction

    transaction.atomic().__enter__()
    Mark.objects.create(label=label)
    return "looks fine"


@job(queue="misbehave", max_attempts=1)
def raw_begin(label: str) -> str:
    """Opens a transaction with a raw BEGIN and returns with it open."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
    Mark.objects.create(label=label)
    return "looks fine"


@job(queue="misbehave", max_attempts=1)
def autocommit_off(label: str) -> str:
    """Turns autocommit off, writes, and returns without committing."""
    from django.db import transaction

    transaction.set_autocommit(False)
    Mark.objects.create(label=label)
    return "looks fine"


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


@job(queue="misbehave", max_attempts=2)
def unformattable(label: str) -> None:
    Mark.objects.create(label=label)
    try:
        raise BadStr()
    except BadStr as inner:
        raise BadStr() from inner  # nested: its cause cannot be formatted either


@job(queue="misbehave", max_attempts=1)
def raises_system_exit(label: str) -> None:
    Mark.objects.create(label=label)
    raise SystemExit(4)


@job(queue="misbehave", max_attempts=1)
def returns_huge_int(label: str) -> int:
    Mark.objects.create(label=label)
    return 10**5000  # json cannot encode it (int to str limit), nor can repr()


@job(queue="misbehave", max_attempts=1)
def returns_deep_list(label: str) -> list:
    Mark.objects.create(label=label)
    value: list = []
    for _ in range(5000):
        value = [value]
    return value


@job(queue="misbehave", max_attempts=3)
def returns_big_result(label: str, size: int) -> str:
    Mark.objects.create(label=label)
    return "x" * size


def _long_named_error() -> type[Exception]:
    name = "E" * 300
    return type(name, (Exception,), {"__qualname__": name})


LongNamedError = _long_named_error()


@job(queue="misbehave", max_attempts=1)
def raises_long_class_path(label: str) -> None:
    Mark.objects.create(label=label)
    raise LongNamedError("a class path longer than the column")


@job(queue="misbehave", max_attempts=1, timeout=0.5)
async def blocks_event_loop() -> None:
    """Blocks its event loop (time.sleep in async code): asyncio's own timeout cannot fire."""
    time.sleep(4)


@job(queue="crash", max_attempts=3)
def crashes_process(label: str, delay: float) -> None:
    """Kills its own process (as a segfault or the OOM killer would) after `delay` seconds."""
    import signal

    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=label, job_id=ctx.job_id if ctx else None, attempt=ctx.attempt if ctx else None,
                        pid=os.getpid())
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)


@job(queue="crash", max_attempts=3)
def healthy(label: str, sleep: float) -> str:
    time.sleep(sleep)
    Mark.objects.create(label=label, pid=os.getpid())
    return label


@job(queue="misbehave", pass_context=True, max_attempts=3)
def completes_in_transaction(ctx: JobContext, label: str, then_die: bool) -> str:
    """Writes and completes in one transaction; optionally dies right after the commit."""
    import signal

    from django.db import transaction

    with transaction.atomic():
        Mark.objects.create(label=label, job_id=ctx.job_id, attempt=ctx.attempt, pid=os.getpid())
        ctx.complete_in_transaction({"label": label})
    if then_die:
        os.kill(os.getpid(), signal.SIGKILL)
    return "not stored: the job completed in its transaction"


# -- flow control (tests/integration/test_flow.py, tests/process/test_flow.py) -------------------------------


@job(queue="flow", unique=True)
def unique_note(label: str) -> None:
    Mark.objects.create(label=label)


@job(queue="flow", unique=Unique(key="digest:{user_id}", on_conflict="discard"))
def digest(user_id: int, text: str = "") -> str:
    return text


@job(queue="flow", unique=Unique(key="debounce:{account}", until="started", on_conflict="replace"))
def debounce(account: str, value: int) -> int:
    Mark.objects.create(label=f"debounce:{account}", attempt=value)
    return value


@job(queue="flow", unique=Unique(args=("day",), window=3600, on_conflict="discard"))
def daily(day: str, note: str = "") -> str:
    return note


@job(queue="flow", concurrency_key="sem:{group}", concurrency_limit=2, max_attempts=3)
def limited(group: str, label: str, sleep: float = 0.0, first_sleep: float = 0.0) -> None:
    """Record, then sleep (longer on the first attempt, to be caught running)."""
    from pgqueue import current_job

    ctx = current_job()
    attempt = ctx.attempt if ctx else None
    Mark.objects.create(label=label, job_id=ctx.job_id if ctx else None, attempt=attempt, pid=os.getpid())
    time.sleep(first_sleep if attempt == 1 and first_sleep else sleep)


@job(queue="flow", unique=Unique(key="held:{label}"), concurrency_key="sem:{group}", concurrency_limit=2)
def limited_unique(group: str, label: str, first_sleep: float = 0.0) -> None:
    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=label, job_id=ctx.job_id if ctx else None, attempt=ctx.attempt if ctx else None,
                        pid=os.getpid())
    if ctx and ctx.attempt == 1:
        time.sleep(first_sleep)


@job(queue="flow", ordering_key="stream:{stream}")
def ordered(stream: str, seq: int, sleep: float = 0.0) -> None:
    Mark.objects.create(label=f"ordered:{stream}", attempt=seq, pid=os.getpid())
    time.sleep(sleep)


@job(queue="flow", ordering_key="stream:{stream}", max_attempts=2, retry_backoff=1.0, retry_jitter=0.0)
def ordered_flaky(stream: str, seq: int) -> None:
    """seq 0 fails its first attempt: with ordering_retry="block" the others wait for its retry."""
    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=f"ordered:{stream}", attempt=seq, pid=os.getpid())
    if seq == 0 and ctx and ctx.attempt == 1:
        raise RuntimeError("first attempt fails")


@job(queue="flow", ordering_key="stream:{stream}", ordering_retry="skip", max_attempts=2, retry_backoff=1.0,
     retry_jitter=0.0)
def ordered_flaky_skip(stream: str, seq: int) -> None:
    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=f"ordered:{stream}", attempt=seq, pid=os.getpid())
    if seq == 0 and ctx and ctx.attempt == 1:
        raise RuntimeError("first attempt fails")


@job(queue="breaker", max_attempts=1)
def breaker_fails(label: str) -> None:
    raise RuntimeError(f"partner down ({label})")


@job(queue="breaker")
def breaker_ok(label: str) -> None:
    Mark.objects.create(label=label)


@job(queue="rated", rate_limit=3, rate_window=60.0, rate_key="partner:{account}")
def partner_call(account: str, label: str) -> None:
    """A call to a partner's API that allows 3 calls a minute per account."""
    Mark.objects.create(label=label, pid=os.getpid())


@job(queue="rated", rate_limit=5, rate_window=1.0, rate_key="paced:{account}")
def paced(account: str, label: str) -> None:
    Mark.objects.create(label=label, pid=os.getpid())


@job(queue="marks", pass_context=True)
def batch_callback(ctx: JobContext, label: str) -> int:
    """A batch's callback: records the batch it was called for."""
    Mark.objects.create(label=label, job_id=ctx.callback_of, pid=os.getpid())
    return os.getpid()


@subscriber("order.paid", queue="marks")
def on_order_paid(event: Event) -> str:
    """Records the event it got."""
    Mark.objects.create(label=f"paid:{event.topic}:{event.key}:{event.payload}", job_id=event.id, pid=os.getpid())
    return event.published_at.isoformat()


@subscriber("order.*", queue="marks")
def on_any_order(event: Event) -> None:
    Mark.objects.create(label=f"order:{event.topic}", job_id=event.id)


@subscriber("shipment.**", queue="marks", ordered=True)
def on_shipment(event: Event) -> None:
    """Events of one key run one at a time, in publish order."""
    Mark.objects.create(label=f"ship:{event.key}:{event.payload}", job_id=event.id)
    time.sleep(0.01)


@subscriber("relay.test", queue="unserved")
def relay_first(event: Event) -> None:
    """A subscriber whose jobs no test worker runs: the relay tests count its jobs."""


@subscriber("relay.*", queue="unserved")
def relay_second(event: Event) -> None:
    """A second subscriber of the relay tests' events."""


@subscriber("async.ping", queue="marks")
async def on_ping_async(event: Event) -> str:
    """An async subscriber: the worker awaits it."""
    await asyncio.sleep(0)
    return f"pong {event.payload}"


def _hold_interpreter(seconds: float) -> None:
    """Sleep in C while keeping the interpreter lock (ctypes.PyDLL does not release it), as a catastrophically
    backtracking regular expression or a long C call would: no other thread of the process runs meanwhile."""
    import ctypes

    ctypes.PyDLL(None).sleep(ctypes.c_uint(int(seconds)))


@job(queue="misbehave", max_attempts=1)
def holds_interpreter(label: str, seconds: float) -> int:
    """Starves its process's heartbeat thread for `seconds`, then records that it finished."""
    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=label, job_id=ctx.job_id if ctx else None, attempt=ctx.attempt if ctx else None,
                        pid=os.getpid())
    _hold_interpreter(seconds)
    Mark.objects.create(label=label + ":end", pid=os.getpid())
    return os.getpid()


@job(queue="misbehave", max_attempts=1, timeout=2)
def holds_interpreter_past_timeout(label: str) -> None:
    """Keeps the interpreter far past its timeout: the worker's own loop cannot record the timeout."""
    Mark.objects.create(label=label, pid=os.getpid())
    _hold_interpreter(120)


@job(queue="misbehave", max_attempts=2, timeout=0.5)
async def blocks_event_loop_long() -> None:
    """Blocks its event loop far past its timeout (and past the worker's shutdown timeout)."""
    time.sleep(60)


@job(queue="misbehave", max_attempts=2)
async def async_waits(seconds: float) -> float:
    """A well-behaved async job that needs its event loop to run for `seconds`."""
    await asyncio.sleep(seconds)
    return seconds
