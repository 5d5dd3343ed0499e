"""The outbox in the admin: events pending and relayed, the relay lag, each event's payload and the jobs
its subscribers got (with their states)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from pgqueue import outbox
from pgqueue.admin.base import PgQueueAdmin, alias, job_link
from pgqueue.models import Delivery, Job, OutboxEvent
from pgqueue.text import counted, duration_text


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "pending"), ("relayed", "relayed")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "pending":
            return queryset.filter(relayed_at__isnull=True)
        if self.value() == "relayed":
            return queryset.filter(relayed_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(PgQueueAdmin):
    list_display = ("id", "topic", "key", "status", "created_at", "relay_wait")
    list_filter = (StatusFilter,)
    search_fields = ("topic", "key")
    search_help_text = "An event id, or text in its topic or key."
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False
    fields = ("topic", "key", "status", "payload_pretty", "created_at", "relayed_at", "delivery_lines")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        term = search_term.strip()
        if term.isascii() and term.isdigit() and len(term) <= 18:
            return queryset.filter(pk=int(term)), False
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        pending, lag = outbox.pending_lag(alias())
        title = ("Outbox events: none pending" if not pending else
                 f"Outbox events: {pending} pending, the oldest for {duration_text(lag or 0.0)} (relay lag)")
        return super().changelist_view(request, {**(extra_context or {}), "title": title})

    @admin.display(description="status")
    def status(self, event: OutboxEvent) -> str:
        if event.relayed_at is None:
            return "pending"
        return f"relayed to {counted(event.deliveries, 'subscriber')}" if event.deliveries else "relayed (no subscriber)"

    @admin.display(description="relayed after")
    def relay_wait(self, event: OutboxEvent) -> str:
        if event.relayed_at is None:
            return "-"
        return duration_text(max(0.0, (event.relayed_at - event.created_at).total_seconds()))

    @admin.display(description="payload")
    def payload_pretty(self, event: OutboxEvent) -> str:
        return format_html('<pre class="pgqueue-json">{}</pre>', json.dumps(event.payload, indent=2, ensure_ascii=False))

    @admin.display(description="subscribers' jobs")
    def delivery_lines(self, event: OutboxEvent) -> str:
        rows = list(Delivery.objects.using(alias()).filter(event_id=event.id).order_by("id")
                    .values_list("subscriber", "job_id"))
        if not rows:
            return "-"
        states = dict(Job.objects.using(alias()).filter(id__in=[j for _, j in rows]).values_list("id", "state"))
        return format_html_join("", "<p><code>{}</code>: {} ({})</p>",
                                ((s, job_link(j), states.get(j, "pruned")) for s, j in rows))
