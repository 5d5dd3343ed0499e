"""Leadership of a cluster-wide role (the maintenance leader): one row per role, held by one process until
its lease runs out. Elected through this table, not a session lock, so it holds through a transaction
pooler and across hosts; each new holder gets the next token (a fencing token)."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Leader(models.Model):
    role = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=64)  # the pgqueue_workerprocess id of the process that leads
    token = models.BigIntegerField()  # one more at each new holder: a stale leader's token is lower
    acquired_at = models.DateTimeField(db_default=Now())
    renewed_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()  # by the database's clock; another process may take over after it

    class Meta:
        db_table = "pgqueue_leader"
        verbose_name = "leader"
        verbose_name_plural = "leaders"

    def __str__(self) -> str:
        return f"{self.role} leader {self.holder} (token {self.token})"
