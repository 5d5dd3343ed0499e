"""The enqueue path: validate -> JSON -> one named INSERT in the caller's transaction (pgqueue.enqueue is the function, so the module has this name)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import InterfaceError, OperationalError, connections, transaction

from pgqueue import batches, db, events, guardrails, registry, settle
from pgqueue.conf import MAX_ATTEMPTS_MAX, Settings, get_settings
from pgqueue.exceptions import (
    InvalidJob,
    JobNotFound,
    JobNotUnique,
    NotSerializable,
    PayloadTooLarge,
    UnknownQueue,
)
from pgqueue.flow import NO_FLOW, Flow, FlowPolicy, OnConflict
from pgqueue.lifecycle import dependency_failed
from pgqueue.options import (
    NO_OPTIONS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    JobCall,
    check_depends_on,
    check_int,
    check_on_dependency_failure,
    check_queue,
    check_seconds,
    run_at,
)
from pgqueue.payload import Unstorable, dumps
from pgqueue.types import SettledDependency

logger = logging.getLogger("pgqueue.enqueue")

# Deepest nesting of an argument value: deeper JSON is valid, but reading it back (the worker's
# json.loads, the admin's display) recurses once per level and would hit Python's recursion limit.
MAX_JSON_DEPTH = 100


@dataclass(frozen=True, slots=True)
class JobHandle:
    """What enqueue returns: the job's id (known before commit) and where it went. With flow control the
    job may be one that was already there: created is False (a uniqueness or idempotency key was held
    by it), and replaced is True when this call's arguments and run_at replaced its own."""

    id: int
    task: str
    queue: str
    created: bool = True
    replaced: bool = False
    database: str = ""  # the alias it was written to ("": pgqueue's database, PGQUEUE['DATABASE'])

    def fetch(self) -> Any:
        """The job row (a pgqueue.models.Job) as it is now."""
        from pgqueue.models import Job

        try:
            return Job.objects.using(self.database or get_settings().DATABASE).get(pk=self.id)
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
    flow: Flow = NO_FLOW
    batch_id: int | None = None
    depends_on: tuple[int | str, ...] = ()  # job ids (and workflow step names, until resolved to ids)
    on_dependency_failure: str = "cancel"


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A job's options merged with a call's and the settings, checked once per (job, options) pair."""

    queue: str
    priority: int
    run_at: dt.datetime | None
    max_attempts: int
    timeout: float | None
    flow: FlowPolicy
    depends_on: tuple[int | str, ...] = ()
    on_dependency_failure: str = "cancel"


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


def enqueue_calls(calls: Sequence[JobCall], *, steps: Sequence[str] | None = None) -> list[JobHandle]:
    """Validate every call first (nothing is written if one is bad), then insert them all. `steps`: the
    calls are the steps of a workflow with these names (pgqueue.workflows checked the graph), which
    depends_on may name."""
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
    if settings.ENQUEUE_RATE_LIMITS:  # every call is valid: now the guardrail, before anything is written
        guardrails.check_rate(((r.queue, r.task) for r in rows), settings)
    alias = settings.DATABASE
    batch_id = batches.current()
    if batch_id is not None:
        rows = [replace(row, batch_id=batch_id) for row in rows]
    locks = any(r.flow.lock_key is not None or r.flow.idempotency_key is not None for r in rows)
    linked = batch_id is not None or steps is not None or any(r.depends_on for r in rows)
    if len(connections.settings) > 1 and not connections[alias].in_atomic_block:
        caller = _caller_transaction(alias)
        if caller is not None:
            if locks or linked:
                what = "Uniqueness and idempotency keys are checked" if locks else "Batches and dependencies are written"
                raise InvalidJob(
                    f"{what} in the transaction that enqueues, on database {alias!r}; this call is inside a "
                    f"transaction on {caller!r} only. Open transaction.atomic(using={alias!r}) around the "
                    "enqueue too."
                )
            return _defer_to_commit(rows, alias, caller, settings)
    if steps is not None:
        return _enqueue_steps(rows, list(steps), alias, settings)
    if locks:
        return _enqueue_with_locks(rows, alias, settings)
    ids = _insert(rows, [None] * len(rows), alias, settings)
    return _handles(rows, ids, alias)


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
    depends_on = (check_depends_on(label, opts.depends_on, settings.DATABASE) if opts.depends_on is not None
                  else ())
    on_failure = check_on_dependency_failure(label, _first(opts.on_dependency_failure, job.on_dependency_failure))
    return _Resolved(queue=queue, priority=priority, run_at=run_at(opts, job.name, now),
                     max_attempts=max_attempts, timeout=timeout, flow=job.flow_policy(opts),
                     depends_on=depends_on, on_dependency_failure=on_failure)


def _prepare(call: JobCall, options: _Resolved, settings: Settings) -> _Row:
    job = call.job
    job.check_arguments(call.args, call.kwargs)
    args = _to_json(list(call.args), job.name, "positional arguments") if call.args else "[]"
    kwargs = _to_json(call.kwargs, job.name, "keyword arguments") if call.kwargs else "{}"
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
    return _Row(
        queue=options.queue, task=job.name, args=args, kwargs=kwargs, priority=options.priority,
        run_at=options.run_at, max_attempts=options.max_attempts, timeout=options.timeout,
        flow=NO_FLOW if options.flow.empty else options.flow.flow(job, call.args, call.kwargs),
        depends_on=options.depends_on, on_dependency_failure=options.on_dependency_failure,
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
    return _handles(rows, ids, alias)


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


def _enqueue_with_locks(rows: list[_Row], alias: str, settings: Settings) -> list[JobHandle]:
    """Enqueue calls of which some take uniqueness locks or idempotency keys, all or nothing (one
    savepoint): take the keys (the lock table's unique index decides), insert the calls that got theirs,
    and apply each other call's on_conflict. A call whose key an earlier call of the same batch took
    conflicts with that call."""
    handles: list[JobHandle | None] = [None] * len(rows)
    first: dict[tuple[str, str], int] = {}
    duplicates: dict[int, int] = {}  # index -> the earlier call of this batch holding one of its keys
    lock_input: dict[str, list[Any]] = {"calls": [], "kinds": [], "keys": [], "untils": [], "windows": []}
    for index, row in enumerate(rows):
        keys = _lock_keys(row.flow)
        earlier = next((first[k] for k in keys if k in first), None)
        if earlier is not None:
            duplicates[index] = earlier
            continue
        for kind, key in keys:
            first[(kind, key)] = index
            idempotent = kind == "idempotency"
            lock_input["calls"].append(index)
            lock_input["kinds"].append(kind)
            lock_input["keys"].append(key)
            lock_input["untils"].append("window" if idempotent else row.flow.until.value)
            lock_input["windows"].append(settings.IDEMPOTENCY_SECONDS if idempotent else row.flow.window)
    for index, earlier in duplicates.items():  # settled before any SQL: a reject writes nothing
        if _is_idempotent_repeat(rows[index], rows[earlier]):
            continue
        if rows[index].flow.on_conflict is OnConflict.REJECT:
            key = rows[index].flow.lock_key or ""
            raise JobNotUnique(
                f"Job {rows[index].task}: uniqueness key {key!r} is taken by call {earlier} of the same batch.",
                key=key, job_id=None,
            )
        if rows[index].flow.on_conflict is OnConflict.REPLACE:
            rows[earlier] = replace(rows[earlier], args=rows[index].args, kwargs=rows[index].kwargs,
                                    run_at=rows[index].run_at)
    ids: list[int | None] = [None] * len(rows)
    with transaction.atomic(using=alias):
        held: dict[int, tuple[int, str, str]] = {}  # index -> (holder id, kind, key) of a key it did not get
        taken = db.run_in_django("lock_take_many", using=alias, count=len(rows), **lock_input)
        for row in taken:  # ordered by call, idempotency key first: it decides before the uniqueness key
            ids[row.call] = row.id  # every call: ids in call order, whether it has keys or not
            if row.holder is not None and row.holder != row.id and row.call not in held:
                held[row.call] = (row.holder, str(row.kind), str(row.key))
        unused = [row for row in taken if row.call in held and row.holder == row.id]
        if unused:  # a call that is not inserted keeps none of its keys
            db.run_in_django("lock_drop_many", using=alias, kinds=[r.kind for r in unused],
                             keys=[r.key for r in unused], job_ids=[r.id for r in unused])
        rejected = [(i, h) for i, h in held.items() if h[1] == "unique" and rows[i].flow.on_conflict is OnConflict.REJECT]
        if rejected:
            index, (holder, _kind, key) = rejected[0]
            raise JobNotUnique(f"Job {rows[index].task}: uniqueness key {key!r} is held by job {holder}.",
                               key=key, job_id=holder)  # the savepoint rolls back the keys taken
        replacing = [i for i, h in held.items() if h[1] == "unique" and rows[i].flow.on_conflict is OnConflict.REPLACE]
        replaced = _replace_waiting(rows, replacing, [held[i][0] for i in replacing], alias, settings)
        new = [i for i in range(len(rows)) if i not in held and i not in duplicates]
        if new:
            _insert([rows[i] for i in new], [ids[i] for i in new], alias, settings)
    for index in new:
        job_id = ids[index]
        assert job_id is not None  # lock_take_many gave every call an id
        handles[index] = JobHandle(id=job_id, task=rows[index].task, queue=rows[index].queue, database=alias)
    for index, (holder, _kind, _key) in held.items():
        handles[index] = JobHandle(id=holder, task=rows[index].task, queue=rows[index].queue, created=False,
                                   replaced=holder in replaced, database=alias)
    for index, earlier in duplicates.items():
        source = handles[earlier]
        assert source is not None
        changed = rows[index].flow.on_conflict is OnConflict.REPLACE and not _is_idempotent_repeat(rows[index], rows[earlier])
        handles[index] = replace(source, created=False, replaced=changed)
    return [h for h in handles if h is not None]


def _lock_keys(flow: Flow) -> list[tuple[str, str]]:
    keys = [("idempotency", flow.idempotency_key)] if flow.idempotency_key is not None else []
    return keys + ([("unique", flow.lock_key)] if flow.lock_key is not None else [])


def _is_idempotent_repeat(row: _Row, earlier: _Row) -> bool:
    """The same idempotency key again: the earlier call's job stands, whatever the uniqueness policy."""
    return row.flow.idempotency_key is not None and row.flow.idempotency_key == earlier.flow.idempotency_key


def _replace_waiting(rows: list[_Row], indexes: list[int], holders: list[int], alias: str,
                     settings: Settings) -> set[int]:
    """on_conflict='replace': the holders that still wait get these calls' arguments and run_at."""
    if not indexes:
        return set()
    result = db.run_in_django(
        "job_replace_waiting_many", using=alias, ids=holders, args=[rows[i].args for i in indexes],
        kwargs=[rows[i].kwargs for i in indexes], run_ats=[rows[i].run_at for i in indexes],
        channel=settings.NOTIFY_CHANNEL,
    )
    return {row.id for row in result}


def callback_spec(call: Any, what: str) -> str:
    """A batch's callback (on_success=fn.call(...)), checked as an enqueue of it would be, as the JSON row
    batch_settle inserts when its moment comes."""
    if not isinstance(call, JobCall):
        raise InvalidJob(f"Batch {what} must be a call built with fn.call(...), got {a_type(call)}.")
    settings = get_settings()
    options = _cached_defaults(call, settings) or _resolve(call, settings, dt.datetime.now(dt.UTC))
    row = _prepare(call, options, settings)
    if row.flow is not NO_FLOW or row.depends_on or row.run_at is not None:
        raise InvalidJob(
            f"Batch {what} ({row.task}): a callback is enqueued when its moment comes; it takes no run_at or "
            "delay, uniqueness, idempotency, concurrency or rate keys, or dependencies."
        )
    return (f'{{"queue": {dumps(row.queue)}, "task": {dumps(row.task)}, "args": {row.args}, '
            f'"kwargs": {row.kwargs}, "priority": {row.priority}, "max_attempts": {row.max_attempts}, '
            f'"timeout": {dumps(row.timeout)}}}')


def _enqueue_steps(rows: list[_Row], steps: list[str], alias: str, settings: Settings) -> list[JobHandle]:
    """A workflow's steps: ids for all of them first, so that a step's depends_on can name another step."""
    if any(r.flow.lock_key is not None or r.flow.idempotency_key is not None for r in rows):
        raise InvalidJob("A workflow step cannot take a uniqueness or idempotency key: enqueue the workflow from "
                         "a job that holds the key instead.")
    with transaction.atomic(using=alias):
        ids = [row.id for row in db.run_in_django("job_reserve_ids", using=alias, count=len(rows))]
        by_step = dict(zip(steps, ids, strict=True))
        rows = [replace(r, depends_on=tuple(by_step[d] if isinstance(d, str) else d for d in r.depends_on))
                for r in rows]
        _insert(rows, ids, alias, settings)
    return _handles(rows, ids, alias)


def _insert_linked(rows: list[_Row], ids: Sequence[int | None], alias: str, settings: Settings) -> list[int]:
    """Insert jobs of which some join a batch or depend on other jobs, all or nothing: the batches must be
    open (they are held until this transaction ends), the jobs depended on must exist (they are locked,
    so none of them finishes unseen meanwhile). A job waits for those not finished yet ('waiting'), and
    is cancelled at once if one already failed (unless it runs anyway)."""
    for row in rows:
        named = next((d for d in row.depends_on if isinstance(d, str)), None)
        if named is not None:
            raise InvalidJob(f"Job {row.task}: depends_on names {named!r}, a workflow step, outside "
                             "pgqueue.enqueue_workflow(); give job handles or ids.")
    with transaction.atomic(using=alias):
        for batch_id in sorted({r.batch_id for r in rows if r.batch_id is not None}):
            batches.hold_open(batch_id, alias)
        fresh = iter(row.id for row in db.run_in_django(
            "job_reserve_ids", using=alias, count=sum(1 for i in ids if i is None))) if None in ids else iter(())
        job_ids: list[int] = [next(fresh) if i is None else i for i in ids]
        own = set(job_ids)
        external = sorted({d for r in rows for d in r.depends_on if d not in own})
        parents = {p.id: p for p in db.run_in_django("job_lock_parents", using=alias, ids=external)} if external else {}
        edges: dict[str, list[Any]] = {"job_ids": [], "depends_on_ids": [], "on_failures": [], "settled": []}
        waits: list[int] = []
        reasons: list[str | None] = []
        for row, job_id in zip(rows, job_ids, strict=True):
            pending, reason = 0, None
            for parent_id in sorted(row.depends_on):  # by id, as lifecycle.release names a failed one
                assert isinstance(parent_id, int)  # step names were resolved to ids
                if parent_id == job_id:
                    raise InvalidJob(f"Job {row.task}: it cannot depend on itself (job {job_id}).")
                parent = parents.get(parent_id)
                if parent_id not in own and parent is None:
                    raise InvalidJob(
                        f"Job {row.task}: depends on job {parent_id}, which does not exist (not committed yet, "
                        "rolled back, or pruned)."
                    )
                done = parent is not None and parent.state in settle.FINISHED
                if parent is None or not done:
                    pending += 1
                elif parent.state != "succeeded" and row.on_dependency_failure == "cancel" and reason is None:
                    reason = dependency_failed(SettledDependency(
                        job_id=job_id, parent_id=parent.id, parent_state=parent.state, parent_task=parent.task,
                        on_failure=row.on_dependency_failure))
                edges["job_ids"].append(job_id)
                edges["depends_on_ids"].append(parent_id)
                edges["on_failures"].append(row.on_dependency_failure)
                edges["settled"].append(done)
            waits.append(pending)
            reasons.append(reason)
        in_insert = {d for r in rows for d in r.depends_on if d in own}
        links: dict[str, list[Any]] = {"batch_ids": [r.batch_id for r in rows], "waits": waits,
                                       "has_dependents": [i in in_insert for i in job_ids], "cancel_reasons": reasons}
        inserted = _insert(rows, job_ids, alias, settings, links=links)
        if edges["job_ids"]:
            db.run_in_django("dependency_insert_many", using=alias, **edges)
        # A job cancelled at once whose own dependents were inserted with it: they are cancelled in turn.
        doomed = [i for i, reason in zip(job_ids, reasons, strict=True) if reason is not None and i in in_insert]
        if doomed:
            settle.on_commit(alias, parents=doomed, channel=settings.NOTIFY_CHANNEL)
    if len(inserted) != len(job_ids):  # reserved ids are new: a conflict would mean a bug, not a retry
        raise RuntimeError(f"pgqueue inserted {len(inserted)} of {len(job_ids)} linked jobs")
    return [int(i) for i in job_ids]


def _insert(rows: list[_Row], ids: Sequence[int | None], alias: str, settings: Settings,
            links: dict[str, list[Any]] | None = None) -> list[int]:
    if links is None and any(r.depends_on or r.batch_id is not None for r in rows):
        return _insert_linked(rows, ids, alias, settings)
    flows = [r.flow for r in rows]
    if links is not None or any(f is not NO_FLOW for f in flows):
        result = db.run_in_django(
            "job_insert_many", using=alias, **_insert_params(rows, ids, settings),
            lock_keys=[f.lock_key for f in flows], idempotency_keys=[f.idempotency_key for f in flows],
            concurrency_keys=[f.concurrency_key for f in flows],
            concurrency_limits=[f.concurrency_limit for f in flows],
            concurrency_holds=[f.concurrency_hold for f in flows],
            rate_keys=[f.rate_key for f in flows], rate_limits=[f.rate_limit for f in flows],
            rate_windows=[f.rate_window for f in flows], **(links or _no_links(len(rows))),
        )
    elif len(rows) == 1 and ids[0] is None and rows[0].run_at is None:
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
        none = [None] * len(rows)
        result = db.run_in_django(
            "job_insert_many", using=alias, **_insert_params(rows, ids, settings), lock_keys=none,
            idempotency_keys=none, concurrency_keys=none, concurrency_limits=none, concurrency_holds=none,
            rate_keys=none, rate_limits=none, rate_windows=none, batch_ids=none, waits=none, has_dependents=none,
            cancel_reasons=none,
        )
    inserted = [row.id for row in result]
    if inserted and events.has_subscribers("job_enqueued"):
        if len(inserted) < len(rows):  # some reserved ids were taken already: count the rows written
            written = set(inserted)
            rows = [r for r, i in zip(rows, ids, strict=True) if i in written]
        tasks = Counter((r.queue, r.task) for r in rows)
        events.emit("job_enqueued", count=len(inserted), queues=sorted({q for q, _ in tasks}), tasks=tasks)
    return inserted


def _no_links(count: int) -> dict[str, list[Any]]:
    none: list[Any] = [None] * count
    return {"batch_ids": none, "waits": none, "has_dependents": none, "cancel_reasons": none}


def _insert_params(rows: list[_Row], ids: Sequence[int | None], settings: Settings) -> dict[str, Any]:
    return {
        "ids": ids,
        "queues": [r.queue for r in rows],
        "tasks": [r.task for r in rows],
        "args": [r.args for r in rows],
        "kwargs": [r.kwargs for r in rows],
        "priorities": [r.priority for r in rows],
        "run_ats": [r.run_at for r in rows],
        "max_attempts": [r.max_attempts for r in rows],
        "timeouts": [r.timeout for r in rows],
        "replay_ofs": [None] * len(rows),
        "channel": settings.NOTIFY_CHANNEL,
    }


def _handles(rows: list[_Row], ids: Sequence[int], alias: str) -> list[JobHandle]:
    return [JobHandle(id=int(i), task=r.task, queue=r.queue, database=alias) for r, i in zip(rows, ids, strict=True)]
