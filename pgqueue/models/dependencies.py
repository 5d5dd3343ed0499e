"""Dependencies between jobs: job `job_id` waits ('waiting') until job `depends_on_id` has finished
(docs/workflows.md). An edge is settled once, when its parent reached a final state: then it no longer
holds its job back (the parent succeeded, or failed under on_failure='run') or it cancelled it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

ON_FAILURE_CHOICES = [("cancel", "cancel the job"), ("run", "run the job anyway")]


class Dependency(models.Model):
    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey("pgqueue.Job", on_delete=models.DO_NOTHING, related_name="dependencies",
                            db_constraint=False, db_index=False, help_text="The job that waits.")
    depends_on = models.ForeignKey("pgqueue.Job", on_delete=models.DO_NOTHING, related_name="dependents",
                                   db_constraint=False, db_index=False, help_text="The job it waits for.")
    on_failure = models.CharField(max_length=8, choices=ON_FAILURE_CHOICES, db_default="cancel",
                                  help_text="What the job does if this one is dead or cancelled.")
    settled_at = models.DateTimeField(null=True, blank=True, help_text="When the job it waits for finished.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_dependency"
        ordering = ["id"]
        verbose_name_plural = "dependencies"
        constraints = [
            models.UniqueConstraint(fields=["job", "depends_on"], name="pgqueue_dependency_edge"),
            models.CheckConstraint(condition=Q(on_failure__in=["cancel", "run"]), name="pgqueue_dependency_on_failure"),
        ]
        indexes = [
            # Serves the admin's "jobs that depend on this one".
            models.Index(fields=["depends_on"], name="pgqueue_dependency_parent"),
            # Serves dependency_settle and the maintenance sweep: edges whose parent had not finished.
            models.Index(fields=["depends_on"], name="pgqueue_dependency_unsettled", condition=Q(settled_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} after job {self.depends_on_id}"
