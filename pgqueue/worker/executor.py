"""Runs leased jobs (sync ones on plain job threads, async ones on an event loop) and reports how each
attempt ended. Everything from "the job body ended" to "the ending is reported" is total: whatever the job
raises, returns or leaves behind becomes an AttemptEnd, and a job thread never dies."""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from django.db import connections, transaction
from psycopg.pq import TransactionStatus

from pgqueue import db, events, settle, sql
from pgqueue.conf import Settings
from pgqueue.context import JobContext, _current
from pgqueue.enqueuing import registry
from pgqueue.exceptions import JobCancelled, UnknownJob
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, RetryPolicy, decide
from pgqueue.payload import Unstorable, dumps
from pgqueue.types import LeasedJob

logger = logging.getLogger("pgqueue.worker")

# Called with how an attempt ended; None when the job already completed in its own transaction.
Report = Callable[[LeasedJob, AttemptEnd | None], None]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def retry_policy(fn: Any | None, settings: Settings) -> RetryPolicy:
    """The job function's retry policy, its unset parts (or all of it, for no function) from the settings."""
    defaults = (settings.RETRY_BACKOFF, settings.RETRY_BACKOFF_MAX, settings.RETRY_JITTER)
    if fn is None or isinstance(fn, BaseException):  # no function: unknown, or its module failed to import
        return RetryPolicy(backoff=defaults[0], backoff_max=defaults[1], jitter=defaults[2])
    policy: RetryPolicy = fn.retry_policy(*defaults)
    return policy


# -- describing an ending (never raises) ------------------------------------------------------------

def describe(exc: BaseException) -> ErrorInfo:
    """An exception as text, even when its class, its str() or its traceback misbehave."""
    cls = type(exc)
    try:
        name = cls.__name__
        path = name if cls.__module__ == builtins.__name__ else f"{cls.__module__}.{cls.__qualname__}"
    except BaseException:
        name = path = "<unnamed exception>"
    try:
        text = str(exc)
    except BaseException as failure:
        text = f"<str() of the exception raised {type(failure).__name__}>"
    try:
        trace = "".join(traceback.format_exception(exc))
    except BaseException:
        try:
            trace = "".join(traceback.format_tb(exc.__traceback__))
        except BaseException:
            trace = ""
    return ErrorInfo(error_class=path, message=f"{name}: {text}", traceback=trace)


def returned(value: Any, worker: str, limit: int) -> AttemptEnd:
    """The ending of a job that returned `value`: its JSON, a repr when it has none, or too large."""
    if value is None:  # most jobs: no encoding to do
        return AttemptEnd(how=Ending.RETURNED, worker=worker, finished_at=now(), result="null")
    try:
        result = dumps(value)
    except Unstorable:
        result = _repr_json(value)
    size = len(result.encode("utf-8"))
    if size > limit:
        error = ErrorInfo(
            error_class="pgqueue.ResultTooLarge",
            message=f"the job returned {size} bytes of JSON, over PGQUEUE['MAX_RESULT_BYTES'] = {limit}: the "
                    "result is not stored, and the job is not run again (its work is done)",
        )
        return AttemptEnd(how=Ending.RESULT_TOO_LARGE, worker=worker, finished_at=now(), error=error)
    return AttemptEnd(how=Ending.RETURNED, worker=worker, finished_at=now(), result=result)


def _repr_json(value: Any) -> str:
    """{"repr": ...} for a value JSON cannot hold (an object, deep nesting, a huge int)."""
    try:
        return dumps({"repr": repr(value)[:2_000]})
    except BaseException:
        try:
            return dumps({"repr": f"<{type(value).__qualname__} that cannot be shown>"})
        except BaseException:
            return '{"repr": "<a value that cannot be shown>"}'


def raised(exc: BaseException, fn: Any | None, worker: str, *, cancelled: bool = False) -> AttemptEnd:
    """The ending of a job that raised `exc` (a cancel request turns it into CANCELLED)."""
    error = describe(exc)
    if cancelled or isinstance(exc, JobCancelled | asyncio.CancelledError):
        return AttemptEnd(how=Ending.CANCELLED, worker=worker, finished_at=now(), error=error)
    try:
        retryable = fn is None or bool(fn.is_retryable(exc))
    except BaseException:
        retryable = True
    return AttemptEnd(how=Ending.RAISED, worker=worker, finished_at=now(), error=error, retryable=retryable)


def unknown_task(exc: BaseException, worker: str) -> AttemptEnd:
    return AttemptEnd(how=Ending.UNKNOWN_TASK, worker=worker, finished_at=now(), error=describe(exc))


