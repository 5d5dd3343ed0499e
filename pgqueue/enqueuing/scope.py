"""The batch that jobs enqueued here join (set by `with batch:`), and holding it open while they are added."""

from __future__ import annotations

import contextvars

from pgqueue import db, sql
from pgqueue.exceptions import InvalidJob
from pgqueue.sql.rows import BatchLocked

_current: contextvars.ContextVar[int | None] = contextvars.ContextVar("pgqueue_batch", default=None)


def current() -> int | None:
    """The id of the batch that jobs enqueued here join, if any."""
    return _current.get()


def enter(batch_id: int) -> contextvars.Token[int | None]:
    """Make `batch_id` the batch that jobs enqueued in this context join, until leave(token)."""
    return _current.set(batch_id)


def leave(token: contextvars.Token[int | None]) -> None:
    _current.reset(token)


def hold_open(batch_id: int, alias: str) -> None:
    """Hold an open batch until the caller's transaction ends, while jobs are added to it (the enqueue path)."""
    check(db.run_in_django(sql.batch_lock, using=alias, id=batch_id), batch_id, "given jobs")


def check(rows: list[BatchLocked], batch_id: int, verb: str) -> None:
    """InvalidJob unless the locked batch row exists and is neither cancelled nor closed."""
    if not rows:
        raise InvalidJob(f"Batch {batch_id} does not exist (not committed yet, or rolled back).")
    if rows[0].cancelled:
        raise InvalidJob(f"Batch {batch_id} is cancelled: it cannot be {verb}.")
    if rows[0].closed:
        raise InvalidJob(f"Batch {batch_id} is closed: it cannot be {verb} (its callbacks may have fired).")
