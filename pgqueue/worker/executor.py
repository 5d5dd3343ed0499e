"""Runs leased jobs (sync ones on a pool of plain threads, async ones on an event loop) and turns each into a Finish."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections

from pgqueue import registry
from pgqueue.conf import Settings
from pgqueue.context import JobContext, _current
from pgqueue.enqueueing import has_nul
from pgqueue.exceptions import JobCancelled, UnknownJob
from pgqueue.registry import JobFunction
from pgqueue.types import Finish, JobState, LeasedJob, Outcome, ReasonCode

logger = logging.getLogger("pgqueue.worker")

MAX_MESSAGE = 2_000
MAX_TRACEBACK = 20_000


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def succeeded(job: LeasedJob, value: Any) -> Finish:
    try:
        result = json.dumps(value, allow_nan=False, ensure_ascii=False)
        if has_nul(result):
            raise ValueError("NUL character")
        result.encode("utf-8")  # lone surrogates cannot be stored
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        result = json.dumps({"repr": repr(value)[:MAX_MESSAGE]})
    return Finish(
        job_id=job.id, lease_token=job.lease_token, attempt=job.attempt, state=JobState.SUCCEEDED,
        outcome=Outcome.SUCCEEDED, started_at=job.started_at, finished_at=now(), result=result,
    )


def failed(
    job: LeasedJob,
    fn: JobFunction | None,
    exc: BaseException | None,
    settings: Settings,
    *,
    outcome: Outcome = Outcome.FAILED,
    cancel_requested: bool = False,
    message: str = "",
    reason: ReasonCode | None = None,
) -> Finish:
    """The Finish for a failed attempt: retry later, or dead/cancelled with a reason."""
    error_class = _class_path(exc) if exc is not None else ""
    text = message or (f"{type(exc).__name__}: {exc}" if exc is not None else outcome.value)
    trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
    run_at = None
    reason_code = ""
    if cancel_requested or isinstance(exc, JobCancelled | asyncio.CancelledError):
        state, outcome = JobState.CANCELLED, Outcome.CANCELLED
    elif reason is not None:
        state, reason_code = JobState.DEAD, reason.value
    elif fn is not None and exc is not None and not fn.is_retryable(exc):
        state, reason_code = JobState.DEAD, ReasonCode.NON_RETRYABLE.value
    elif job.attempt >= job.max_attempts:
        state, reason_code = JobState.DEAD, ReasonCode.MAX_ATTEMPTS.value
    else:
        delay = (fn.retry_delay(job.attempt, settings.RETRY_BACKOFF, settings.RETRY_BACKOFF_MAX,
                                settings.RETRY_JITTER) if fn is not None else settings.RETRY_BACKOFF)
        state = JobState.SCHEDULED if delay > 0 else JobState.READY
        run_at = now() + dt.timedelta(seconds=delay)
    return Finish(
        job_id=job.id, lease_token=job.lease_token, attempt=job.attempt, state=state, outcome=outcome,
        started_at=job.started_at, finished_at=now(), run_at=run_at, error_class=error_class,
        error_message=_text(text)[:MAX_MESSAGE], traceback=_text(trace)[-MAX_TRACEBACK:], reason_code=reason_code,
    )


def _text(value: str) -> str:
    """Text PostgreSQL can store: no NUL, and valid UTF-8 (lone surrogates from undecodable bytes
    become backslash escapes)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _class_path(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


Done = Callable[[Finish], None]


class Executor:
    """`concurrency` job threads fed by one queue and, when an async job first arrives, one event-loop
    thread. Plain threads and a C queue, not concurrent.futures: no Future, lock and condition per job."""

    def __init__(self, concurrency: int, settings: Settings) -> None:
        self.settings = settings
        self._inbox: queue.SimpleQueue[tuple[JobFunction, LeasedJob, JobContext, Done] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"pgqueue-job-{i}", daemon=True) for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()

    def submit(self, job: LeasedJob, ctx: JobContext, done: Done) -> None:
        """Start a job; `done` is called with its Finish from the thread that ran it."""
        try:
            fn = registry.get(job.task)
        except UnknownJob as exc:
            done(failed(job, None, exc, self.settings, reason=ReasonCode.UNKNOWN_TASK))
            return
        if fn.is_async:
            future = asyncio.run_coroutine_threadsafe(self._run_async(fn, job, ctx), self._event_loop())
            future.add_done_callback(lambda f: done(f.result()))
        else:
            self._inbox.put((fn, job, ctx, done))

    def _serve(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            fn, job, ctx, done = item
            try:
                finish = self._run_sync(fn, job, ctx)
            except BaseException as exc:  # e.g. close_old_connections() failing: still report the attempt
                logger.exception("job %s: the executor failed around the job", job.id)
                finish = failed(job, fn, exc, self.settings, cancel_requested=ctx.cancel_requested)
            try:
                done(finish)
            except Exception:
                logger.exception("job %s: recording its outcome failed", job.id)

    def job_function(self, task: str) -> JobFunction | None:
        try:
            return registry.get(task)
        except UnknownJob:
            return None

    def runs_async(self, task: str) -> bool:
        fn = self.job_function(task)
        return fn is not None and fn.is_async

    def _run_sync(self, fn: JobFunction, job: LeasedJob, ctx: JobContext) -> Finish:
        token = _current.set(ctx)
        try:
            args = (ctx, *job.args) if fn.pass_context else tuple(job.args)
            return succeeded(job, fn.func(*args, **job.kwargs))
        except BaseException as exc:  # a job's failure is data, never a worker crash
            return failed(job, fn, exc, self.settings, cancel_requested=ctx.cancel_requested)
        finally:
            close_old_connections()
            _current.reset(token)

    async def _run_async(self, fn: JobFunction, job: LeasedJob, ctx: JobContext) -> Finish:
        _current.set(ctx)  # each task has its own context copy
        ctx._task = asyncio.current_task()
        if ctx.cancel_requested:
            return failed(job, fn, None, self.settings, cancel_requested=True)
        args = (ctx, *job.args) if fn.pass_context else tuple(job.args)
        limit = asyncio.timeout(job.timeout)
        try:
            async with limit:
                value = await fn.func(*args, **job.kwargs)
            return succeeded(job, value)
        except TimeoutError as exc:
            if limit.expired() and not ctx.cancel_requested:
                return failed(job, fn, exc, self.settings, outcome=Outcome.TIMEOUT,
                              message=f"timed out after {job.timeout} s")
            return failed(job, fn, exc, self.settings, cancel_requested=ctx.cancel_requested)
        except BaseException as exc:
            return failed(job, fn, exc, self.settings, cancel_requested=ctx.cancel_requested)

    def cancel(self, ctx: JobContext) -> None:
        """Pass a cancel request to a running job: a flag for sync jobs, task.cancel() for async ones."""
        ctx._cancelled = True
        task = ctx._task
        if task is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(task.cancel)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pgqueue-async", daemon=True).start()
                self._loop = loop
            return self._loop

    def shutdown(self) -> None:
        for _ in self._threads:
            self._inbox.put(None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
