"""What a running job can know and say: its id, attempt, queue; progress reports; cancel requests."""

from __future__ import annotations

import contextvars
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgqueue.exceptions import JobCancelled
from pgqueue.types import Progress

_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("pgqueue_job", default=None)


@dataclass(eq=False, kw_only=True)
class JobContext:
    """Given to jobs declared with @job(pass_context=True); also available as pgqueue.current_job()."""

    job_id: int
    attempt: int
    max_attempts: int
    queue: str
    task: str
    lease_token: uuid.UUID
    batch_id: int | None = None  # the batch it belongs to (pgqueue.Batch(batch_id).progress())
    callback_of: int | None = None  # the batch whose callback it is
    worker: str = ""  # the worker process running this attempt
    _job: Any = field(default=None, repr=False)  # the LeasedJob (started_at, created_at: django.tasks results)
    _report: Callable[[Progress], None] = field(repr=False)
    _cancelled: bool = field(default=False, repr=False)
    _task: Any = field(default=None, repr=False)  # the asyncio task of an async job
    _complete: Callable[[Any], None] | None = field(default=None, repr=False)
    _completed: bool = field(default=False, repr=False)  # complete_in_transaction ran (its transaction may not commit)

    def progress(self, value: float, message: str = "") -> None:
        """Report progress (any number, e.g. percent done) and a short message; shown in the admin."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"progress value must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"progress value must be a finite number, got {value!r}")
        self._report(Progress(job_id=self.job_id, lease_token=self.lease_token, value=float(value),
                              message=str(message)[:1000]))

    def complete_in_transaction(self, result: Any = None) -> None:
        """Mark this job succeeded inside the open transaction.atomic() on pgqueue's database that holds the
        job's own writes: they commit or roll back together, so a crash after the commit cannot run the job
        again. `result` (JSON) is stored as the job's result. Raises JobCancelled (rolling the transaction
        back) if this worker no longer holds the job, so a job rescued elsewhere cannot complete twice."""
        if self._complete is None:
            raise RuntimeError("complete_in_transaction() works only inside a job run by a pgqueue worker")
        self._complete(result)
        self._completed = True

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this job (seen at the worker's next heartbeat)."""
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelled if a cancel was requested: call it at safe points in long jobs."""
        if self._cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")


def current_job() -> JobContext | None:
    """The context of the job running in this thread or task, or None outside a job."""
    return _current.get()
