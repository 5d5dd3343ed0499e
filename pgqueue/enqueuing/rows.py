"""The one place a new job's row is made: a call's options, the job's and the settings merged and checked into
a NewJob (resolve, prepare), and the one builder of the insert statements' parameters from NewJobs. Every
producer goes through here: the enqueue API, @job, batches and their callbacks, workflows, schedule ticks,
the outbox relay and replay."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from pgqueue.conf import MAX_ATTEMPTS_MAX, Settings, get_settings
from pgqueue.enqueuing import guardrails, registry
from pgqueue.enqueuing.flow import NO_FLOW, Flow, FlowPolicy, policy
from pgqueue.enqueuing.options import (
    NO_OPTIONS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    JobCall,
    JobOptions,
    JobSpec,
    check_depends_on,
    check_int,
    check_on_dependency_failure,
    check_queue,
    check_seconds,
    run_at,
)
from pgqueue.exceptions import InvalidJob, NotSerializable, PayloadTooLarge, UnknownQueue
from pgqueue.payload import Unstorable, dumps
from pgqueue.text import a_type

# Deepest nesting of an argument value: deeper JSON is valid, but reading it back (the worker's
# json.loads, the admin's display) recurses once per level and would hit Python's recursion limit.
MAX_JSON_DEPTH = 100


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job about to be inserted: what its row gets, merged and checked (insert_params makes the statement's
    parameters from it). A column a producer does not set keeps its default here and in the table."""

    queue: str
    task: str
    args: str  # JSON text
    kwargs: str  # JSON text
    priority: int
    run_at: dt.datetime | None  # None: now
    max_attempts: int
    timeout: float | None
    flow: Flow = NO_FLOW
    batch_id: int | None = None
    depends_on: tuple[int | str, ...] = ()  # job ids (and workflow step names, until resolved to ids)
    on_dependency_failure: str = "cancel"
    replay_of: int | None = None  # the dead or cancelled job this one replays
    callback_of: int | None = None  # the batch whose callback this job is
    # set by the insert of linked jobs (pgqueue.enqueuing.insert): dependencies not finished yet, whether jobs
    # of the same insert depend on it, and why it is cancelled at once (a dependency already failed)
    waits: int | None = None
    has_dependents: bool | None = None
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A job's options merged with a call's and the settings, checked once per (job, options) pair."""

    queue: str
    priority: int
    run_at: dt.datetime | None
    max_attempts: int
    timeout: float | None
    flow: FlowPolicy
    depends_on: tuple[int | str, ...] = ()
    on_dependency_failure: str = "cancel"


def flow_policy(job: JobSpec, options: JobOptions) -> FlowPolicy:
    """A job's flow control merged with a call's options."""
    return policy(
        job, unique=options.unique, unique_key=options.unique_key, idempotency_key=options.idempotency_key,
        concurrency_key=options.concurrency_key, concurrency_limit=options.concurrency_limit,
        ordering_key=options.ordering_key, rate_key=options.rate_key, rate_limit=options.rate_limit,
        rate_window=options.rate_window,
    )


# A job's options merged with the settings, for calls without options of their own (the common case:
# fn.enqueue(...)): nothing in them depends on the time, so they are checked once per job and settings.
_defaults: dict[int, tuple[Any, Settings, Resolved]] = {}


def defaults(job: JobSpec, settings: Settings) -> Resolved:
    """The resolved options of a call of `job` without options of its own, checked once per job and settings."""
    cached = _defaults.get(id(job))
    if cached is not None and cached[0] is job and cached[1] is settings and registry.is_registered(job):
        return cached[2]
    options = resolve(job, NO_OPTIONS, settings, dt.datetime.now(dt.UTC))
    _defaults[id(job)] = (job, settings, options)
    return options


def resolve(job: JobSpec, opts: JobOptions, settings: Settings, now: dt.datetime) -> Resolved:
    """A call's options over the job's over the settings, each checked (InvalidJob naming the job)."""
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
    depends_on = (check_depends_on(label, opts.depends_on, settings.DATABASE) if opts.depends_on is not None
                  else ())
    on_failure = check_on_dependency_failure(label, _first(opts.on_dependency_failure, job.on_dependency_failure))
    return Resolved(queue=queue, priority=priority, run_at=run_at(opts, job.name, now),
                    max_attempts=max_attempts, timeout=timeout, flow=flow_policy(job, opts),
                    depends_on=depends_on, on_dependency_failure=on_failure)


def prepare(call: JobCall, options: Resolved, settings: Settings) -> NewJob:
    """The NewJob of one call with its resolved options: arguments checked against the function and stored
    as JSON, within MAX_PAYLOAD_BYTES (a refusal is reported), flow keys derived from the arguments."""
    job = call.job
    job.check_arguments(call.args, call.kwargs)
    args = to_json(list(call.args), job.name, "positional arguments") if call.args else "[]"
    kwargs = to_json(call.kwargs, job.name, "keyword arguments") if call.kwargs else "{}"
    # A character is at most 4 bytes in UTF-8: count the bytes only when the text could be over the limit.
    if 4 * (len(args) + len(kwargs)) > settings.MAX_PAYLOAD_BYTES and (
        (size := len(args.encode()) + len(kwargs.encode())) > settings.MAX_PAYLOAD_BYTES
    ):
        message = (f"Job {job.name}: arguments are {size} bytes as JSON, over "
                   f"PGQUEUE['MAX_PAYLOAD_BYTES'] = {settings.MAX_PAYLOAD_BYTES}. Pass an id and load the data in "
                   "the job.")
        guardrails.refused(settings, queue=options.queue, task=job.name, reason="payload_too_large", jobs=1,
                           message=message)
        raise PayloadTooLarge(message)
    return NewJob(
        queue=options.queue, task=job.name, args=args, kwargs=kwargs, priority=options.priority,
        run_at=options.run_at, max_attempts=options.max_attempts, timeout=options.timeout,
        flow=NO_FLOW if options.flow.empty else options.flow.flow(job, call.args, call.kwargs),
        depends_on=options.depends_on, on_dependency_failure=options.on_dependency_failure,
    )


def _first(*values: Any) -> Any:
    """The first value that is not None (0 and "" count as given, so they are validated)."""
    return next((v for v in values if v is not None), None)


def to_json(value: list[Any] | dict[str, Any], name: str, what: str) -> str:
    """A job's positional or keyword arguments as JSON text (NotSerializable naming the job if they cannot be)."""
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


