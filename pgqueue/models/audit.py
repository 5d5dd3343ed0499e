"""The audit log: every operator action from the admin (who, when, what, how many)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class AuditEntry(models.Model):
    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(db_default=Now(), db_index=True)
    # No database constraint: the audit log lives on pgqueue's database, which may not hold the users.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+", db_constraint=False)
    username = models.CharField(max_length=150, blank=True, help_text="Kept if the user is deleted.")
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=20, help_text="job or queue")
    count = models.IntegerField(help_text="Rows the action changed.")
    selected = models.IntegerField(help_text="Rows the operator selected.")
    object_ids = models.JSONField(default=list, blank=True, help_text="The first 1000 ids or names.")
    scope = models.TextField(blank=True, help_text="The changelist filter when 'all matching' was used.")

    class Meta:
        db_table = "pgqueue_auditentry"
        ordering = ["-at"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.username} {self.action} {self.count} {self.target}(s)"
