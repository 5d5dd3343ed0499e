"""Batches: a group of jobs enqueued together, with callbacks (jobs themselves) run once when the group
succeeds, finishes or first fails (docs/batches.md).

Progress is counted from the member jobs (Job.batch_id) as they are now, never kept in counters here, so
a retry or a cancel cannot make it wrong (jobs pruned after their retention are no longer counted; `total`
keeps the count at close). The timestamps below are the guards that make each callback fire once:
batch_settle sets one only while it is NULL, under the row's lock, and the callback is inserted in the same
transaction (pgqueue.settle)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Batch(models.Model):
    id = models.BigAutoField(primary_key=True)
    description = models.CharField(max_length=255, blank=True, db_default="")
    created_at = models.DateTimeField(db_default=Now())
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was closed: no job may be added after, and callbacks never fire before."
    )
    total = models.IntegerField(null=True, blank=True, help_text="Jobs in it when it was closed.")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True, help_text="When the first of its jobs was seen dead.")
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When all its jobs had reached a final state (succeeded, dead, cancelled)."
    )
    succeeded_at = models.DateTimeField(null=True, blank=True, help_text="When all its jobs had succeeded.")
    # The callbacks, as the rows job_insert_many would write (queue, task, args, kwargs, priority,
    # max_attempts, timeout), checked when the batch was opened; and the jobs they became.
    on_success = models.JSONField(null=True, blank=True)
    on_finish = models.JSONField(null=True, blank=True)
    on_failure = models.JSONField(null=True, blank=True)
    success_job_id = models.BigIntegerField(null=True, blank=True)
    finish_job_id = models.BigIntegerField(null=True, blank=True)
    failure_job_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "pgqueue_batch"
        ordering = ["-id"]
        verbose_name_plural = "batches"
        indexes = [
            # Serves the maintenance sweep: closed batches that may still have a callback to fire.
            models.Index(fields=["id"], name="pgqueue_batch_unsettled",
                         condition=Q(closed_at__isnull=False, finished_at__isnull=True)),
        ]
        permissions = [("cancel_batch", "Can cancel batches")]

    def __str__(self) -> str:
        return f"batch {self.id}" + (f" ({self.description})" if self.description else "")
