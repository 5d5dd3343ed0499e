"""The archive: finished jobs moved out of the hot table by retention when PGQUEUE['ARCHIVE'] is on, each
row the job as JSON with its attempts, kept until ARCHIVE_KEEP_SECONDS after archiving."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class ArchivedJob(models.Model):
    id = models.BigIntegerField(primary_key=True, help_text="The job's id.")
    queue = models.CharField(max_length=100)
    task = models.CharField(max_length=255)
    state = models.CharField(max_length=16)
    reason_code = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    archived_at = models.DateTimeField(db_default=Now())
    job = models.JSONField(help_text="The job row as it was when it was archived.")
    attempts = models.JSONField(help_text="Its attempt rows, oldest first.")

    class Meta:
        db_table = "pgqueue_archivedjob"
        ordering = ["-archived_at"]
        verbose_name = "archived job"
        indexes = [
            # Serves the archive's own retention (archive_prune) and the admin's newest-first list.
            models.Index(fields=["archived_at"], name="pgqueue_archive_archived"),
            models.Index(fields=["queue", "finished_at"], name="pgqueue_archive_queue"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.task} ({self.state}, archived)"
