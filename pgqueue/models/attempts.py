"""The attempt table: one row per attempt of a job, whatever its outcome."""

from __future__ import annotations

from django.db import models

from pgqueue.types import Outcome

OUTCOME_CHOICES = [(o.value, o.value.capitalize()) for o in Outcome]


class Attempt(models.Model):
    id = models.BigAutoField(primary_key=True)
    # No database constraint: attempts are written only by named statements that join on the job row
    # they just moved, and the FK check would lock that row again for every attempt (measured ~15% of
    # the completion cost). Django still cascades deletes from the admin; job_prune deletes both.
    job = models.ForeignKey("pgqueue.Job", on_delete=models.CASCADE, related_name="attempt_set",
                            db_constraint=False)
    number = models.IntegerField()
    worker = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration = models.FloatField(help_text="Seconds.")
    outcome = models.CharField(max_length=16, choices=OUTCOME_CHOICES)
    error_class = models.CharField(max_length=255, blank=True, db_default="")
    message = models.TextField(blank=True, db_default="")
    traceback = models.TextField(blank=True, db_default="")
    exit_code = models.IntegerField(
        null=True, blank=True, help_text="Lost to a crash: the process's exit code (negative: killed by that signal)."
    )

    class Meta:
        db_table = "pgqueue_attempt"
        ordering = ["job_id", "id"]

    def __str__(self) -> str:
        return f"job #{self.job_id} attempt {self.number}: {self.outcome}"