def callbacks(batch_id: int, fired: Sequence[Sequence[Any]]) -> tuple[list[NewJob], list[int]]:
    """The NewJobs of a batch's callbacks that batch_settle fired, and the ids it reserved for them: each
    from the spec callback_spec wrote (already merged and checked when the batch was opened)."""
    jobs = [NewJob(queue=queue, task=task, args=args, kwargs=kwargs, priority=priority, run_at=None,
                   max_attempts=max_attempts, timeout=timeout, callback_of=batch_id)
            for _id, queue, task, args, kwargs, priority, max_attempts, timeout in fired]
    return jobs, [int(f[0]) for f in fired]


def replay_of(source: Any) -> NewJob:
    """The NewJob of a replay of a dead or cancelled job (a db.Replayable): its arguments and options as
    stored, its semaphore and rate key kept (their limits as they are now), its uniqueness and idempotency
    keys not."""
    flow = NO_FLOW if source.concurrency_key is None and source.rate_key is None else Flow(
        concurrency_key=source.concurrency_key, concurrency_hold=source.concurrency_hold, rate_key=source.rate_key)
    return NewJob(queue=source.queue, task=source.task, args=source.args, kwargs=source.kwargs,
                  priority=source.priority, run_at=None, max_attempts=source.max_attempts, timeout=source.timeout,
                  flow=flow, replay_of=source.id)


