"""Admin registration of pgqueue's tables (read-mostly; job actions go through pgqueue.operations)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from pgqueue import operations
from pgqueue.models import Attempt, Job, QueueState, WorkerProcess


class AttemptInline(admin.TabularInline):
    model = Attempt
    fields = ("number", "outcome", "worker", "started_at", "duration", "error_class", "message", "traceback")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "queue", "state", "attempts", "max_attempts", "priority", "run_at",
                    "progress", "reason_code", "last_error_short")
    list_filter = ("state", "queue", "reason_code")
    search_fields = ("=id", "task")
    readonly_fields = [f.name for f in Job._meta.fields]
    inlines = [AttemptInline]
    actions = ["cancel_jobs", "replay_jobs"]
    show_full_result_count = False

    @admin.display(description="last error")
    def last_error_short(self, job: Job) -> str:
        return (job.last_error or "")[:80]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        result = operations.cancel(list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{len(result)} job(s) cancelled or asked to stop.", messages.SUCCESS)

    @admin.action(description="Replay selected dead or cancelled jobs", permissions=["replay"])
    def replay_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        result = operations.replay(list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{len(result)} job(s) replayed as new jobs.", messages.SUCCESS)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("pgqueue.cancel_job")  # type: ignore[union-attr]

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("pgqueue.replay_job")  # type: ignore[union-attr]


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "number", "outcome", "worker", "started_at", "duration", "error_class")
    list_filter = ("outcome",)
    search_fields = ("=job__id", "error_class")
    readonly_fields = [f.name for f in Attempt._meta.fields]
    list_select_related = ("job",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(QueueState)
class QueueStateAdmin(admin.ModelAdmin):
    list_display = ("name", "paused", "updated_at")
    list_editable = ("paused",)


@admin.register(WorkerProcess)
class WorkerProcessAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "state", "hostname", "pid", "queues", "concurrency", "started_at",
                    "last_heartbeat")
    list_filter = ("kind", "state")
    readonly_fields = [f.name for f in WorkerProcess._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
