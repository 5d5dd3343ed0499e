"""JobHandle: what an enqueue returns, the job's id and where it went (the bottom of the enqueue wing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgqueue.conf import get_settings
from pgqueue.exceptions import JobNotFound


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

