"""Guardrails at enqueue: a per-queue enqueue rate limit (PGQUEUE['ENQUEUE_RATE_LIMITS']), held cluster-wide
in a token bucket row, and the report of every refusal (this one, and a payload over MAX_PAYLOAD_BYTES): an
event that metrics count and, with PGQUEUE['RECORD_REFUSALS'], a row the admin lists.

Both talk to the database on this thread's own autocommit connection, never in the caller's transaction:
the bucket row is locked for one statement only (enqueuers of a queue never wait on each other's open
transactions), and a refusal's row survives the caller rolling back, which it usually does."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable

from pgqueue import db, events, sql
from pgqueue.conf import Settings
from pgqueue.exceptions import EnqueueRefused

logger = logging.getLogger("pgqueue.enqueue")
_local = threading.local()


def _database(settings: Settings) -> db.Database:
    """This thread's autocommit connection to the pgqueue database (opened on first use)."""
    key = (settings.DATABASE, db.connection_kwargs(settings.DATABASE).get("dbname"))
    database: db.Database | None = getattr(_local, "database", None)
    if database is None or getattr(_local, "key", None) != key:
        if database is not None:
            database.close()
        database = db.Database(db.connection_kwargs(settings.DATABASE), owner=f"thread {threading.get_ident()}",
                               role="guardrail")
        _local.database, _local.key = database, key
    return database


def check_rate(rows: Iterable[tuple[str, str]], settings: Settings) -> None:
    """Take one token per job (queue, task) from each limited queue's bucket, or raise EnqueueRefused.
    A call is taken whole or refused whole, per queue."""
    limits = settings.ENQUEUE_RATE_LIMITS
    per_queue: Counter[str] = Counter()
    first_task: dict[str, str] = {}
    for queue, task in rows:
        if queue in limits:
            per_queue[queue] += 1
            first_task.setdefault(queue, task)
    for queue, count in per_queue.items():
        rate, per = limits[queue]["rate"], limits[queue]["per"]
        if count > rate:
            _refuse(settings, queue, first_task[queue], count, None,
                    f"Enqueue refused: queue {queue!r} takes at most {rate:g} jobs per {per:g} s "
                    f"(PGQUEUE['ENQUEUE_RATE_LIMITS']) and this call enqueues {count} at once. Nothing was written.")
        params = {"key": f"pgqueue:enqueue:{queue}", "limit": rate, "window": per, "count": count}
        database = _database(settings)
        try:
            taken = database.run(sql.ratelimit_take_enqueue, **params)
            if not taken:
                database.run(sql.ratelimit_create_enqueue, key=params["key"], limit=rate, window=per)
                taken = database.run(sql.ratelimit_take_enqueue, **params)
        except db.CONNECTION_ERRORS as exc:  # the enqueue itself will meet the same database, or not
            logger.warning("pgqueue could not check the enqueue rate of queue %r (%s); enqueueing anyway", queue, exc)
            continue
        if not taken[0].granted:
            wait = taken[0].retry_after
            _refuse(settings, queue, first_task[queue], count, wait,
                    f"Enqueue refused: queue {queue!r} takes at most {rate:g} jobs per {per:g} s "
                    f"(PGQUEUE['ENQUEUE_RATE_LIMITS']); {count} more would go over it. Retry in {wait:.2f} s. "
                    "Nothing was written.")


def _refuse(settings: Settings, queue: str, task: str, jobs: int, retry_after: float | None, message: str) -> None:
    refused(settings, queue=queue, task=task, reason="rate_limit", jobs=jobs, message=message)
    raise EnqueueRefused(message, queue=queue, reason="rate_limit", retry_after=retry_after)


def refused(settings: Settings, *, queue: str, task: str, reason: str, jobs: int, message: str) -> None:
    """Report a refusal: the job_enqueue_refused event, and its row when RECORD_REFUSALS is on."""
    events.emit("job_enqueue_refused", queue=queue, task=task, reason=reason, message=message)
    if not settings.RECORD_REFUSALS:
        return
    try:
        _database(settings).run(sql.refusal_record, queue=queue[:100], task=task[:255], reason=reason, jobs=jobs,
                                message=message[:2000])
    except Exception as exc:  # the refusal stands whether or not its record could be written
        logger.warning("pgqueue could not record a refused enqueue (%s)", exc)
