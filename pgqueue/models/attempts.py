"""The attempt table: one row per attempt of a job, whatever its outcome."""

from __future__ import annotations

from django.db import models

from pgqueue.types import Outcome

OUTCOME_CHOICES = [(o.value, o.value.capitalize()) for o in Outcome]


class Attempt(models.Model):
    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey("pgqueue.Job", on_delete=models.CASCADE, related_name="attempt_set")
    number = models.IntegerField()
    worker = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration = models.FloatField(help_text="Seconds.")
    outcome = models.CharField(max_length=16, choices=OUTCOME_CHOICES)
    error_class = models.CharField(max_length=255, blank=True, db_default="")
    message = models.TextField(blank=True, db_default="")
    traceback = models.TextField(blank=True, db_default="")

    class Meta:
        db_table = "pgqueue_attempt"
        ordering = ["job_id", "id"]
        indexes = [models.Index(fields=["finished_at"], name="pgqueue_attempt_finished")]

    def __str__(self) -> str:
        return f"job #{self.job_id} attempt {self.number}: {self.outcome}"
