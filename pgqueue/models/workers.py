"""Processes of pgqueue_worker supervisors: the supervisor, its workers and its maintenance role."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class WorkerProcess(models.Model):
    KIND_CHOICES = [("supervisor", "Supervisor"), ("worker", "Worker"), ("maintenance", "Maintenance"), ("scheduler", "Scheduler"),
                    ("metrics", "Metrics")]
    STATE_CHOICES = [("running", "Running"), ("stopping", "Stopping"), ("stopped", "Stopped"), ("dead", "Dead")]

    id = models.CharField(max_length=64, primary_key=True)
    kind = models.CharField(max_length=16, choices=KIND_CHOICES)
    supervisor_id = models.CharField(max_length=64, blank=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.CharField(max_length=1000, blank=True)
    concurrency = models.IntegerField(db_default=0)
    # database connections pgqueue opens for this process (not those of job code using the ORM)
    connections = models.IntegerField(db_default=1)
    state = models.CharField(max_length=16, choices=STATE_CHOICES, db_default="running")
    started_at = models.DateTimeField(db_default=Now())
    last_heartbeat = models.DateTimeField(db_default=Now())  # written by the process itself
    # A worker's supervisor saw it alive (its child, not yet reaped): a job starving its process's own
    # heartbeat does not make the process look dead.
    vouched_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pgqueue_workerprocess"
        ordering = ["-started_at"]
        verbose_name = "worker process"
        verbose_name_plural = "worker processes"
        indexes = [
            models.Index(fields=["last_heartbeat"], name="pgqueue_worker_alive", condition=Q(state__in=["running", "stopping"]))
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.hostname}:{self.pid})"
