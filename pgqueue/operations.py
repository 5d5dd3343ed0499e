"""Operator verbs on existing jobs (cancel, replay), shared by the API, the admin and commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from pgqueue import db, settle, sql
from pgqueue.conf import check_queue_name, get_settings
from pgqueue.enqueuing import rows as newjobs
from pgqueue.enqueuing.flow import CONCURRENCY_LIMIT_MAX, check_rate_window
from pgqueue.enqueuing.options import JOB_ID_MAX, check_seconds
from pgqueue.exceptions import InvalidJob, InvalidJobId
from pgqueue.text import short_repr


def _ids(job_ids: int | Iterable[int]) -> list[int]:
    """The ids as a list, each an int from 1 to JOB_ID_MAX, else InvalidJobId (also a TypeError)."""
    if isinstance(job_ids, int) and not isinstance(job_ids, bool):
        ids = [job_ids]
    elif isinstance(job_ids, str | bytes | dict) or not isinstance(job_ids, Iterable):
        raise InvalidJobId(f"job ids must be an integer or an iterable of integers, got {_show(job_ids)}.")
    else:
        ids = list(job_ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise InvalidJobId(f"job ids must be integers, got {_show(i)}.")
        if not 1 <= i <= JOB_ID_MAX:
            raise InvalidJobId(f"job id {i} is out of range: job ids are integers from 1 to {JOB_ID_MAX}.")
    return ids


def check_ids(job_ids: int | Iterable[int]) -> list[int]:
    """The ids as a list, each an int from 1 to 2**63 - 1, else InvalidJobId (commands and reports)."""
    return _ids(job_ids)


def _queue_names(queues: str | Iterable[str]) -> list[str]:
    if isinstance(queues, str):
        return [check_queue_name(queues)]
    if isinstance(queues, bytes | dict) or not isinstance(queues, Iterable):
        raise InvalidJob(f"queues must be a queue name or an iterable of names, got {_show(queues)}.")
    return [check_queue_name(q) for q in queues]


def _show(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value)}"


def cancel(job_ids: int | Iterable[int]) -> dict[int, str]:
    """Cancel waiting jobs at once; ask running ones to stop. Returns {job id: "cancelled" | "cancelling"}.

    Jobs already finished (or unknown) are left alone and absent from the result. A cancelled job's
    uniqueness key is released and its semaphore slot goes to the next blocked job, in one transaction;
    once that commits, jobs depending on it are cancelled and its batch's callbacks may fire.
    """
    ids = _ids(job_ids)
    settings = get_settings()
    with transaction.atomic(using=settings.DATABASE):
        rows = db.run_in_django(sql.job_cancel_many, ids=ids)
        if any(row.slot_key is not None for row in rows):
            db.run_in_django(sql.semaphore_hand_off, **db.hand_off_params(rows, channel=settings.NOTIFY_CHANNEL))
        settle.after_commit(settings.DATABASE, rows, channel=settings.NOTIFY_CHANNEL)
    return {row.id: row.state for row in rows}


def replay(job_ids: int | Iterable[int]) -> dict[int, int]:
    """Enqueue a new job copying each dead or cancelled job. Returns {old id: new id}. A copy with a
    semaphore takes a free slot or waits for one; uniqueness and idempotency keys are not copied."""
    ids = _ids(job_ids)
    settings = get_settings()
    with transaction.atomic(using=settings.DATABASE):
        sources = db.run_in_django(sql.job_get_replayable, ids=ids)
        if sources:
            copies = [newjobs.replay_of(row) for row in sources]
            db.run_in_django(sql.job_insert_many, **newjobs.insert_params(copies, [r.copy_id for r in sources],
                                                                         settings.NOTIFY_CHANNEL))
            _hand_off(sorted({r.concurrency_key for r in sources if r.concurrency_key is not None}))
    return {row.id: row.copy_id for row in sources}


def retry(job_ids: int | Iterable[int]) -> list[int]:
    """Run waiting jobs now, and give dead or cancelled ones one more attempt. Returns the ids moved.
    A job with a semaphore runs when it holds a slot (it waits for one if it does not)."""
    ids = _ids(job_ids)
    settings = get_settings()
    with transaction.atomic(using=settings.DATABASE):
        rows = db.run_in_django(sql.job_retry_many, ids=ids, channel=settings.NOTIFY_CHANNEL)
        _hand_off([row.key for row in rows if row.key is not None])
    return [row.id for row in rows]


def _hand_off(keys: list[str]) -> None:
    """Give free slots of these semaphores to their blocked jobs (in the caller's transaction)."""
    if keys:
        db.run_in_django(sql.semaphore_hand_off, **db.hand_off_params([], channel=get_settings().NOTIFY_CHANNEL,
                                                                     keys=keys))


def delete_finished(job_ids: int | Iterable[int]) -> list[int]:
    """Delete finished jobs with their attempts; jobs not finished are kept. Returns the ids deleted."""
    return [row.id for row in db.run_in_django(sql.job_delete_finished_many, ids=_ids(job_ids))]


def pause(queues: str | Iterable[str]) -> list[str]:
    """Stop workers leasing from these queues (running jobs finish). Returns the queue names."""
    return _set_paused(queues, True)


def resume(queues: str | Iterable[str]) -> list[str]:
    """Let workers lease from these queues again."""
    return _set_paused(queues, False)


def _set_paused(queues: str | Iterable[str], paused: bool) -> list[str]:
    names = _queue_names(queues)
    rows = db.run_in_django(sql.queuestate_set_paused, names=names, paused=paused,
                            channel=get_settings().NOTIFY_CHANNEL)
    return [row.name for row in rows]


def drain_and_pause(queues: str | Iterable[str]) -> list[str]:
    """Keep working a queue until nothing in it is ready or running, then pause it (maintenance does)."""
    return [row.name for row in db.run_in_django(sql.queuestate_drain, names=_queue_names(queues))]


RATE_LIMIT_MAX = 1_000_000  # starts per window


def set_limits(queue: str, *, concurrency: int | None = None, rate: int | None = None,
               per: float | None = None) -> str:
    """Set (or, with None, clear) a queue's limits: at most `concurrency` jobs of it running at once, cluster-
    wide, and at most `rate` jobs started per `per` seconds (a token bucket: bursts up to `rate`).
    Workers of the queue apply them from their next heartbeat; jobs already running hold no running slot.
    Returns the queue name."""
    name = check_limits(queue, concurrency=concurrency, rate=rate, per=per)
    rows = db.run_in_django(sql.queuestate_set_limits, name=name, concurrency_limit=concurrency, rate_limit=rate,
                            rate_window=float(per) if per is not None else None)
    return str(rows[0].name)


def check_limits(queue: str, *, concurrency: Any, rate: Any, per: Any) -> str:
    """The queue name if these limits can be set, else InvalidJob (nothing written)."""
    name = check_queue_name(queue)
    label = f"Queue {name!r}:"
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or not 1 <= concurrency <= CONCURRENCY_LIMIT_MAX):
        raise InvalidJob(f"{label} concurrency must be an integer from 1 to {CONCURRENCY_LIMIT_MAX}, "
                         f"got {short_repr(concurrency)}.")
    if (rate is None) != (per is None):
        raise InvalidJob(f"{label} give rate and per together (rate=10, per=1.0: at most 10 starts a second).")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= RATE_LIMIT_MAX):
        raise InvalidJob(f"{label} rate must be an integer from 1 to {RATE_LIMIT_MAX}, got {short_repr(rate)}.")
    if per is not None:
        check_rate_window(f"{label} per", per)
    return name