def timed_out(timeout: float | None, worker: str) -> AttemptEnd:
    error = ErrorInfo(error_class="TimeoutError", message=f"TimeoutError: timed out after {timeout} s")
    return AttemptEnd(how=Ending.TIMED_OUT, worker=worker, finished_at=now(), error=error)


def _failed_to_end(exc: BaseException, worker: str) -> AttemptEnd:
    """Last resort when building an ending itself failed: a retryable failure saying so."""
    try:
        detail = describe(exc).message
    except BaseException:
        detail = "unknown"
    error = ErrorInfo(error_class="pgqueue.UnreportableOutcome",
                      message=f"pgqueue could not turn this attempt's end into an outcome: {detail}")
    return AttemptEnd(how=Ending.RAISED, worker=worker, finished_at=now(), error=error)


# -- database connections a job leaves behind ---------------------------------------------------------

def leave_connections_clean() -> list[str]:
    """After a job: every Django connection this thread holds is back in autocommit with no transaction
    open. A connection that is not is rolled back, closed and replaced; returns what was wrong. The others
    are closed if unusable or past CONN_MAX_AGE, as Django does after a request (one pass for both)."""
    problems: list[str] = []
    for conn in connections.all(initialized_only=True):
        try:
            raw = conn.connection
            if raw is None:
                continue
            if conn.in_atomic_block:
                problem = "left a transaction.atomic() block open"
            elif not conn.autocommit:
                problem = "turned autocommit off"
            elif raw.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                problem = "left a transaction open (BEGIN without COMMIT)"
            else:
                _close_if_old(conn)
                continue
        except BaseException as exc:
            problem = f"left its connection unusable ({type(exc).__name__})"
        problems.append(f"on database {conn.alias!r} the job {problem}")
        _discard(conn)
    return problems


def _close_if_old(conn: Any) -> None:
    try:
        conn.close_if_unusable_or_obsolete()
    except BaseException:
        logger.exception("closing the database connection %r after a job failed", conn.alias)


def _discard(conn: Any) -> None:
    """Close a connection without committing, and give this thread a fresh wrapper for its alias."""
    try:
        if conn.connection is not None:
            conn.connection.close()  # the server rolls back what was open
    except BaseException:
        pass
    try:
        del connections[conn.alias]
    except BaseException:
        pass


def _with_problems(end: AttemptEnd, problems: list[str], fn: Any | None, worker: str) -> AttemptEnd:
    if not problems:
        return end
    text = "; ".join(problems)
    note = f"{text}: pgqueue rolled it back and closed the connection, so the job's writes there did not happen"
    if end.error is not None:  # it failed anyway: keep its error and add what it left behind
        error = ErrorInfo(error_class=end.error.error_class, message=f"{end.error.message} (and {note})",
                          traceback=end.error.traceback)
        return AttemptEnd(how=end.how, worker=worker, finished_at=end.finished_at, error=error,
                          retryable=end.retryable)
    error = ErrorInfo(error_class="pgqueue.TransactionLeftOpen", message=note)
    return AttemptEnd(how=Ending.RAISED, worker=worker, finished_at=now(), error=error)


def _still_leased(job: LeasedJob) -> bool:
    try:
        return bool(db.run_in_django(sql.job_is_leased, id=job.id, token=job.lease_token)[0].held)
    except BaseException:
        return True  # then the worker's own transition is tried, and refused if the job completed


# -- running jobs ---------------------------------------------------------------------------------------

