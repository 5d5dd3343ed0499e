"""The job table: one row per job, from enqueue to its final state."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from pgqueue.types import FINISHED_STATES, JobState, ReasonCode

STATE_CHOICES = [(s.value, s.value.capitalize()) for s in JobState]
REASON_CHOICES = [("", "-")] + [(r.value, r.value.replace("_", " ")) for r in ReasonCode]


class Job(models.Model):
    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=100)
    task = models.CharField(max_length=255, help_text="Dotted path of the @job function.")
    args = models.JSONField(default=list, db_default=[])
    kwargs = models.JSONField(default=dict, db_default={})
    state = models.CharField(max_length=16, choices=STATE_CHOICES, db_default=JobState.READY.value)
    priority = models.SmallIntegerField(db_default=0, help_text="Higher runs first (-100..100).")
    run_at = models.DateTimeField(db_default=Now(), help_text="Not before this time.")
    attempts = models.IntegerField(db_default=0, help_text="Attempts started so far (released ones not counted).")
    max_attempts = models.IntegerField(db_default=3, help_text="Attempts that may fail (lost ones not counted).")
    lost_attempts = models.IntegerField(
        db_default=0, help_text="Attempts lost to a dead or silent worker: their own budget of max_attempts."
    )
    crashes = models.IntegerField(
        db_default=0, help_text="Attempts whose worker process crashed; above 0 the job runs alone in its process."
    )
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds an attempt may run.")
    leased_by = models.CharField(max_length=64, null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(db_default=False)
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.TextField(blank=True, db_default="")
    result = models.JSONField(null=True, blank=True)
    error_class = models.CharField(max_length=255, blank=True, db_default="")
    last_error = models.TextField(blank=True, db_default="")
    reason_code = models.CharField(max_length=32, choices=REASON_CHOICES, blank=True, db_default="")
    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False, db_index=False,
        related_name="replays", help_text="The dead or cancelled job this one replays.",
    )
    # Flow control (docs/concurrency.md): the uniqueness key it took, its idempotency key, its semaphore.
    lock_key = models.CharField(max_length=255, null=True, blank=True, help_text="The uniqueness key it took.")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    concurrency_key = models.CharField(
        max_length=255, null=True, blank=True, help_text="Its semaphore (a concurrency or ordering key)."
    )
    slot = models.IntegerField(null=True, blank=True, help_text="The semaphore slot it holds (ready or running).")
    queue_slot = models.IntegerField(
        null=True, blank=True, help_text="The running slot it holds in its queue's concurrency limit."
    )
    concurrency_hold = models.BooleanField(
        db_default=False, help_text="Keeps its slot while it waits to retry (an ordering key holding the line)."
    )
    rate_key = models.CharField(
        max_length=255, null=True, blank=True, help_text="Its rate limit: each start takes a token of this key's bucket."
    )
    # Batches and dependencies (docs/batches.md, docs/workflows.md).
    batch = models.ForeignKey(
        "pgqueue.Batch", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
        related_name="jobs", help_text="The batch it belongs to.",
    )
    callback_of = models.ForeignKey(
        "pgqueue.Batch", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
        related_name="callbacks", help_text="The batch whose callback it is.",
    )
    waiting_on = models.IntegerField(db_default=0, help_text="Jobs it depends on that have not finished yet.")
    has_dependents = models.BooleanField(db_default=False, help_text="Some job depends on it.")
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True, help_text="Start of the latest attempt.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pgqueue_job"
        ordering = ["-id"]
        indexes = [
            # Serves job_lease: per queue, in lease order, ready rows without a rate limit only (finished rows
            # are not in it).
            models.Index(
                fields=["queue", "-priority", "run_at", "id"], name="pgqueue_job_ready",
                condition=Q(state="ready", rate_key__isnull=True),
            ),
            # Serves job_lease_limited: ready rows with a rate limit, per queue, in lease order.
            models.Index(
                fields=["queue", "-priority", "run_at", "id"], name="pgqueue_job_rated",
                condition=Q(state="ready", rate_key__isnull=False),
            ),
            # Serves the deferral of a rate key's waiting jobs, in lease order.
            models.Index(
                fields=["rate_key", "-priority", "run_at", "id"], name="pgqueue_job_rate_key",
                condition=Q(state="ready", rate_key__isnull=False),
            ),
            # Serves job_lease_suspect: jobs that must run alone (crash suspects); almost always empty.
            models.Index(fields=["queue"], name="pgqueue_job_suspect", condition=Q(state="ready", crashes__gt=0)),
            # Serves job_stage_due.
            models.Index(fields=["run_at"], name="pgqueue_job_scheduled", condition=Q(state="scheduled")),
            # Serves job_get_held_by_worker and job_heartbeat.
            models.Index(fields=["leased_by"], name="pgqueue_job_running", condition=Q(state="running")),
            # Serves job_prune and "recently finished" views.
            models.Index(fields=["finished_at"], name="pgqueue_job_finished", condition=Q(state__in=list(FINISHED_STATES))),
            models.Index(fields=["replay_of"], name="pgqueue_job_replays", condition=Q(replay_of__isnull=False)),
            # Serves the semaphore hand-off: blocked jobs of a key in enqueue order; and, with its queue,
            # pgqueue.monitor's per-queue count of blocked jobs. The only index naming 'blocked', so no kept
            # plan can walk every blocked job to find one key's (one did: 37 ms a hand-off, W1 under a
            # semaphore at 0.1 of plain W1).
            models.Index(fields=["concurrency_key", "id"], name="pgqueue_job_blocked_key", condition=Q(state="blocked"),
                         include=["queue"]),
            # Serves the admin's search by idempotency key.
            models.Index(fields=["idempotency_key"], name="pgqueue_job_idempotency",
                         condition=Q(idempotency_key__isnull=False)),
            # Serve a batch's progress, and batch_settle's look for members that have not finished.
            models.Index(fields=["batch", "state"], name="pgqueue_job_batch", condition=Q(batch__isnull=False)),
            models.Index(fields=["batch"], name="pgqueue_job_batch_open",
                         condition=Q(batch__isnull=False) & ~Q(state__in=list(FINISHED_STATES))),
            models.Index(fields=["callback_of"], name="pgqueue_job_callbacks", condition=Q(callback_of__isnull=False)),
            # Serves the per-queue counts of pgqueue.monitor (metrics, health, status) for the states the
            # plain path never enters, dead history included; ready, running and blocked have their own.
            models.Index(fields=["queue", "state"], name="pgqueue_job_queue_states",
                         condition=Q(state__in=["scheduled", "waiting", "dead"])),
            # Serves "dead jobs by reason" and the dead-letter views.
            models.Index(fields=["reason_code", "finished_at"], name="pgqueue_job_dead", condition=Q(state="dead")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=[s.value for s in JobState]), name="pgqueue_job_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=-100, priority__lte=100), name="pgqueue_job_priority_range"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="pgqueue_job_max_attempts_positive"),
        ]
        permissions = [
            ("retry_job", "Can retry jobs"),
            ("cancel_job", "Can cancel jobs"),
            ("replay_job", "Can replay dead jobs"),
            ("delete_finished_job", "Can delete finished jobs"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.task} ({self.state})"