BREAKER_THRESHOLD_MAX = 1_000_000


def set_breaker(queue: str, *, failures: int | None = None, within: float | None = None,
                cooldown: float | None = None) -> str:
    """Set (or, with failures=None, clear) a queue's circuit breaker: `failures` failed attempts in a row
    within `within` seconds pause the queue for `cooldown` seconds, with the reason recorded and audited;
    maintenance resumes it. A success ends the streak. Returns the queue name."""
    name = check_breaker(queue, failures=failures, within=within, cooldown=cooldown)
    rows = db.run_in_django(sql.queuestate_set_breaker, name=name, threshold=failures,
                            window=float(within) if within is not None else None,
                            cooldown=float(cooldown) if cooldown is not None else None)
    return str(rows[0].name)


def check_breaker(queue: str, *, failures: Any, within: Any, cooldown: Any) -> str:
    """The queue name if this breaker can be set, else InvalidJob (nothing written)."""
    name = check_queue_name(queue)
    label = f"Queue {name!r}:"
    if failures is None:
        if within is not None or cooldown is not None:
            raise InvalidJob(f"{label} within and cooldown need failures=N.")
        return name
    if isinstance(failures, bool) or not isinstance(failures, int) or not 1 <= failures <= BREAKER_THRESHOLD_MAX:
        raise InvalidJob(f"{label} failures must be an integer from 1 to {BREAKER_THRESHOLD_MAX}, "
                         f"got {short_repr(failures)}.")
    if within is None or cooldown is None:
        raise InvalidJob(f"{label} a circuit breaker needs failures, within and cooldown (seconds).")
    check_seconds(f"{label} within", within)
    check_seconds(f"{label} cooldown", cooldown)
    return name


def release_locks(lock_ids: int | Iterable[int]) -> list[int]:
    """Free uniqueness or idempotency keys now (an operator's choice: the next enqueue with the key creates a
    job even if the holder still waits or runs). Returns the lock ids released."""
    return [row.id for row in db.run_in_django(sql.lock_release_many, ids=_ids(lock_ids))]
