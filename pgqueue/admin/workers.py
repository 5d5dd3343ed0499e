"""Worker processes in the admin: who is alive, with heartbeat age."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from pgqueue.admin.base import PgQueueAdmin
from pgqueue.models import WorkerProcess


@admin.register(WorkerProcess)
class WorkerProcessAdmin(PgQueueAdmin):
    list_display = ("id", "kind", "state", "hostname", "pid", "queues", "concurrency", "started_at", "heartbeat_age")
    list_filter = ("kind", "state")
    search_fields = ("id", "hostname")
    readonly_fields = [f.name for f in WorkerProcess._meta.fields]

    @admin.display(description="heartbeat age", ordering="last_heartbeat")
    def heartbeat_age(self, process: WorkerProcess) -> str:
        return f"{(timezone.now() - process.last_heartbeat).total_seconds():.1f} s"



