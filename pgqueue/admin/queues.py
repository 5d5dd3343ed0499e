"""Queues in the admin: pause, resume, drain-and-pause (audited, permission pgqueue.pause_queue)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from pgqueue import operations
from pgqueue.admin.actions import confirmed_action
from pgqueue.admin.base import PgQueueAdmin, alias
from pgqueue.models import Job, QueueState


@admin.register(QueueState)
class QueueStateAdmin(PgQueueAdmin):
    list_display = ("name", "status", "ready", "running", "oldest_ready", "updated_at")
    search_fields = ("name",)
    ordering = ("name",)
    actions = [
        confirmed_action(name="pause_queues", description="Pause", permission="pause", target="queue",
                         key="name", run=operations.pause,
                         explain="Workers stop leasing from these queues; running jobs finish. Enqueueing "
                                 "still works."),
        confirmed_action(name="resume_queues", description="Resume", permission="pause", target="queue",
                         key="name", run=operations.resume, explain="Workers lease from these queues again."),
        confirmed_action(name="drain_and_pause_queues", description="Drain and pause", permission="pause",
                         target="queue", key="name", run=operations.drain_and_pause,
                         explain="Workers keep going until nothing in the queue is ready or running; then the "
                                 "maintenance process pauses it."),
    ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        known = set(Job.objects.using(alias()).filter(state__in=["ready", "running", "scheduled"]).values_list("queue", flat=True)
                    .distinct()[:1000])
        missing = known - set(QueueState.objects.using(alias()).values_list("name", flat=True))
        QueueState.objects.using(alias()).bulk_create([QueueState(name=n) for n in missing], ignore_conflicts=True)
        return super().changelist_view(request, extra_context)

    @admin.display(description="status")
    def status(self, queue: QueueState) -> str:
        if queue.paused:
            return "paused"
        return "draining, then pause" if queue.pause_when_empty else "active"

    @admin.display(description="ready")
    def ready(self, queue: QueueState) -> int:
        return Job.objects.using(alias()).filter(queue=queue.name, state="ready").count()

    @admin.display(description="running")
    def running(self, queue: QueueState) -> int:
        return Job.objects.using(alias()).filter(queue=queue.name, state="running").count()

    @admin.display(description="oldest ready")
    def oldest_ready(self, queue: QueueState) -> Any:
        first = Job.objects.using(alias()).filter(queue=queue.name, state="ready").order_by("run_at").values_list("run_at",
                                                                                               flat=True).first()
        return first or "-"

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("pgqueue.pause_queue"))  # type: ignore[union-attr]