def callback_spec(call: Any, what: str) -> str:
    """A batch's callback (on_success=fn.call(...)), checked as an enqueue of it would be, as the JSON spec
    the batch keeps until its moment comes (then batch_settle returns it and callbacks() makes its NewJob)."""
    if not isinstance(call, JobCall):
        raise InvalidJob(f"Batch {what} must be a call built with fn.call(...), got {a_type(call)}.")
    settings = get_settings()
    options = (defaults(call.job, settings) if call.options is NO_OPTIONS
               else resolve(call.job, call.options, settings, dt.datetime.now(dt.UTC)))
    row = prepare(call, options, settings)
    if row.flow is not NO_FLOW or row.depends_on or row.run_at is not None:
        raise InvalidJob(
            f"Batch {what} ({row.task}): a callback is enqueued when its moment comes; it takes no run_at or "
            "delay, uniqueness, idempotency, concurrency or rate keys, or dependencies."
        )
    return (f'{{"queue": {dumps(row.queue)}, "task": {dumps(row.task)}, "args": {row.args}, '
            f'"kwargs": {row.kwargs}, "priority": {row.priority}, "max_attempts": {row.max_attempts}, '
            f'"timeout": {dumps(row.timeout)}}}')


# -- the parameters of the insert statements ------------------------------------------------------------

# job_insert_many's array parameters, each from the NewJob field (or its flow's field) of the same name
_COLUMNS = (
    ("queues", "queue"), ("tasks", "task"), ("args", "args"), ("kwargs", "kwargs"), ("priorities", "priority"),
    ("run_ats", "run_at"), ("max_attempts", "max_attempts"), ("timeouts", "timeout"),
)
_FLOW_COLUMNS = (
    ("lock_keys", "lock_key"), ("idempotency_keys", "idempotency_key"), ("concurrency_keys", "concurrency_key"),
    ("concurrency_limits", "concurrency_limit"), ("concurrency_holds", "concurrency_hold"),
    ("rate_keys", "rate_key"), ("rate_limits", "rate_limit"), ("rate_windows", "rate_window"),
)
_LINK_COLUMNS = (
    ("batch_ids", "batch_id"), ("waits", "waits"), ("has_dependents", "has_dependents"),
    ("cancel_reasons", "cancel_reason"), ("replay_ofs", "replay_of"), ("callback_ofs", "callback_of"),
)
assert {f for _, f in _COLUMNS + _LINK_COLUMNS} <= {f.name for f in fields(NewJob)}
assert {f for _, f in _FLOW_COLUMNS} <= {f.name for f in fields(Flow)}


def insert_params(rows: Sequence[NewJob], ids: Sequence[int | None], channel: str) -> dict[str, Any]:
    """job_insert_many's parameters: one array per column (None ids take the next from the sequence). Rows
    without flow control or links share one list of NULLs for those columns (the bulk enqueue's case)."""
    params: dict[str, Any] = {"ids": ids, "channel": channel}
    for param, field in _COLUMNS:
        params[param] = [getattr(r, field) for r in rows]
    none: list[Any] = [None] * len(rows)
    flowing = any(r.flow is not NO_FLOW for r in rows)
    for param, field in _FLOW_COLUMNS:
        params[param] = [getattr(r.flow, field) for r in rows] if flowing else none
    linked = any(r.batch_id is not None or r.waits is not None or r.has_dependents is not None
                 or r.cancel_reason is not None or r.replay_of is not None or r.callback_of is not None for r in rows)
    for param, field in _LINK_COLUMNS:
        params[param] = [getattr(r, field) for r in rows] if linked else none
    return params


def insert_one_params(row: NewJob, job_id: int | None, channel: str) -> dict[str, Any]:
    """job_insert's parameters: one job without flow control or links, with a reserved id or a run_at."""
    return {"id": job_id, "run_at": row.run_at, **insert_ready_params(row, channel)}


def insert_ready_params(row: NewJob, channel: str) -> dict[str, Any]:
    """job_insert_ready's parameters: one job without flow control or links that is ready now."""
    return {"queue": row.queue, "task": row.task, "args": row.args, "kwargs": row.kwargs, "priority": row.priority,
            "max_attempts": row.max_attempts, "timeout": row.timeout, "channel": channel}