class Executor:
    """`concurrency` job threads fed by one queue and, when an async job first arrives, one event-loop
    thread. Plain threads and a C queue, not concurrent.futures: no Future, lock and condition per job."""

    def __init__(self, concurrency: int, settings: Settings, worker_id: str, report: Report) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._report = report
        self._inbox: queue.SimpleQueue[tuple[Any, LeasedJob, JobContext] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"pgqueue-job-{i}", daemon=True) for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()

    def function(self, task: str) -> Any:
        """The job function for `task`, or the UnknownJob error explaining why there is none."""
        try:
            return registry.get(task)
        except UnknownJob as exc:
            return exc
        except Exception as exc:  # a registry that misbehaves: report it like an import failure
            return UnknownJob(f"Job {task!r}: looking it up failed: {exc!r}")

    def submit(self, fn: Any, job: LeasedJob, ctx: JobContext) -> None:
        """Start a job whose function is `fn` (or an UnknownJob error); its ending is reported later."""
        if isinstance(fn, BaseException):
            self._safe_report(job, unknown_task(fn, self.worker_id))
        elif fn.is_async:
            try:
                future = asyncio.run_coroutine_threadsafe(self._run_async(fn, job, ctx), self._event_loop())
            except BaseException as exc:
                self._safe_report(job, raised(exc, fn, self.worker_id))
                return
            future.add_done_callback(lambda f: self._async_done(f, fn, job))
        else:
            self._inbox.put((fn, job, ctx))

    def _safe_report(self, job: LeasedJob, end: AttemptEnd | None) -> None:
        try:
            self._report(job, end)
        except BaseException:
            logger.exception("job %s: reporting its outcome failed", job.id)

    def _serve(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            fn, job, ctx = item
            try:
                end = self._run_sync(fn, job, ctx)
            except BaseException as exc:
                end = _failed_to_end(exc, self.worker_id)
            self._safe_report(job, end)

    def _run_sync(self, fn: Any, job: LeasedJob, ctx: JobContext) -> AttemptEnd | None:
        token = _current.set(ctx)
        try:
            try:
                args = (ctx, *job.args) if fn.pass_context else tuple(job.args)
                end = returned(fn.func(*args, **job.kwargs), self.worker_id, self.settings.MAX_RESULT_BYTES)
            except BaseException as exc:  # a job's failure is data, never a worker crash
                end = raised(exc, fn, self.worker_id, cancelled=ctx.cancel_requested)
            end = _with_problems(end, leave_connections_clean(), fn, self.worker_id)
            if ctx._completed and end.how is Ending.RETURNED and not _still_leased(job):
                return None  # complete_in_transaction's transaction committed: nothing left to record
            return end
        finally:
            _current.reset(token)

    async def _run_async(self, fn: Any, job: LeasedJob, ctx: JobContext) -> AttemptEnd | None:
        _current.set(ctx)  # each task has its own context copy
        ctx._task = asyncio.current_task()
        if ctx.cancel_requested:
            return raised(JobCancelled(f"job {job.id} was cancelled"), fn, self.worker_id, cancelled=True)
        limit = asyncio.timeout(job.timeout)
        try:
            args = (ctx, *job.args) if fn.pass_context else tuple(job.args)
            async with limit:
                value = await fn.func(*args, **job.kwargs)
            end = returned(value, self.worker_id, self.settings.MAX_RESULT_BYTES)
        except TimeoutError as exc:
            if limit.expired() and not ctx.cancel_requested:
                end = timed_out(job.timeout, self.worker_id)
            else:
                end = raised(exc, fn, self.worker_id, cancelled=ctx.cancel_requested)
        except BaseException as exc:
            end = raised(exc, fn, self.worker_id, cancelled=ctx.cancel_requested)
        end = _with_problems(end, leave_connections_clean(), fn, self.worker_id)
        if ctx._completed and end.how is Ending.RETURNED and not await asyncio.to_thread(_still_leased, job):
            return None  # complete_in_transaction's transaction committed: nothing left to record
        return end

    def _async_done(self, future: Any, fn: Any, job: LeasedJob) -> None:
        try:
            end = future.result()
        except BaseException as exc:  # cancelled before it started, or the loop was stopped
            end = raised(exc, fn, self.worker_id)
        self._safe_report(job, end)

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


def complete_in_transaction(job: LeasedJob, worker_id: str, settings: Settings, result: Any) -> None:
    """Mark `job` succeeded in the caller's open transaction on pgqueue's database (JobContext's
    complete_in_transaction): the job's writes and its completion commit or roll back together."""
    alias = settings.DATABASE
    if not connections[alias].in_atomic_block:
        raise RuntimeError(
            f"complete_in_transaction() must be called inside transaction.atomic(using={alias!r}) "
            "around the job's own writes; outside one it would commit on its own"
        )
    end = returned(result, worker_id, settings.MAX_RESULT_BYTES)
    transition = decide(job, end, retry_policy(None, settings))
    rows = db.run_in_django(sql.job_set_state_if_running_many, using=alias, **db.transition_params([transition]),
                            worker=worker_id, channel=settings.NOTIFY_CHANNEL)
    if rows and rows[0].slot_key is not None:  # its semaphore slot goes to the next job in the same transaction
        db.run_in_django(sql.semaphore_hand_off, using=alias, **db.hand_off_params(rows, channel=settings.NOTIFY_CHANNEL))
    settle.after_commit(alias, rows, channel=settings.NOTIFY_CHANNEL)  # its dependents and batch, once committed
    if rows:  # its attempt's line and counters, once it is true
        applied = {row.id: row.state for row in rows}
        transaction.on_commit(lambda: events.attempts_ended([transition], applied, worker_id), using=alias)
    if not rows:
        raise JobCancelled(f"job {job.id}: its lease is gone (rescued or cancelled); it cannot complete here")
