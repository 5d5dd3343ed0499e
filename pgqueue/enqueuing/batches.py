"""Batches: jobs enqueued as a group, with callbacks (jobs themselves) enqueued once when the group has
succeeded, has finished, or first had a job go dead; their progress; adding to an open batch, closing and
cancelling it (docs/batches.md).

A batch is open while jobs are added to it and closed after: its callbacks never fire while it is open.
Jobs enqueued while a batch is the current one (`with pgqueue.batch(...)`, `with batch:`) join it. The
moment of each callback is decided by batch_settle's guarded update (pgqueue.settle), never here.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count

from pgqueue import db, operations, settle, sql
from pgqueue.conf import get_settings
from pgqueue.enqueuing import scope
from pgqueue.enqueuing.api import enqueue_many
from pgqueue.enqueuing.options import JOB_ID_MAX
from pgqueue.enqueuing.rows import callback_spec
from pgqueue.exceptions import InvalidJob
from pgqueue.text import short_repr, text_problem

DESCRIPTION_MAX = 255  # the description column's length

@dataclass(frozen=True, slots=True, kw_only=True)
class BatchProgress:
    """How far a batch is, counted from its jobs now."""

    total: int
    waiting: int  # scheduled, ready, blocked or waiting for dependencies
    running: int
    succeeded: int
    dead: int
    cancelled: int
    closed: bool  # no job may be added any more; callbacks may fire
    cancelled_batch: bool
    finished: bool  # all its jobs reached a final state (and it was closed) at some point
    succeeded_all: bool  # all its jobs succeeded (and it was closed) at some point

    @property
    def done(self) -> int:
        return self.succeeded + self.dead + self.cancelled

    @property
    def fraction(self) -> float:
        """Done jobs over all jobs (1.0 for an empty batch)."""
        return self.done / self.total if self.total else 1.0


class Batch:
    """A batch, by id. Build one with pgqueue.batch(...) (open, fill and close in one block) or
    Batch.open(...) (fill it over several transactions, then close())."""

    def __init__(self, batch_id: int) -> None:
        if isinstance(batch_id, bool) or not isinstance(batch_id, int) or not 1 <= batch_id <= JOB_ID_MAX:
            raise InvalidJob(f"A batch id must be an integer from 1 to {JOB_ID_MAX}, got {short_repr(batch_id)}.")
        self.id = batch_id
        self._tokens: list[contextvars.Token[int | None]] = []

    def __repr__(self) -> str:
        return f"<Batch {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("pgqueue.Batch", self.id))

    @classmethod
    def open(cls, *, on_success: Any = None, on_finish: Any = None, on_failure: Any = None,
             description: str = "") -> Batch:
        """Create an open batch in the caller's transaction. Callbacks are calls, fn.call(...): on_success
        when all its jobs succeeded, on_finish when all reached a final state (whatever it is), on_failure
        when the first of them went dead. Each is enqueued once, after close()."""
        specs = {
            name: callback_spec(call, name) if call is not None else None
            for name, call in (("on_success", on_success), ("on_finish", on_finish), ("on_failure", on_failure))
        }
        rows = db.run_in_django(sql.batch_create, description=_description(description), **specs)
        return cls(int(rows[0].id))

    @classmethod
    def get(cls, batch_id: int) -> Batch:
        """The batch with this id; InvalidJob if there is none."""
        from pgqueue.models import Batch as BatchRow

        batch = cls(batch_id)
        if not BatchRow.objects.using(get_settings().DATABASE).filter(pk=batch.id).exists():
            raise InvalidJob(f"Batch {batch.id} does not exist.")
        return batch

    def __enter__(self) -> Batch:
        self._tokens.append(scope.enter(self.id))
        return self

    def __exit__(self, *exc: object) -> None:
        scope.leave(self._tokens.pop())

    def add(self, calls: Iterable[Any]) -> list[Any]:
        """Enqueue calls (fn.call(...)) into this open batch, in the caller's transaction."""
        with self:
            return enqueue_many(calls)

    def close(self) -> None:
        """Close the batch: no job may be added any more, and its callbacks fire when their moment comes
        (at once, after the commit, if it has already come). Waits for transactions adding jobs to it."""
        settings = get_settings()
        with transaction.atomic(using=settings.DATABASE):
            scope.check(db.run_in_django(sql.batch_lock_for_update, id=self.id), self.id, "closed")
            db.run_in_django(sql.batch_close, id=self.id)
            settle.on_commit(settings.DATABASE, batches=[self.id], channel=settings.NOTIFY_CHANNEL)

    def cancel(self) -> dict[int, str]:
        """Cancel the batch: its waiting jobs are cancelled, its running ones asked to stop (as
        pgqueue.cancel does), no job may be added, and its on_finish callback fires once they all have
        stopped. Returns {job id: "cancelled" | "cancelling"}."""
        settings = get_settings()
        with transaction.atomic(using=settings.DATABASE):
            locked = db.run_in_django(sql.batch_lock_for_update, id=self.id)
            if not locked:
                raise InvalidJob(f"Batch {self.id} does not exist.")
            ids = [row.id for row in db.run_in_django(sql.batch_cancel, id=self.id)]
            result = operations.cancel(ids) if ids else {}
            settle.on_commit(settings.DATABASE, batches=[self.id], channel=settings.NOTIFY_CHANNEL)
        return result

    def progress(self) -> BatchProgress:
        """Its jobs counted by state now (InvalidJob if the batch does not exist)."""
        from pgqueue.models import Batch as BatchRow
        from pgqueue.models import Job

        alias = get_settings().DATABASE
        row = BatchRow.objects.using(alias).filter(pk=self.id).first()
        if row is None:
            raise InvalidJob(f"Batch {self.id} does not exist.")
        counts = dict(Job.objects.using(alias).filter(batch_id=self.id).values_list("state")
                      .annotate(n=Count("id")).values_list("state", "n"))
        return progress_of(row, counts)


def progress_of(row: Any, counts: dict[str, int]) -> BatchProgress:
    """A BatchProgress from a pgqueue.models.Batch and its jobs' counts by state (the admin counts many
    batches in one query)."""
    return BatchProgress(
        total=sum(counts.values()),
        waiting=sum(counts.get(s, 0) for s in ("scheduled", "ready", "blocked", "waiting")),
        running=counts.get("running", 0), succeeded=counts.get("succeeded", 0), dead=counts.get("dead", 0),
        cancelled=counts.get("cancelled", 0), closed=row.closed_at is not None,
        cancelled_batch=row.cancelled_at is not None, finished=row.finished_at is not None,
        succeeded_all=row.succeeded_at is not None,
    )


@contextlib.contextmanager
def batch(*, on_success: Any = None, on_finish: Any = None, on_failure: Any = None,
          description: str = "") -> Iterator[Batch]:
    """Open a batch, let the block enqueue its jobs (every job enqueued inside joins it), and close it:
    all in one transaction.atomic() on pgqueue's database, so the batch and its jobs exist together or
    not at all. See Batch.open for the callbacks."""
    with transaction.atomic(using=get_settings().DATABASE):
        opened = Batch.open(on_success=on_success, on_finish=on_finish, on_failure=on_failure,
                            description=description)
        with opened:
            yield opened
        opened.close()


def _description(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidJob(f"A batch description must be a string, got {short_repr(value)}.")
    if len(value) > DESCRIPTION_MAX:
        raise InvalidJob(f"A batch description is at most {DESCRIPTION_MAX} characters, got {len(value)}.")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidJob(f"A batch description {problem}.")
    return value
