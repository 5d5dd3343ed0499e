"""The enqueue path: validate -> JSON -> one named INSERT in the caller's transaction (pgqueue.enqueue is the function, so the module has this name)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError, connections, transaction

from pgqueue import db, events, registry
from pgqueue.conf import MAX_ATTEMPTS_MAX, Settings, get_settings
from pgqueue.exceptions import (
    InvalidJob,
    JobNotFound,
    NotSerializable,
    PayloadTooLarge,
    UnknownQueue,
)
from pgqueue.options import (
    NO_OPTIONS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    JobCall,
    check_int,
    check_queue,
    check_seconds,
    run_at,
)
from pgqueue.payload import Unstorable, dumps

logger = logging.getLogger("pgqueue.enqueue")

# Deepest nesting of an argument value: deeper JSON is valid, but reading it back (the worker's
# json.loads, the admin's display) recurses once per level and would hit Python's recursion limit.
MAX_JSON_DEPTH = 100


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


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A job's options merged with a call's and the settings, checked once per (job, options) pair."""

    queue: str
    priority: int
    run_at: dt.datetime | None
    max_attempts: int
    timeout: float | None


def enqueue(task: str, /, *args: Any, **kwargs: Any) -> JobHandle:
    """Enqueue a registered job by its name: enqueue("myapp.jobs.send", 42)."""
    return enqueue_calls([JobCall(job=registry.get(task), args=args, kwargs=kwargs)])[0]


def enqueue_many(calls: Iterable[JobCall]) -> list[JobHandle]:
    """Enqueue many calls (fn.call(...) or fn.options(...).call(...)) in one INSERT."""
    items = items_of(calls, "pgqueue.enqueue_many()")
    for index, item in enumerate(items):
        if not isinstance(item, JobCall):
            raise InvalidJob(
                f"pgqueue.enqueue_many() item {index} is {a_type(item)}, not a call; build calls with "
                "fn.call(...) or fn.options(...).call(...)."
            )
    return enqueue_calls(items)


def items_of(calls: Any, where: str) -> list[Any]:
    """The items of an enqueue_many() argument, refusing what is surely a mistake (one call, a string)."""
    if isinstance(calls, str | bytes | dict | JobCall) or not isinstance(calls, Iterable):
        raise InvalidJob(f"{where} takes a list (or another iterable) of calls, got {a_type(calls)}.")
    return list(calls)


def a_type(value: Any) -> str:
    """ "an int", "a dict": the type of value, for messages."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


# A job's options merged with the settings, for calls without options of their own (the common case:
# fn.enqueue(...)): nothing in them depends on the time, so they are checked once per job and settings.
_defaults: dict[int, tuple[Any, Settings, _Resolved]] = {}


def enqueue_calls(calls: Sequence[JobCall]) -> list[JobHandle]:
    """Validate every call first (nothing is written if one is bad), then insert them all."""
    if not calls:
        return []
    settings = get_settings()
    now: dt.datetime | None = None
    resolved: dict[tuple[int, int], _Resolved] = {}
    rows = []
    for call in calls:
        options = _cached_defaults(call, settings)
        if options is None:
            key = (id(call.job), id(call.options))
            options = resolved.get(key)
            if options is None:
                now = now or dt.datetime.now(dt.UTC)
                options = resolved[key] = _resolve(call, settings, now)
        rows.append(_prepare(call, options, settings))
    alias = settings.DATABASE
    if len(connections.settings) > 1 and not connections[alias].in_atomic_block:
        caller = _caller_transaction(alias)
        if caller is not None:
            return _defer_to_commit(rows, alias, caller, settings)
    ids = _insert(rows, [None] * len(rows), alias, settings)
    return _handles(rows, ids)


def _cached_defaults(call: JobCall, settings: Settings) -> _Resolved | None:
    """The resolved options of a call without options of its own, checked once per job and settings."""
    if call.options is not NO_OPTIONS:
        return None
    job = call.job
    cached = _defaults.get(id(job))
    if cached is not None and cached[0] is job and cached[1] is settings and registry.is_registered(job):
        return cached[2]
    options = _resolve(call, settings, dt.datetime.now(dt.UTC))
    _defaults[id(job)] = (job, settings, options)
    return options


def _resolve(call: JobCall, settings: Settings, now: dt.datetime) -> _Resolved:
    job, opts = call.job, call.options
    if not registry.is_registered(job):
        raise InvalidJob(
            f"{job!r:.80} is not a registered job (or a later @job replaced it): build calls with "
            "fn.call(...) from a function decorated with @pgqueue.job."
        )
    label = f"Job {job.name}:"
    queue = check_queue(label, _first(opts.queue, job.queue, settings.DEFAULT_QUEUE))
    if settings.QUEUES is not None and queue not in settings.QUEUES:
        raise UnknownQueue(
            f"Queue {queue!r} is not declared in PGQUEUE['QUEUES'] ({', '.join(settings.QUEUES)})."
        )
    priority = check_int(f"{label} priority", _first(opts.priority, job.priority), PRIORITY_MIN, PRIORITY_MAX)
    max_attempts = check_int(f"{label} max_attempts", _first(opts.max_attempts, job.max_attempts,
                                                            settings.DEFAULT_MAX_ATTEMPTS), 1, MAX_ATTEMPTS_MAX)
    timeout = _first(opts.timeout, job.timeout, settings.DEFAULT_TIMEOUT)
    if timeout is not None:
        timeout = float(check_seconds(f"{label} timeout", timeout))
    return _Resolved(queue=queue, priority=priority, run_at=run_at(opts, job.name, now),
                     max_attempts=max_attempts, timeout=timeout)


def _prepare(call: JobCall, options: _Resolved, settings: Settings) -> _Row:
    job = call.job
    job.check_arguments(call.args, call.kwargs)
    args = _to_json(list(call.args), job.name, "positional arguments") if call.args else "[]"
    kwargs = _to_json(call.kwargs, job.name, "keyword arguments") if call.kwargs else "{}"
    # A character is at most 4 bytes in UTF-8: count the bytes only when the text could be over the limit.
    if 4 * (len(args) + len(kwargs)) > settings.MAX_PAYLOAD_BYTES and (
        (size := len(args.encode()) + len(kwargs.encode())) > settings.MAX_PAYLOAD_BYTES
    ):
        raise PayloadTooLarge(
            f"Job {job.name}: arguments are {size} bytes as JSON, over "
            f"PGQUEUE['MAX_PAYLOAD_BYTES'] = {settings.MAX_PAYLOAD_BYTES}. Pass an id and load the data in the job."
        )
    return _Row(
        queue=options.queue, task=job.name, args=args, kwargs=kwargs, priority=options.priority,
        run_at=options.run_at, max_attempts=options.max_attempts, timeout=options.timeout,
    )


def _first(*values: Any) -> Any:
    """The first value that is not None (0 and "" count as given, so they are validated)."""
    return next((v for v in values if v is not None), None)


def _to_json(value: list[Any] | dict[str, Any], name: str, what: str) -> str:
    try:
        text = dumps(value)
    except Unstorable as exc:
        raise NotSerializable(
            f"Job {name}: {what} cannot be stored as JSON ({exc}). Pass plain values "
            "(str, int, float, bool, None, list, dict), e.g. an id instead of a model instance."
        ) from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH + 1:  # fewer brackets cannot nest deeper
        depth = json_depth(text) - 1  # the list of positional arguments (or dict of keyword ones) not counted
        if depth > MAX_JSON_DEPTH:
            raise NotSerializable(
                f"Job {name}: {what} cannot be stored as JSON (a value is nested {depth} levels deep, over the "
                f"limit of {MAX_JSON_DEPTH}). Pass plain values, e.g. an id instead of a deep structure."
            )
    return text


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deep JSON text nests: 0 for a scalar, 1 for [1, 2] or {}, 2 for [[1]]."""
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _caller_transaction(alias: str) -> str | None:
    """The alias of an open transaction on another database, if the caller is in one."""
    for conn in connections.all(initialized_only=True):
        if conn.alias != alias and conn.in_atomic_block:
            return conn.alias
    return None


