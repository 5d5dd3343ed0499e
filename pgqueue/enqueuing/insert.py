"""The enqueue path's writes: every call validated first (nothing is written if one is bad), then one named
INSERT in the caller's transaction, taking keys, joining batches and linking dependencies on the way;
deferred to the commit of the caller's transaction on another database."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from django.db import InterfaceError, OperationalError, connections, transaction

from pgqueue import db, events, settle, sql
from pgqueue.conf import Settings, get_settings
from pgqueue.enqueuing import guardrails, scope
from pgqueue.enqueuing import rows as newjobs
from pgqueue.enqueuing.flow import NO_FLOW, Flow, OnConflict
from pgqueue.enqueuing.handle import JobHandle
from pgqueue.enqueuing.options import NO_OPTIONS, JobCall
from pgqueue.enqueuing.rows import NewJob, Resolved
from pgqueue.exceptions import InvalidJob, JobNotUnique
from pgqueue.lifecycle import release
from pgqueue.types import SettledDependency

logger = logging.getLogger("pgqueue.enqueue")


def enqueue_calls(calls: Sequence[JobCall], *, steps: Sequence[str] | None = None) -> list[JobHandle]:
    """Validate every call first (nothing is written if one is bad), then insert them all. `steps`: the
    calls are the steps of a workflow with these names (pgqueue.workflows checked the graph), which
    depends_on may name."""
    if not calls:
        return []
    settings = get_settings()
    now: dt.datetime | None = None
    resolved: dict[tuple[int, int], Resolved] = {}
    rows = []
    for call in calls:
        if call.options is NO_OPTIONS:
            options = newjobs.defaults(call.job, settings)
        else:
            key = (id(call.job), id(call.options))
            found = resolved.get(key)
            if found is None:
                now = now or dt.datetime.now(dt.UTC)
                found = resolved[key] = newjobs.resolve(call.job, call.options, settings, now)
            options = found
        rows.append(newjobs.prepare(call, options, settings))
    if settings.ENQUEUE_RATE_LIMITS:  # every call is valid: now the guardrail, before anything is written
        guardrails.check_rate(((r.queue, r.task) for r in rows), settings)
    alias = settings.DATABASE
    batch_id = scope.current()
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


def _caller_transaction(alias: str) -> str | None:
    """The alias of an open transaction on another database, if the caller is in one."""
    for conn in connections.all(initialized_only=True):
        if conn.alias != alias and conn.in_atomic_block:
            return conn.alias
    return None


def _defer_to_commit(rows: list[NewJob], alias: str, caller: str, settings: Settings) -> list[JobHandle]:
    """Reserve ids now; insert when the caller's transaction on `caller` commits (never if it rolls back)."""
    ids = [row.id for row in db.run_in_django(sql.job_reserve_ids, using=alias, count=len(rows))]
    transaction.on_commit(functools.partial(_insert_after_commit, rows, ids, alias, caller, settings), using=caller)
    return _handles(rows, ids, alias)


def _insert_after_commit(rows: list[NewJob], ids: list[int], alias: str, caller: str, settings: Settings) -> None:
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


