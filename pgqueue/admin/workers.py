"""Worker processes in the admin: who is alive, with heartbeat age, and which maintenance process leads."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from pgqueue.admin.base import PgQueueAdmin, alias
from pgqueue.models import Leader, WorkerProcess


@admin.register(WorkerProcess)
class WorkerProcessAdmin(PgQueueAdmin):
    list_display = ("id", "kind", "state", "hostname", "pid", "queues", "concurrency", "connections", "started_at",
                    "heartbeat_age", "leads")
    list_filter = ("kind", "state")
    search_fields = ("id", "hostname")
    readonly_fields = [f.name for f in WorkerProcess._meta.fields]

    @admin.display(description="heartbeat age", ordering="last_heartbeat")
    def heartbeat_age(self, process: WorkerProcess) -> str:
        return f"{(timezone.now() - process.last_heartbeat).total_seconds():.1f} s"

    @admin.display(description="leads")
    def leads(self, process: WorkerProcess) -> str:
        """The maintenance leader: its lead's token while the lead runs (pgqueue_leader)."""
        if process.kind != "maintenance":
            return ""
        lead = Leader.objects.using(alias()).filter(role="maintenance", holder=process.id,
                                                            expires_at__gt=timezone.now()).first()
        return f"leader (token {lead.token})" if lead is not None else ""
