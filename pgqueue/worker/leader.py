"""Leadership of a cluster-wide role through the pgqueue_leader table: claimed when nobody holds it, renewed
while the holder acts, given up when it stops. A table row with an expiry by the database's clock, not a
session lock, so it holds through a transaction pooler and across hosts.

At most one process acts at a time: a holder acts only until its local deadline, measured from before the
statement that last claimed or renewed the lead (so it ends before the row's expiry), and another process
can claim the row only after that expiry. Each new holder gets the next token (a fencing token: a stale
holder's renewal names an old token and is refused)."""

from __future__ import annotations

import time
from typing import Any

from pgqueue import events, sql

RENEW_FRACTION = 1 / 3  # renew once this much of the lead has gone
ACT_FRACTION = 2 / 3  # act until this much of the lead has gone without a renewal


class Lead:
    """One process's claim on a role's leadership, through `database` (a db.Database)."""

    def __init__(self, database: Any, role: str, holder: str, seconds: float) -> None:
        self.database = database
        self.role = role
        self.holder = holder
        self.seconds = seconds
        self.token: int | None = None  # the token of the lead this process holds (or last held)
        self.act_until = 0.0  # monotonic: past it, act only after a renewal
        self.renew_at = 0.0

    @property
    def acting(self) -> bool:
        """Whether this process may act as the leader now (no database round trip)."""
        return self.token is not None and time.monotonic() < self.act_until

    def hold(self) -> bool:
        """Whether this process leads now: claims the lead when nobody holds it, renews it when due. A
        connection error propagates; the process then acts no longer than its last deadline."""
        sent = time.monotonic()
        if self.token is not None and sent < self.renew_at:
            return True
        params = {"role": self.role, "holder": self.holder, "seconds": self.seconds}
        rows = self.database.run(sql.leader_renew, **params, token=self.token) if self.token is not None else []
        if not rows:
            rows = self.database.run(sql.leader_claim, **params)
            if not rows:
                self._lost()
                return False
            if rows[0].token != self.token:
                events.emit("maintenance_leader", worker=self.holder, token=rows[0].token)
        self.token = rows[0].token
        self.renew_at = sent + self.seconds * RENEW_FRACTION
        self.act_until = sent + self.seconds * ACT_FRACTION
        return True

    def resign(self) -> None:
        """Stopping on purpose: let the lead run out now, so another process takes over at its next round."""
        if self.token is not None:
            token, self.token = self.token, None
            self.database.run(sql.leader_resign, role=self.role, holder=self.holder, token=token)

    def _lost(self) -> None:
        if self.token is not None:
            events.emit("maintenance_follower", worker=self.holder, token=self.token)
        self.token = None
        self.act_until = self.renew_at = 0.0
