"""The enqueue path: validate -> JSON -> one named INSERT in the caller's transaction (pgqueue.enqueue is the function, so the module has this name)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction

from pgqueue import db, events, registry
from pgqueue.conf import Settings, check_queue_name, get_settings
from pgqueue.exceptions import (
    InvalidJob,
    JobNotFound,
    NotSerializable,
    PayloadTooLarge,
    UnknownQueue,
)
from pgqueue.registry import JobCall, JobOptions


@dataclass(frozen=True, slots=True)
class JobHandle:
    """What enqueue returns: the job's id (known before commit) and where it went."""

    id: int
    task: str
    queue: str

    def fetch(self) -> Any:
        """The job row (a pgqueue.models.Job) as it is now."""
        from pgqueue.models import Job

        try:
            return Job.objects.using(get_settings().DATABASE).get(pk=self.id)
        except Job.DoesNotExist:
            raise JobNotFound(f"Job {self.id} does not exist (not committed yet, rolled back, or pruned).") from None

    @property
    def state(self) -> str:
        return str(self.fetch().state)


@dataclass(frozen=True, slots=True)
class _Row:
    queue: str
    task: str
    args: str
    kwargs: str
    priority: int
    run_at: dt.datetime | None
    max_attempts: int
    timeout: float | None


def enqueue(task: str, *args: Any, **kwargs: Any) -> JobHandle:
    """Enqueue a registered job by its dotted path: enqueue("myapp.jobs.send", 42)."""
    return enqueue_calls([registry.get(task).call(*args, **kwargs)])[0]


def enqueue_many(calls: Iterable[JobCall]) -> list[JobHandle]:
    """Enqueue many calls (fn.call(...) or fn.options(...).call(...)) in one INSERT."""
    return enqueue_calls(list(calls))


def enqueue_calls(calls: Sequence[JobCall]) -> list[JobHandle]:
    """Validate every call first (nothing is written if one is bad), then insert them all."""
    if not calls:
        return []
    settings = get_settings()
    rows = [_prepare(call, settings) for call in calls]
    alias = settings.DATABASE
    if not connections[alias].in_atomic_block:
        caller = _caller_transaction(alias)
        if caller is not None:
            return _defer_to_commit(rows, alias, caller, settings)
    ids = _insert(rows, [None] * len(rows), alias, settings)
    return _handles(rows, ids)


def _caller_transaction(alias: str) -> str | None:
    """The alias of an open transaction on another database, if the caller is in one."""
    for conn in connections.all(initialized_only=True):
        if conn.alias != alias and conn.in_atomic_block:
            return conn.alias
    return None


def _defer_to_commit(rows: list[_Row], alias: str, caller: str, settings: Settings) -> list[JobHandle]:
    """Reserve ids now; insert when the caller's transaction on `caller` commits (never if it rolls back)."""
    ids = [row[0] for row in db.run_in_django("job_reserve_ids", using=alias, count=len(rows))]
    transaction.on_commit(lambda: _insert(rows, ids, alias, settings), using=caller)
    return _handles(rows, ids)


def _insert(rows: list[_Row], ids: Sequence[int | None], alias: str, settings: Settings) -> list[int]:
    if len(rows) == 1:
        r = rows[0]
        result = db.run_in_django(
            "job_insert", using=alias, id=ids[0], queue=r.queue, task=r.task, args=r.args, kwargs=r.kwargs,
            priority=r.priority, run_at=r.run_at, max_attempts=r.max_attempts, timeout=r.timeout,
            channel=settings.NOTIFY_CHANNEL,
        )
    else:
        result = _insert_many(rows, ids, alias, settings)
    inserted = [row[0] for row in result]
    events.emit("job_enqueued", count=len(inserted), queues=sorted({r.queue for r in rows}))
    return inserted