def _enqueue_with_locks(rows: list[NewJob], alias: str, settings: Settings) -> list[JobHandle]:
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
        taken = db.run_in_django(sql.lock_take_many, using=alias, count=len(rows), **lock_input)
        for lock in taken:  # ordered by call, idempotency key first: it decides before the uniqueness key
            ids[lock.call] = lock.id  # every call: ids in call order, whether it has keys or not
            if lock.holder is not None and lock.holder != lock.id and lock.call not in held:
                held[lock.call] = (lock.holder, str(lock.kind), str(lock.key))
        unused = [lock for lock in taken if lock.call in held and lock.holder == lock.id]
        if unused:  # a call that is not inserted keeps none of its keys
            db.run_in_django(sql.lock_drop_many, using=alias, kinds=[r.kind for r in unused],
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


def _is_idempotent_repeat(row: NewJob, earlier: NewJob) -> bool:
    """The same idempotency key again: the earlier call's job stands, whatever the uniqueness policy."""
    return row.flow.idempotency_key is not None and row.flow.idempotency_key == earlier.flow.idempotency_key


def _replace_waiting(rows: list[NewJob], indexes: list[int], holders: list[int], alias: str,
                     settings: Settings) -> set[int]:
    """on_conflict='replace': the holders that still wait get these calls' arguments and run_at."""
    if not indexes:
        return set()
    result = db.run_in_django(
        sql.job_replace_waiting_many, using=alias, ids=holders, args=[rows[i].args for i in indexes],
        kwargs=[rows[i].kwargs for i in indexes], run_ats=[rows[i].run_at for i in indexes],
        channel=settings.NOTIFY_CHANNEL,
    )
    return {row.id for row in result}


def _enqueue_steps(rows: list[NewJob], steps: list[str], alias: str, settings: Settings) -> list[JobHandle]:
    """A workflow's steps: ids for all of them first, so that a step's depends_on can name another step."""
    if any(r.flow.lock_key is not None or r.flow.idempotency_key is not None for r in rows):
        raise InvalidJob("A workflow step cannot take a uniqueness or idempotency key: enqueue the workflow from "
                         "a job that holds the key instead.")
    with transaction.atomic(using=alias):
        ids = [row.id for row in db.run_in_django(sql.job_reserve_ids, using=alias, count=len(rows))]
        by_step = dict(zip(steps, ids, strict=True))
        rows = [replace(r, depends_on=tuple(by_step[d] if isinstance(d, str) else d for d in r.depends_on))
                for r in rows]
        _insert(rows, ids, alias, settings)
    return _handles(rows, ids, alias)


def _insert_linked(rows: list[NewJob], ids: Sequence[int | None], alias: str, settings: Settings) -> list[int]:
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
            scope.hold_open(batch_id, alias)
        fresh = iter(row.id for row in db.run_in_django(
            sql.job_reserve_ids, using=alias, count=sum(1 for i in ids if i is None))) if None in ids else iter(())
        job_ids: list[int] = [next(fresh) if i is None else i for i in ids]
        own = set(job_ids)
        external = sorted({d for r in rows for d in r.depends_on if d not in own})
        parents = {p.id: p for p in db.run_in_django(sql.job_lock_parents, using=alias, ids=external)} if external else {}
        edges: dict[str, list[Any]] = {"job_ids": [], "depends_on_ids": [], "on_failures": [], "settled": []}
        waits: list[int] = []
        settled: list[SettledDependency] = []  # dependencies on jobs already finished: settled at once
        for row, job_id in zip(rows, job_ids, strict=True):
            pending = 0
            for parent_id in sorted(row.depends_on):
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
                else:
                    settled.append(SettledDependency(job_id=job_id, parent_id=parent.id, parent_state=parent.state,
                                                     parent_task=parent.task, on_failure=row.on_dependency_failure))
                edges["job_ids"].append(job_id)
                edges["depends_on_ids"].append(parent_id)
                edges["on_failures"].append(row.on_dependency_failure)
                edges["settled"].append(done)
            waits.append(pending)
        # what settling them decides (lifecycle.release, as when they finish later): a failed one cancels the job
        cancels = {r.job_id: r.cancel_reason for r in release(settled)}
        reasons = [cancels.get(job_id) for job_id in job_ids]
        in_insert = {d for r in rows for d in r.depends_on if d in own}
        linked = [replace(r, waits=w, has_dependents=i in in_insert, cancel_reason=reason)
                  for r, w, i, reason in zip(rows, waits, job_ids, reasons, strict=True)]
        inserted = _insert(linked, job_ids, alias, settings, linked=True)
        if edges["job_ids"]:
            db.run_in_django(sql.dependency_insert_many, using=alias, **edges)
        # A job cancelled at once whose own dependents were inserted with it: they are cancelled in turn.
        doomed = [i for i, reason in zip(job_ids, reasons, strict=True) if reason is not None and i in in_insert]
        if doomed:
            settle.on_commit(alias, parents=doomed, channel=settings.NOTIFY_CHANNEL)
    if len(inserted) != len(job_ids):  # reserved ids are new: a conflict would mean a bug, not a retry
        raise RuntimeError(f"pgqueue inserted {len(inserted)} of {len(job_ids)} linked jobs")
    return [int(i) for i in job_ids]


def _insert(rows: list[NewJob], ids: Sequence[int | None], alias: str, settings: Settings,
            linked: bool = False) -> list[int]:
    """Insert with the leanest statement that fits: job_insert_ready for one job ready now (the web view's
    enqueue), job_insert for one with a reserved id or a run_at, else job_insert_many."""
    if not linked and any(r.depends_on or r.batch_id is not None for r in rows):
        return _insert_linked(rows, ids, alias, settings)
    channel = settings.NOTIFY_CHANNEL
    if linked or len(rows) > 1 or rows[0].flow is not NO_FLOW:
        result = db.run_in_django(sql.job_insert_many, using=alias, **newjobs.insert_params(rows, ids, channel))
    elif ids[0] is None and rows[0].run_at is None:
        result = db.run_in_django(sql.job_insert_ready, using=alias, **newjobs.insert_ready_params(rows[0], channel))
    else:
        result = db.run_in_django(sql.job_insert, using=alias, **newjobs.insert_one_params(rows[0], ids[0], channel))
    inserted = [row.id for row in result]
    if inserted and events.has_subscribers("job_enqueued"):
        if len(inserted) < len(rows):  # some reserved ids were taken already: count the rows written
            written = set(inserted)
            rows = [r for r, i in zip(rows, ids, strict=True) if i in written]
        tasks = Counter((r.queue, r.task) for r in rows)
        events.emit("job_enqueued", count=len(inserted), queues=sorted({q for q, _ in tasks}), tasks=tasks)
    return inserted


def _handles(rows: list[NewJob], ids: Sequence[int], alias: str) -> list[JobHandle]:
    return [JobHandle(id=int(i), task=r.task, queue=r.queue, database=alias) for r, i in zip(rows, ids, strict=True)]
