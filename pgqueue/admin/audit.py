"""The audit log in the admin: read-only."""

from __future__ import annotations

from django.contrib import admin

from pgqueue.admin.base import PgQueueAdmin
from pgqueue.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(PgQueueAdmin):
    list_display = ("at", "username", "action", "target", "count", "selected", "scope")
    list_filter = ("action", "target")
    search_fields = ("username", "action")
    readonly_fields = [f.name for f in AuditEntry._meta.fields]