def _insert_many(
    rows: list[_Row], ids: Sequence[int | None], alias: str, settings: Settings
) -> list[tuple[Any, ...]]:
    return db.run_in_django(
        "job_insert_many",
        using=alias,
        ids=ids,
        queues=[r.queue for r in rows],
        tasks=[r.task for r in rows],
        args=[r.args for r in rows],
        kwargs=[r.kwargs for r in rows],
        priorities=[r.priority for r in rows],
        run_ats=[r.run_at for r in rows],
        max_attempts=[r.max_attempts for r in rows],
        timeouts=[r.timeout for r in rows],
        replay_ofs=[None] * len(rows),
        channel=settings.NOTIFY_CHANNEL,
    )


def _handles(rows: list[_Row], ids: Sequence[int]) -> list[JobHandle]:
    return [JobHandle(id=int(i), task=r.task, queue=r.queue) for r, i in zip(rows, ids, strict=True)]


def _prepare(call: JobCall, settings: Settings) -> _Row:
    job, opts = call.job, call.options
    queue = check_queue_name(_first(opts.queue, job.queue, settings.DEFAULT_QUEUE))
    if settings.QUEUES is not None and queue not in settings.QUEUES:
        raise UnknownQueue(
            f"Queue {queue!r} is not declared in PGQUEUE['QUEUES'] ({', '.join(settings.QUEUES)})."
        )
    priority = job.priority if opts.priority is None else opts.priority
    registry._check_int("priority", priority, registry.PRIORITY_MIN, registry.PRIORITY_MAX)
    max_attempts = _first(opts.max_attempts, job.max_attempts, settings.DEFAULT_MAX_ATTEMPTS)
    registry._check_int("max_attempts", max_attempts, 1, 10_000)
    timeout = _first(opts.timeout, job.timeout, settings.DEFAULT_TIMEOUT)
    registry._check_seconds("timeout", timeout)
    args = _to_json(list(call.args), job.name, "positional arguments")
    kwargs = _to_json(call.kwargs, job.name, "keyword arguments")
    size = len(args.encode()) + len(kwargs.encode())
    if size > settings.MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"Job {job.name}: arguments are {size} bytes as JSON, over "
            f"PGQUEUE['MAX_PAYLOAD_BYTES'] = {settings.MAX_PAYLOAD_BYTES}. Pass an id and load the data in the job."
        )
    return _Row(
        queue=queue, task=job.name, args=args, kwargs=kwargs, priority=priority,
        run_at=_run_at(opts, job.name), max_attempts=max_attempts, timeout=timeout,
    )


def _first(*values: Any) -> Any:
    """The first value that is not None (0 and "" count as given, so they are validated)."""
    return next((v for v in values if v is not None), None)


def _run_at(opts: JobOptions, name: str) -> dt.datetime | None:
    if opts.run_at is not None and opts.delay is not None:
        raise InvalidJob(f"Job {name}: give run_at or delay, not both.")
    if opts.run_at is not None:
        if not isinstance(opts.run_at, dt.datetime):
            raise InvalidJob(f"Job {name}: run_at must be a datetime, got {type(opts.run_at).__name__}.")
        if opts.run_at.tzinfo is None or opts.run_at.utcoffset() is None:
            raise InvalidJob(
                f"Job {name}: run_at {opts.run_at.isoformat()} is a naive datetime; "
                "pass an aware one (django.utils.timezone.now() + ...)."
            )
        return opts.run_at
    if opts.delay is not None:
        delay = opts.delay.total_seconds() if isinstance(opts.delay, dt.timedelta) else opts.delay
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0 or delay != delay:
            raise InvalidJob(f"Job {name}: delay must be seconds >= 0 or a timedelta, got {opts.delay!r}.")
        if delay > 0:
            return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
    return None


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_text: str) -> bool:
    """True if JSON text encodes a NUL character (which jsonb rejects); an escaped backslash is not one."""
    return "\\u0000" in json_text and _NUL_ESCAPE.search(json_text) is not None


def _to_json(value: Any, name: str, what: str) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(
            f"Job {name}: {what} cannot be stored as JSON ({exc}). Pass plain values "
            "(str, int, float, bool, None, list, dict), e.g. an id instead of a model instance."
        ) from None
    if has_nul(text):
        raise NotSerializable(f"Job {name}: {what} contain a NUL character, which PostgreSQL JSON cannot store.")
    return text
