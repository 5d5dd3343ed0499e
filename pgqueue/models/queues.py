"""Per-queue operator state: paused or not, and limits used by later features."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class QueueState(models.Model):
    name = models.CharField(max_length=100, primary_key=True)
    paused = models.BooleanField(db_default=False, help_text="Workers lease nothing from a paused queue.")
    pause_when_empty = models.BooleanField(
        db_default=False, help_text="Drain and pause: maintenance pauses the queue once nothing in it is ready."
    )
    concurrency_limit = models.IntegerField(
        null=True, blank=True, help_text="Running jobs at most, cluster-wide (its slots: semaphore pgqueue:queue:<name>)."
    )
    rate_limit = models.IntegerField(null=True, blank=True, help_text="Jobs started per rate window at most.")
    rate_window = models.FloatField(null=True, blank=True, help_text="Seconds.")
    rate_tokens = models.FloatField(null=True, blank=True, help_text="Starts left in the token bucket.")
    rate_updated_at = models.DateTimeField(null=True, blank=True, help_text="When the bucket was last counted.")
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_queuestate"
        ordering = ["name"]
        verbose_name = "queue"
        permissions = [("pause_queue", "Can pause and resume queues")]

    def __str__(self) -> str:
        return self.name
