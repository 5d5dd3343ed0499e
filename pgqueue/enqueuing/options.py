"""What a job and a call of it may ask for, and the rules that check it: limits, JobSpec, JobOptions,
JobCall.

The @job decorator (pgqueue.enqueuing.decorator), fn.options() and the enqueue path (pgqueue.enqueuing.rows)
all check with these functions, so a value is refused with the same message wherever it is given.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from pgqueue.conf import MAX_ATTEMPTS_MAX, SECONDS_MAX, check_queue_name
from pgqueue.enqueuing.flow import FlowJob
from pgqueue.enqueuing.handle import JobHandle
from pgqueue.exceptions import InvalidJob
from pgqueue.lifecycle import RetryPolicy
from pgqueue.text import short_repr, text_problem

PRIORITY_MIN, PRIORITY_MAX = -100, 100  # the priority column is a smallint with this check
JOB_NAME_MAX = 255  # the task column's length
DEPENDENCIES_MAX = 1_000  # jobs one job may depend on
JOB_ID_MAX = 2**63 - 1  # job ids are a bigint sequence starting at 1
ON_DEPENDENCY_FAILURE = ("cancel", "run")
# A job starts no earlier and no later than this (UTC), so its run_at can be shown in any time zone.
RUN_AT_MIN = dt.datetime(2, 1, 1, tzinfo=dt.UTC)
RUN_AT_MAX = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


class JobSpec(FlowJob, Protocol):
    """A registered job as the enqueue path and the worker read it (pgqueue.enqueuing.decorator.JobFunction)."""

    func: Callable[..., Any]
    queue: str | None
    priority: int
    max_attempts: int | None
    timeout: float | None
    on_dependency_failure: str
    is_async: bool

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None: ...

    def retry_policy(self, base: float, cap: float, jitter: float) -> RetryPolicy: ...

    def is_retryable(self, exc: BaseException) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """Per-call options; None means "use the job's (or the settings') default"."""

    queue: str | None = None
    priority: int | None = None
    run_at: dt.datetime | None = None
    delay: float | dt.timedelta | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    # flow control (pgqueue.flow, docs/concurrency.md)
    unique: Any = None  # True, False or a pgqueue.Unique: replaces the job's
    unique_key: str | None = None  # this call's uniqueness key (with the job's Unique policy)
    idempotency_key: str | None = None
    concurrency_key: Any = None  # with concurrency_limit
    concurrency_limit: int | None = None
    ordering_key: Any = None
    rate_key: Any = None  # with the job's rate_limit, or this call's
    rate_limit: int | None = None
    rate_window: float | None = None
    # dependencies (docs/workflows.md): job handles or ids, or step names inside enqueue_workflow()
    depends_on: Any = None
    on_dependency_failure: str | None = None  # "cancel" (default) or "run"


OPTION_NAMES = tuple(f.name for f in fields(JobOptions))
NO_OPTIONS = JobOptions()


@dataclass(frozen=True, kw_only=True)
class JobCall:
    """One call of a job function, ready to be enqueued (see enqueue_many): fn.call(...) builds one."""

    job: JobSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: JobOptions = NO_OPTIONS

    def __post_init__(self) -> None:
        name = getattr(self.job, "name", None) or repr(self.job)
        if not isinstance(self.args, tuple):
            raise InvalidJob(f"Job {name}: JobCall args must be a tuple, got {type(self.args).__name__}.")
        if not isinstance(self.kwargs, dict):
            raise InvalidJob(f"Job {name}: JobCall kwargs must be a dict, got {type(self.kwargs).__name__}.")
        for key in self.kwargs:
            if not isinstance(key, str):
                raise InvalidJob(f"Job {name}: keyword argument names must be strings, got {short_repr(key)}.")
        if not isinstance(self.options, JobOptions):
            raise InvalidJob(f"Job {name}: JobCall options must be a JobOptions, got {type(self.options).__name__}.")


def check_int(label: str, value: Any, low: int, high: int) -> int:
    """value if it is an int (not a bool) from low to high, else InvalidJob("<label> must be ...")."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidJob(f"{label} must be an integer from {low} to {high}, got {short_repr(value)}.")
    return value


def check_seconds(label: str, value: Any, *, zero: bool = False, maximum: float = SECONDS_MAX) -> float:
    """value if it is a finite number of seconds above 0 (or 0 too, with zero=True) and at most
    `maximum`, else InvalidJob."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"{label} must be a number of seconds, got {short_repr(value)}.")
    if not _finite(value):
        raise InvalidJob(f"{label} must be a finite number of seconds, got {short_repr(value)}.")
    if value < 0 or (value == 0 and not zero):
        raise InvalidJob(f"{label} must be a number of seconds {'>= 0' if zero else 'greater than 0'}, got {short_repr(value)}.")
    if value > maximum:
        raise InvalidJob(f"{label} must be at most {maximum:.0f} seconds ({_days(maximum)}), got {short_repr(value)}.")
    return value


def check_fraction(label: str, value: Any, maximum: float) -> float:
    """value if it is a finite number from 0 to `maximum`, else InvalidJob."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise InvalidJob(f"{label} must be a number from 0 to {maximum:g}, got {short_repr(value)}.")
    return value


def check_queue(label: str, value: Any) -> str:
    """value if it is a usable queue name, else InvalidJob("<label> Invalid queue name ...")."""
    try:
        return check_queue_name(value)
    except InvalidJob as exc:
        raise InvalidJob(f"{label} {exc}") from None


