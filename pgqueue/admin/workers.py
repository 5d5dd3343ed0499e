"""Worker processes in the admin: who is alive, with heartbeat age, and which maintenance process leads."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from pgqueue.admin.base import PgQueueAdmin, alias
from pgqueue.admin.display import ago, breakable, listing, seconds
from pgqueue.conf import get_settings
from pgqueue.models import Leader, WorkerProcess
from pgqueue.text import counted


@admin.register(WorkerProcess)
class WorkerProcessAdmin(PgQueueAdmin):
    list_display = ("process", "kind_and_state", "queue_list", "capacity", "heartbeat_age")
    list_filter = ("kind", "state")
    search_fields = ("id", "hostname")
    readonly_fields = [f.name for f in WorkerProcess._meta.fields]

    @admin.display(description="process, host:pid", ordering="id")
    def process(self, process: WorkerProcess) -> str:
        return format_html('{}<br><span class="pgqueue-quiet">{}:{}</span>', process.id, breakable(process.hostname),
                           process.pid)

    @admin.display(description="kind, state", ordering="kind")
    def kind_and_state(self, process: WorkerProcess) -> str:
        """Its kind and state, and for the maintenance leader its lead's token while the lead runs
        (pgqueue_leader)."""
        lead = None
        if process.kind == "maintenance":
            lead = Leader.objects.using(alias()).filter(role="maintenance", holder=process.id,
                                                        expires_at__gt=timezone.now()).first()
        return format_html('{}<br><span class="pgqueue-quiet">{}</span>{}', process.kind, process.state,
                           format_html('<br><span class="pgqueue-quiet">leader (token {})</span>', lead.token)
                           if lead is not None else "")

    @admin.display(description="queues", ordering="queues")
    def queue_list(self, process: WorkerProcess) -> str:
        return listing(process.queues)

    @admin.display(description="threads", ordering="concurrency")
    def capacity(self, process: WorkerProcess) -> str:
        """Its job threads (workers only), and the database connections pgqueue opened for it."""
        threads = counted(process.concurrency, "thread") if process.kind == "worker" else ""
        return format_html('{}<br><span class="pgqueue-quiet">{}</span>', threads,
                           counted(process.connections, "connection"))

    @admin.display(description="heartbeat, up", ordering="last_heartbeat")
    def heartbeat_age(self, process: WorkerProcess) -> str:
        """How long ago it last heartbeat (in red when it is overdue while it should be running), and how
        long it has been (or was) up."""
        age = (timezone.now() - process.last_heartbeat).total_seconds()
        silent = process.state in ("running", "stopping") and age >= get_settings().WORKER_DEAD_AFTER
        up = ((process.stopped_at or timezone.now()) - process.started_at).total_seconds()
        return format_html('<span class="{}" title="{}">{}</span><br><span class="pgqueue-quiet" title="started {}">'
                           'up {}</span>', "pgqueue-bad" if silent else "",
                           "silent for longer than WORKER_DEAD_AFTER: maintenance will take its jobs back" if silent
                           else f"{timezone.localtime(process.last_heartbeat):%Y-%m-%d %H:%M:%S}", ago(age),
                           f"{timezone.localtime(process.started_at):%Y-%m-%d %H:%M:%S}", seconds(up))
