"""Semaphores (at most `limit` jobs with the same concurrency key hold a slot, ready or running, at once)
and rate limits (token buckets per rate key).

A semaphore is one row per key and one row per slot; a job holds a slot by number. Enqueuers take free
slots with SKIP LOCKED; a job's slot row is written only by that job's own transitions, so releasing a
slot never waits for an enqueuing transaction."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Semaphore(models.Model):
    key = models.CharField(max_length=255, primary_key=True)
    limit = models.IntegerField(help_text="Jobs with this key that may hold a slot (be ready or run) at once.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_semaphore"
        ordering = ["key"]
        constraints = [models.CheckConstraint(condition=Q(limit__gte=1), name="pgqueue_semaphore_limit_positive")]

    def __str__(self) -> str:
        return f"{self.key} (limit {self.limit})"


class SemaphoreSlot(models.Model):
    id = models.BigAutoField(primary_key=True)
    semaphore = models.ForeignKey(Semaphore, on_delete=models.CASCADE, db_column="key", related_name="slots",
                                  db_constraint=False, db_index=False)
    number = models.IntegerField()
    # No database constraint: holders come and go in the statements that move them.
    job = models.ForeignKey("pgqueue.Job", null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+",
                            db_constraint=False, db_index=False)

    class Meta:
        db_table = "pgqueue_semaphore_slot"
        ordering = ["semaphore", "number"]
        constraints = [models.UniqueConstraint(fields=["semaphore", "number"], name="pgqueue_slot_key_number")]
        indexes = [
            # Serves taking a free slot and the hand-off sweep.
            models.Index(fields=["semaphore", "number"], name="pgqueue_slot_free", condition=Q(job__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.semaphore_id}#{self.number}"


class RateLimit(models.Model):
    """A rate key's token bucket: `limit` starts per `window` seconds, `tokens` left at `updated_at`.

    Created by the first enqueue of a job with the key (never locked by an enqueue); locked only by the
    lease that spends its tokens. Jobs of the key that find no token are deferred ('scheduled') to when
    theirs comes; `deferred_until` is the latest time given so far, so later ones queue up behind it."""

    key = models.CharField(max_length=255, primary_key=True)
    limit = models.IntegerField(help_text="Starts allowed per window (the bucket's size).")
    window = models.FloatField(help_text="Seconds.")
    tokens = models.FloatField(help_text="Starts left at updated_at (it refills at limit per window).")
    updated_at = models.DateTimeField(db_default=Now())
    deferred_until = models.DateTimeField(
        null=True, blank=True, help_text="The latest start time given to a job deferred for want of a token."
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_ratelimit"
        ordering = ["key"]
        verbose_name = "rate limit"
        constraints = [
            models.CheckConstraint(condition=Q(limit__gte=1), name="pgqueue_ratelimit_limit_positive"),
            # RATE_WINDOW_MIN to SECONDS_MAX (pgqueue.conf): what the SQL's refill and deferral can compute
            models.CheckConstraint(condition=Q(window__gte=0.001, window__lte=31_536_000),
                                   name="pgqueue_ratelimit_window_range"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.limit} per {self.window:g} s)"