def check_job_name(name: Any) -> str:
    """name if it can be stored as a job's task name, else InvalidJob."""
    if not isinstance(name, str) or not name:
        raise InvalidJob(f"A job name must be a non-empty string, got {short_repr(name)}.")
    if len(name) > JOB_NAME_MAX:
        raise InvalidJob(
            f"Job name {name[:60]!r}... is {len(name)} characters long, over {JOB_NAME_MAX} (the task column); "
            "pass a shorter name=... to @job."
        )
    problem = text_problem(name)
    if problem is not None:
        raise InvalidJob(f"Job name {short_repr(name)} {problem}.")
    return name


def check_options(options: JobOptions, name: str) -> None:
    """Every per-call option that is set, checked on its own (InvalidJob naming the job)."""
    label = f"Job {name}:"
    if options.queue is not None:
        check_queue(label, options.queue)
    if options.priority is not None:
        check_int(f"{label} priority", options.priority, PRIORITY_MIN, PRIORITY_MAX)
    if options.max_attempts is not None:
        check_int(f"{label} max_attempts", options.max_attempts, 1, MAX_ATTEMPTS_MAX)
    if options.timeout is not None:
        check_seconds(f"{label} timeout", options.timeout)
    run_at(options, name, dt.datetime.now(dt.UTC))
    if options.depends_on is not None:
        check_depends_on(label, options.depends_on)
    if options.on_dependency_failure is not None:
        check_on_dependency_failure(label, options.on_dependency_failure)


def check_depends_on(label: str, value: Any, database: str | None = None) -> tuple[int | str, ...]:
    """The jobs a call depends on, as job ids (from handles or ints) and workflow step names, each once. A
    handle written to another database than `database` (the one this job goes to) is refused: its id
    would name an unrelated job there."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        raise InvalidJob(f"{label} depends_on must be a list of job handles, job ids or workflow step names, "
                         f"got {short_repr(value)}.")
    items: dict[int | str, None] = {}  # insertion-ordered, each once (a list's `in` made 60,000 ids take 52 s)
    for item in value:
        if isinstance(item, JobHandle):
            if database is not None and item.database and item.database != database:
                raise InvalidJob(f"{label} depends_on: job {item.id} was enqueued on database {item.database!r}, "
                                 f"and this job goes to {database!r}, where that id names another job or none.")
            item = item.id
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise InvalidJob(f"{label} depends_on items must be job handles, job ids or workflow step names, "
                             f"got {short_repr(item)}.")
        if isinstance(item, int) and not 1 <= item <= JOB_ID_MAX:
            raise InvalidJob(f"{label} depends_on: job id {item} is out of range (1 to {JOB_ID_MAX}).")
        if isinstance(item, str) and not item:
            raise InvalidJob(f"{label} depends_on: a workflow step name must not be empty.")
        items[item] = None
    if len(items) > DEPENDENCIES_MAX:
        raise InvalidJob(f"{label} depends_on lists {len(items)} jobs, over the limit of {DEPENDENCIES_MAX}.")
    return tuple(items)


def check_on_dependency_failure(label: str, value: Any) -> str:
    if value not in ON_DEPENDENCY_FAILURE:
        raise InvalidJob(f"{label} on_dependency_failure must be 'cancel' or 'run', got {short_repr(value)}.")
    return str(value)


def run_at(options: JobOptions, name: str, now: dt.datetime) -> dt.datetime | None:
    """When the job may start, in UTC (None: now), from options.run_at or options.delay."""
    if options.run_at is not None and options.delay is not None:
        raise InvalidJob(f"Job {name}: give run_at or delay, not both.")
    if options.run_at is not None:
        return _aware_utc(options.run_at, name)
    if options.delay is None:
        return None
    delay = options.delay.total_seconds() if isinstance(options.delay, dt.timedelta) else options.delay
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidJob(f"Job {name}: delay must be seconds >= 0 or a timedelta, got {short_repr(options.delay)}.")
    if not _finite(delay):
        raise InvalidJob(f"Job {name}: delay must be a finite number of seconds, got {short_repr(options.delay)}.")
    if delay < 0:
        raise InvalidJob(f"Job {name}: delay must be seconds >= 0 or a timedelta, got {short_repr(options.delay)}.")
    if delay == 0:
        return None
    if delay >= (RUN_AT_MAX - now).total_seconds():
        raise InvalidJob(
            f"Job {name}: delay {short_repr(options.delay)} is too far in the future: a job must start before "
            f"{RUN_AT_MAX.date().isoformat()} UTC."
        )
    return now + dt.timedelta(seconds=delay)


def _aware_utc(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise InvalidJob(f"Job {name}: run_at must be a datetime, got {type(value).__name__}.")
    try:
        offset = value.utcoffset()
    except Exception as exc:  # a tzinfo whose utcoffset() raises or returns something odd
        raise InvalidJob(
            f"Job {name}: run_at's time zone ({type(value.tzinfo).__qualname__}) fails: {exc!r}."
        ) from None
    if offset is None:
        raise InvalidJob(
            f"Job {name}: run_at {value.isoformat()} is a naive datetime; "
            "pass an aware one (django.utils.timezone.now() + ...)."
        )
    try:
        utc = value.astimezone(dt.UTC)
    except (OverflowError, ValueError):  # e.g. 9999-12-31 23:00 at UTC-5 is in the year 10000
        utc = None
    if utc is None or not RUN_AT_MIN <= utc < RUN_AT_MAX:
        raise InvalidJob(
            f"Job {name}: run_at {value.isoformat()} is out of range: a job must start from "
            f"{RUN_AT_MIN.date().isoformat()} to before {RUN_AT_MAX.date().isoformat()} UTC."
        )
    # A plain datetime in UTC: PostgreSQL takes no offset beyond +-15:59 and no tzinfo subclass quirks.
    return dt.datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
                       tzinfo=dt.UTC)


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)  # math.isfinite(10**400) would overflow


def _days(seconds: float) -> str:
    days = seconds / (24 * 3600)
    return f"{days:.0f} days"
