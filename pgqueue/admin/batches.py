"""Batches in the admin: each batch's progress bar and counts by state, its callbacks and when their
moments came, links to its jobs; cancel."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from pgqueue.admin.actions import confirmed_action
from pgqueue.admin.base import PgQueueAdmin, alias, job_link
from pgqueue.enqueuing.batches import Batch as BatchHandle
from pgqueue.enqueuing.batches import BatchProgress, progress_of
from pgqueue.models import Batch, Job


def _cancel(ids: list[int]) -> list[int]:
    """Cancel batches; the ids of those that had jobs to cancel or ask to stop, or were still open."""
    changed = []
    for batch_id in ids:
        row = Batch.objects.using(alias()).filter(pk=batch_id).first()
        if row is None or row.cancelled_at is not None or row.finished_at is not None:
            continue
        BatchHandle(batch_id).cancel()
        changed.append(batch_id)
    return changed


def _counts(ids: list[int]) -> dict[int, dict[str, int]]:
    """The jobs of these batches counted by state, in one query."""
    counts: dict[int, dict[str, int]] = {}
    rows = (Job.objects.using(alias()).filter(batch_id__in=ids).values_list("batch_id", "state")
            .annotate(n=Count("id")).order_by())
    for batch_id, state, n in rows:
        counts.setdefault(batch_id, {})[state] = n
    return counts


@admin.register(Batch)
class BatchAdmin(PgQueueAdmin):
    list_display = ("id", "description", "progress_bar", "status", "callbacks_short", "created_at", "finished_at")
    list_display_links = ("id", "description")
    search_fields = ("description",)
    search_help_text = "A batch id, or text in its description."
    ordering = ("-id",)
    list_per_page = 50
    fieldsets = [
        (None, {"fields": ("description", "status", "progress_bar", "counts")}),
        ("Callbacks", {"fields": ("callback_lines",)}),
        ("Times", {"fields": ("created_at", "closed_at", "failed_at", "finished_at", "succeeded_at", "cancelled_at")}),
    ]
    readonly_fields = ("description", "status", "progress_bar", "counts", "callback_lines", "created_at",
                       "closed_at", "failed_at", "finished_at", "succeeded_at", "cancelled_at")
    actions = [
        confirmed_action(
            name="cancel_batches", description="Cancel", permission="cancel", target="batch", run=_cancel,
            explain="Each batch's waiting jobs are cancelled now and its running jobs are asked to stop; no job "
                    "can be added to it any more. Its on_finish callback runs once they have all stopped; "
                    "on_success never will.",
        ),
    ]

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("pgqueue.cancel_batch"))  # type: ignore[union-attr]

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        term = search_term.strip()
        if term.isascii() and term.isdigit() and len(term) <= 18:
            return queryset.filter(pk=int(term)), False
        return super().get_search_results(request, queryset, search_term)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The page's batches get their jobs counted by state in one query (stored on each row)."""
        changelist = super().get_changelist_instance(request)
        counts = _counts([b.id for b in changelist.result_list])
        for batch in changelist.result_list:
            batch.__dict__["pgqueue_counts"] = counts.get(batch.id, {})
        return changelist

    @staticmethod
    def _progress(batch: Batch) -> BatchProgress:
        counts = batch.__dict__.get("pgqueue_counts")
        if counts is None:  # a batch's own page
            counts = batch.__dict__["pgqueue_counts"] = _counts([batch.id]).get(batch.id, {})
        return progress_of(batch, counts)

    @admin.display(description="progress")
    def progress_bar(self, batch: Batch) -> str:
        p = self._progress(batch)
        return format_html(
            '<progress class="pgqueue-batch-progress" max="{}" value="{}"></progress> {} of {} done '
            '({} succeeded, {} dead, {} cancelled, {} running, {} waiting)',
            max(p.total, 1), p.done, p.done, p.total, p.succeeded, p.dead, p.cancelled, p.running, p.waiting)

    @admin.display(description="status")
    def status(self, batch: Batch) -> str:
        if batch.cancelled_at is not None:
            return "cancelled" + (", finished" if batch.finished_at else "")
        if batch.succeeded_at is not None:
            return "succeeded"
        if batch.finished_at is not None:
            return "finished with failures"
        if batch.closed_at is None:
            return "open (jobs may be added)"
        return "failing (a job is dead)" if batch.failed_at else "running"

    @admin.display(description="jobs by state")
    def counts(self, batch: Batch) -> str:
        p = self._progress(batch)
        base = reverse("admin:pgqueue_job_changelist")
        values = {"all": p.total, "running": p.running, "succeeded": p.succeeded, "dead": p.dead,
                  "cancelled": p.cancelled}
        links = ((base, urlencode({"batch": batch.id, **({"state__exact": s} if s != "all" else {})}), s, n)
                 for s, n in values.items())
        return format_html("{}; waiting to run: {}", format_html_join(", ", '<a href="{}?{}">{}: {}</a>', links),
                           p.waiting)

    @admin.display(description="callbacks")
    def callbacks_short(self, batch: Batch) -> str:
        parts = []
        for name, _spec, job_id in self._callbacks(batch):
            parts.append(format_html("{} {}", name, job_link(job_id) if job_id else self._pending(batch, name)))
        return format_html_join(", ", "{}", ((p,) for p in parts)) or "-"

    @admin.display(description="callbacks")
    def callback_lines(self, batch: Batch) -> str:
        lines = []
        for name, spec, job_id in self._callbacks(batch):
            when = {"on_success": batch.succeeded_at, "on_finish": batch.finished_at,
                    "on_failure": batch.failed_at}[name]
            ran = (format_html("enqueued as {} at {}", job_link(job_id), when) if job_id
                   else "never (the batch was cancelled)" if self._pending(batch, name) == "(never)" else "not enqueued yet")
            lines.append(format_html("<code>{}</code>: {}({}) on queue {}: {}.", name, spec.get("task"),
                                     ", ".join(repr(a) for a in spec.get("args") or []), spec.get("queue"), ran))
        return format_html_join("", "<p>{}</p>", ((line,) for line in lines)) or "-"

    @staticmethod
    def _pending(batch: Batch, name: str) -> str:
        """An unfired callback: "(never)" for the success callback of a cancelled batch, else "(not yet)"."""
        return "(never)" if name == "on_success" and batch.cancelled_at is not None else "(not yet)"

    @staticmethod
    def _callbacks(batch: Batch) -> list[tuple[str, dict[str, Any], int | None]]:
        return [(name, spec, job_id) for name, spec, job_id in (
            ("on_success", batch.on_success, batch.success_job_id), ("on_finish", batch.on_finish, batch.finish_job_id),
            ("on_failure", batch.on_failure, batch.failure_job_id)) if spec is not None]