def _defer_to_commit(rows: list[_Row], alias: str, caller: str, settings: Settings) -> list[JobHandle]:
    """Reserve ids now; insert when the caller's transaction on `caller` commits (never if it rolls back)."""
    ids = [row.id for row in db.run_in_django("job_reserve_ids", using=alias, count=len(rows))]
    transaction.on_commit(functools.partial(_insert_after_commit, rows, ids, alias, caller, settings), using=caller)
    return _handles(rows, ids)


def _insert_after_commit(rows: list[_Row], ids: list[int], alias: str, caller: str, settings: Settings) -> None:
    """The deferred insert, run by the commit on `caller`. If pgqueue's connection broke meanwhile (a restart,
    a killed backend), reconnect and insert once more; if that fails too, the jobs are lost: say so loudly."""
    try:
        try:
            _insert(rows, ids, alias, settings)
        except (OperationalError, InterfaceError):
            if not _reconnected(alias):
                raise
            logger.warning(
                "The connection to database %r broke before the transaction on %r committed; reconnected to "
                "insert %d deferred job(s).", alias, caller, len(rows),
            )
            _insert(rows, ids, alias, settings)
    except Exception:
        logger.error(
            "Jobs enqueued in a transaction on database %r, which committed, could not be inserted into %r "
            "and are lost: %s.", caller, alias, ", ".join(f"{i} {row.task}" for i, row in zip(ids, rows, strict=True)),
            exc_info=True,
        )
        raise


def _reconnected(alias: str) -> bool:
    """Close Django's connection on `alias` if it is broken (and not inside a transaction), so the next
    statement opens a new one. False if it is fine: then the statement itself was the problem."""
    conn = connections[alias]
    if conn.in_atomic_block or conn.is_usable():
        return False
    conn.close()
    return True


def _insert(rows: list[_Row], ids: Sequence[int | None], alias: str, settings: Settings) -> list[int]:
    if len(rows) == 1 and ids[0] is None and rows[0].run_at is None:
        r = rows[0]  # ready now: the web view's enqueue
        result = db.run_in_django(
            "job_insert_ready", using=alias, queue=r.queue, task=r.task, args=r.args, kwargs=r.kwargs,
            priority=r.priority, max_attempts=r.max_attempts, timeout=r.timeout, channel=settings.NOTIFY_CHANNEL,
        )
    elif len(rows) == 1:
        r = rows[0]
        result = db.run_in_django(
            "job_insert", using=alias, id=ids[0], queue=r.queue, task=r.task, args=r.args, kwargs=r.kwargs,
            priority=r.priority, run_at=r.run_at, max_attempts=r.max_attempts, timeout=r.timeout,
            channel=settings.NOTIFY_CHANNEL,
        )
    else:
        result = db.run_in_django(
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
    inserted = [row.id for row in result]
    if events.has_subscribers("job_enqueued"):
        events.emit("job_enqueued", count=len(inserted), queues=sorted({r.queue for r in rows}))
    return inserted


def _handles(rows: list[_Row], ids: Sequence[int]) -> list[JobHandle]:
    return [JobHandle(id=int(i), task=r.task, queue=r.queue) for r, i in zip(rows, ids, strict=True)]
