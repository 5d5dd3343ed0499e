"""Per-minute outcome counts, written by each worker with its completions (one row per minute, queue and
worker, so workers never contend for a row). The admin's charts read these, not the job table."""

from __future__ import annotations

from django.db import models


class QueueStat(models.Model):
    id = models.BigAutoField(primary_key=True)
    bucket = models.DateTimeField(help_text="The minute these outcomes were recorded in.")
    queue = models.CharField(max_length=100)
    worker = models.CharField(max_length=64)
    succeeded = models.IntegerField(db_default=0)
    retried = models.IntegerField(db_default=0, help_text="Failed attempts that will be retried.")
    dead = models.IntegerField(db_default=0)
    cancelled = models.IntegerField(db_default=0)

    class Meta:
        db_table = "pgqueue_stat"
        ordering = ["-bucket"]
        constraints = [
            models.UniqueConstraint(fields=["bucket", "queue", "worker"], name="pgqueue_stat_bucket_queue_worker")
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.queue} {self.worker}"
