"""Refused enqueues (PGQUEUE['RECORD_REFUSALS']): what a guardrail refused, why and when, one row per minute,
queue, task and reason with a count, written outside the caller's transaction so a rollback keeps them."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Refusal(models.Model):
    id = models.BigAutoField(primary_key=True)
    minute = models.DateTimeField(help_text="The minute the refusals fell in.")
    queue = models.CharField(max_length=100)
    task = models.CharField(max_length=255)
    reason = models.CharField(max_length=32, help_text="rate_limit or payload_too_large.")
    count = models.IntegerField(db_default=1, help_text="Enqueue calls refused in that minute.")
    jobs = models.IntegerField(db_default=0, help_text="Jobs those calls would have enqueued.")
    message = models.TextField(help_text="The error the latest caller got.")
    first_at = models.DateTimeField(db_default=Now())
    last_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_refusal"
        ordering = ["-last_at"]
        verbose_name = "refused enqueue"
        constraints = [models.UniqueConstraint(fields=["minute", "queue", "task", "reason"],
                                               name="pgqueue_refusal_minute_queue_task_reason")]
        # Serves the admin's newest-first list and refusal_prune (kept KEEP_FAILED_SECONDS).
        indexes = [models.Index(fields=["last_at"], name="pgqueue_refusal_last")]

    def __str__(self) -> str:
        return f"{self.queue} {self.task}: {self.reason} x{self.count}"
