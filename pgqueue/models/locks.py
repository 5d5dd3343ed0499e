"""The lock table: uniqueness locks and idempotency keys, one row per key, enforced by a unique index."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

LOCK_KINDS = [("unique", "Uniqueness"), ("idempotency", "Idempotency key")]
LOCK_UNTIL = [("started", "Until started"), ("finished", "Until finished"), ("window", "For its window")]


class Lock(models.Model):
    """A key held by a job. Enqueueing another job with a held key conflicts (the unique index on kind and
    key decides, inside the enqueue transaction). A uniqueness lock is held while its job waits (until
    started) or until it finishes; with a window, for at least that long after enqueue. An idempotency
    key is held for its window (PGQUEUE['IDEMPOTENCY_SECONDS']) whatever its job does."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=LOCK_KINDS)
    key = models.CharField(max_length=255)
    # No database constraint: the lock is taken before its job row is inserted (same transaction), and a
    # lock may outlive its job (a window past the job's retention).
    job = models.ForeignKey("pgqueue.Job", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
                            db_index=False)
    until = models.CharField(max_length=16, choices=LOCK_UNTIL)
    released = models.BooleanField(
        db_default=False, help_text="Its job no longer holds it; it still counts until expires_at."
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Held at least until then (its window).")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_lock"
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="pgqueue_lock_kind_key")]
        indexes = [
            # Serves lock_reap: expired keys (windows, idempotency retention).
            models.Index(fields=["expires_at"], name="pgqueue_lock_expiry", condition=Q(expires_at__isnull=False)),
        ]
        permissions = [("release_lock", "Can release locks")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} (job #{self.job_id})"
