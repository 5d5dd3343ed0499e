"""A worker's heartbeat: extends the leases it holds and says which jobs have a cancel request or are lost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pgqueue import db, sql


@dataclass(frozen=True, slots=True)
class BeatResult:
    extended: frozenset[int]  # job ids it still holds (lease extended, or a completion of it being written)
    cancel_requested: frozenset[int]  # ... of which these have a cancel request


class Heartbeat:
    def __init__(self, database: db.Database, worker_id: str, lease_seconds: float) -> None:
        self.database = database
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds

    def beat(self, held: list[tuple[int, uuid.UUID]]) -> BeatResult | None:
        """Say this worker is alive and extend the leases of these (job id, lease token) pairs; None when the
        database is unreachable."""
        try:
            rows = self.database.run(sql.job_heartbeat, worker=self.worker_id, ids=[h[0] for h in held],
                                     tokens=[h[1] for h in held], lease_seconds=self.lease_seconds)
        except db.CONNECTION_ERRORS:
            return None
        return BeatResult(extended=frozenset(r.id for r in rows),
                          cancel_requested=frozenset(r.id for r in rows if r.cancel_requested))
