"""Per-queue operator state: paused or not, its limits (running jobs, starts per window) and its circuit
breaker."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from pgqueue.text import counted


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
    # circuit breaker: breaker_threshold failures in a row within breaker_window seconds pause the queue
    # for breaker_cooldown seconds (docs/concurrency.md)
    breaker_threshold = models.IntegerField(null=True, blank=True, help_text="Failures in a row that trip it.")
    breaker_window = models.FloatField(null=True, blank=True, help_text="Seconds the failures must fall within.")
    breaker_cooldown = models.FloatField(null=True, blank=True, help_text="Seconds it stays paused once tripped.")
    breaker_failures = models.IntegerField(db_default=0, help_text="Failures in a row so far.")
    breaker_first_failure_at = models.DateTimeField(null=True, blank=True)
    breaker_trips = models.IntegerField(db_default=0, help_text="Times it tripped.")
    paused_reason = models.TextField(blank=True, db_default="", help_text="Why it is paused, if not by hand.")
    resume_at = models.DateTimeField(null=True, blank=True, help_text="Maintenance resumes it then (a tripped breaker).")
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_queuestate"
        ordering = ["name"]
        verbose_name = "queue"
        permissions = [("pause_queue", "Can pause and resume queues")]
        constraints = [
            # RATE_WINDOW_MIN to SECONDS_MAX (pgqueue.conf): what the SQL's bucket refill can compute
            models.CheckConstraint(condition=Q(rate_window__isnull=True)
                                   | Q(rate_window__gte=0.001, rate_window__lte=31_536_000),
                                   name="pgqueue_queuestate_rate_window_range"),
        ]

    def __str__(self) -> str:
        return str(self.name)

    def describe(self) -> str:
        """Its state, limits and breaker in words (pgqueue_queue list, the admin's queue list)."""
        if self.paused:
            parts = [f"paused ({self.paused_reason})" if self.paused_reason else "paused"]
            if self.resume_at:
                parts.append(f"resumes at {self.resume_at:%Y-%m-%d %H:%M:%S}")
        else:
            parts = ["draining, then pause" if self.pause_when_empty else "active"]
        if self.concurrency_limit is not None:
            parts.append(f"at most {self.concurrency_limit} running")
        if self.rate_limit is not None:
            parts.append(f"at most {self.rate_limit} starts per {_seconds(self.rate_window)} s")
        if self.breaker_threshold is not None:
            parts.append(f"breaker: {counted(self.breaker_threshold, 'failure')} in {_seconds(self.breaker_window)} s "
                         f"pause it for {_seconds(self.breaker_cooldown)} s ({self.breaker_failures} in a row now, "
                         f"tripped {counted(self.breaker_trips, 'time')})")
        return "; ".join(parts)


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
