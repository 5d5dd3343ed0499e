"""Read-only history pages: archived jobs (retention with PGQUEUE['ARCHIVE']) and refused enqueues
(guardrails, with PGQUEUE['RECORD_REFUSALS'])."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from pgqueue.admin.base import PgQueueAdmin
from pgqueue.models import ArchivedJob, Refusal


@admin.register(ArchivedJob)
class ArchivedJobAdmin(PgQueueAdmin):
    list_display = ("id", "task", "queue", "state", "reason_code", "finished_at", "archived_at")
    list_filter = ("state", "queue")
    search_fields = ("=id", "task")
    search_help_text = "A job id, or text in its task."
    list_per_page = 50
    show_full_result_count = False
    fields = ("id", "queue", "task", "state", "reason_code", "created_at", "finished_at", "archived_at", "job_pretty",
              "attempts_pretty")
    readonly_fields = fields

    @admin.display(description="job")
    def job_pretty(self, row: ArchivedJob) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.job, indent=2, sort_keys=True, default=str))

    @admin.display(description="attempts")
    def attempts_pretty(self, row: ArchivedJob) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.attempts, indent=2, default=str))


@admin.register(Refusal)
class RefusalAdmin(PgQueueAdmin):
    list_display = ("last_at", "queue", "task", "reason", "count", "jobs", "message")
    list_filter = ("reason", "queue")
    search_fields = ("task",)
    list_per_page = 100
    show_full_result_count = False
    readonly_fields = ("minute", "queue", "task", "reason", "count", "jobs", "message", "first_at", "last_at")
    fields = readonly_fields
