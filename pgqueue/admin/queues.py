"""Queues in the admin: pause, resume, drain-and-pause (audited, permission pgqueue.pause_queue), and each
queue's page to set its limits and circuit breaker (audited, permission pgqueue.change_queuestate).

A queue gets its pgqueue_queuestate row the first time it is paused, resumed or drained (those statements
upsert). Until then the list shows it from its jobs: opening the page writes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse

from pgqueue import operations
from pgqueue.admin.actions import confirmed_action, selects_across
from pgqueue.admin.base import PgQueueAdmin, alias
from pgqueue.exceptions import InvalidJob
from pgqueue.models import Job, QueueState
from pgqueue.ops import audit

WAITING_OR_RUNNING = ["ready", "running", "scheduled"]
UNLISTED_MAX = 1000  # queues without a row shown at most (bounded query)


def unlisted_queues(search: str = "") -> list[str]:
    """Queues that have waiting or running jobs but no queue row yet, matching every word of `search`
    (case-insensitive, as the admin's search on name)."""
    names = (Job.objects.using(alias()).filter(state__in=WAITING_OR_RUNNING)
             .exclude(queue__in=QueueState.objects.using(alias()).values("name"))
             .values_list("queue", flat=True).distinct().order_by("queue")[:UNLISTED_MAX])
    words = search.casefold().split()
    return [name for name in names if all(word in name.casefold() for word in words)]


def _selected_queues(request: HttpRequest, queryset: QuerySet[Any]) -> list[str]:
    """What a queue action applies to: the selected rows, and the selected queues that have no row yet
    (all of those matching the search for "select all")."""
    names = set(queryset.values_list("name", flat=True))
    unlisted = set(unlisted_queues(request.GET.get(SEARCH_VAR, "")))
    if not selects_across(request):
        unlisted &= set(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
    return sorted(names | unlisted)


class QueueLimitsForm(forms.ModelForm):
    """A queue's limits and breaker, checked by the same rules as pgqueue.operations (nothing is saved
    here: QueueStateAdmin.save_model calls the operations)."""

    class Meta:
        model = QueueState
        fields = ["concurrency_limit", "rate_limit", "rate_window", "breaker_threshold", "breaker_window",
                  "breaker_cooldown"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.FloatField):  # Django says "Enter a number." to NaN and infinity
                field.error_messages["invalid"] = "Enter a finite number of seconds (not NaN or infinity)."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:  # a field left out of `data` would read as "not given" to the rules below
            return data
        name = self.instance.name
        try:
            operations.check_limits(name, concurrency=data.get("concurrency_limit"), rate=data.get("rate_limit"),
                                    per=data.get("rate_window"))
            operations.check_breaker(name, failures=data.get("breaker_threshold"), within=data.get("breaker_window"),
                                     cooldown=data.get("breaker_cooldown"))
        except InvalidJob as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class QueueChangeList(ChangeList):
    """Django's list of queue rows, with the queues that have jobs but no row yet added on the last page
    as unsaved rows (default settings: active). They link to their jobs, having no page of their own."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        unlisted = [QueueState(name=name, paused=False, pause_when_empty=False, updated_at=None)
                    for name in unlisted_queues(self.query)]
        if not unlisted:
            return
        self.result_count += len(unlisted)
        if self.full_result_count is not None:
            self.full_result_count += len(unlisted_queues()) if self.query else len(unlisted)
        self.show_admin_actions = True
        if self.multi_page and not (self.show_all and self.can_show_all) and self.page_num < self.paginator.num_pages:
            return
        rows = [*self.result_list, *unlisted]
        first = next(iter(self.queryset.query.order_by), None)
        if isinstance(first, str) and first.lstrip("-") in ("name", "pk"):
            rows.sort(key=lambda queue: queue.name, reverse=first.startswith("-"))
        self.result_list = rows

    def url_for_result(self, result: Any) -> str:
        if result._state.adding:
            return f"{reverse('admin:pgqueue_job_changelist')}?{urlencode({'queue': result.name})}"
        return super().url_for_result(result)


@admin.register(QueueState)
class QueueStateAdmin(PgQueueAdmin):
    list_display = ("name", "status", "ready", "running", "oldest_ready", "updated_at")
    search_fields = ("name",)
    ordering = ("name",)
    # Links carry no "_changelist_filters": an unlisted queue links to the job list, which would refuse it.
    preserve_filters = False
    actions = [
        confirmed_action(name="pause_queues", description="Pause", permission="pause", target="queue",
                         key="name", targets=_selected_queues, run=operations.pause,
                         explain="Workers stop leasing from these queues; running jobs finish. Enqueueing "
                                 "still works."),
        confirmed_action(name="resume_queues", description="Resume", permission="pause", target="queue",
                         key="name", targets=_selected_queues, run=operations.resume,
                         explain="Workers lease from these queues again."),
        confirmed_action(name="drain_and_pause_queues", description="Drain and pause", permission="pause",
                         target="queue", key="name", targets=_selected_queues, run=operations.drain_and_pause,
                         explain="Workers keep going until nothing in the queue is ready or running; then the "
                                 "maintenance process pauses it."),
    ]

    # A queue's page edits its limits and circuit breaker (permission pgqueue.change_queuestate); saving
    # goes through pgqueue.operations (named statements, checked) and the audit log, never model.save().
    form = QueueLimitsForm
    fieldsets = [
        (None, {"fields": ("name", "status")}),
        ("Limits", {"fields": ("concurrency_limit", "rate_limit", "rate_window"),
                    "description": "Running jobs at most (cluster-wide), and jobs started at most per window of "
                                   "seconds. Empty: no limit. Workers apply them from their next heartbeat."}),
        ("Circuit breaker", {"fields": ("breaker_threshold", "breaker_window", "breaker_cooldown", "breaker_state"),
                             "description": "That many failed attempts in a row within the window pause the "
                                            "queue for the cool-down. Empty: no breaker."}),
    ]
    readonly_fields = ("name", "status", "breaker_state")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("pgqueue.change_queuestate"))  # type: ignore[union-attr]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        changed = set(form.changed_data)
        if changed & {"concurrency_limit", "rate_limit", "rate_window"}:  # else the bucket is not refilled
            operations.set_limits(obj.name, concurrency=data["concurrency_limit"], rate=data["rate_limit"],
                                  per=data["rate_window"])
        if changed & {"breaker_threshold", "breaker_window", "breaker_cooldown"}:  # else the streak is kept
            operations.set_breaker(obj.name, failures=data["breaker_threshold"], within=data["breaker_window"],
                                   cooldown=data["breaker_cooldown"])
        audit.record(action="set_queue_limits", target="queue", changed=[obj.name], selected=1, user=request.user,
                     scope=", ".join(f"{k}={data[k]}" for k in QueueLimitsForm.Meta.fields if data[k] is not None))

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the audit entry above records it (django_admin_log may live on another database)

    @admin.display(description="breaker")
    def breaker_state(self, queue: QueueState) -> str:
        if queue.breaker_threshold is None:
            return "-"
        text = f"{queue.breaker_failures} failure(s) in a row now; tripped {queue.breaker_trips} time(s)"
        if queue.resume_at:
            text += f"; paused until {queue.resume_at:%Y-%m-%d %H:%M:%S} (resume the queue to end it now)"
        return text

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QueueChangeList

    @admin.display(description="status, limits, breaker")
    def status(self, queue: QueueState) -> str:
        return queue.describe()

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
