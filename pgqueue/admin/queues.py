"""Queues in the admin: every queue pgqueue knows of, with pause, resume, drain-and-pause (audited,
permission pgqueue.pause_queue), and each queue's page to set its limits and circuit breaker (audited,
permission pgqueue.change_queuestate).

A queue gets its pgqueue_queuestate row the first time it is paused, resumed or drained (those statements
upsert). Until then the list shows it from what names it: its jobs, the registered jobs, outbox
subscribers and schedules that declare it, the live workers that serve it, PGQUEUE["QUEUES"]. Opening the
page writes nothing, and its counts come from pgqueue.monitor's one statement over the partial indexes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.module_loading import autodiscover_modules

from pgqueue import operations
from pgqueue.admin.actions import confirmed_action, selects_across
from pgqueue.admin.base import PgQueueAdmin, alias
from pgqueue.admin.display import seconds
from pgqueue.conf import get_settings
from pgqueue.enqueuing import registry
from pgqueue.exceptions import InvalidJob, UnknownJob
from pgqueue.models import QueueState, Schedule
from pgqueue.ops import audit, monitor
from pgqueue.text import counted

UNLISTED_MAX = 1000  # queues without a row shown at most
logger = logging.getLogger("pgqueue.admin")


@dataclass(frozen=True)
class KnownQueue:
    """A queue as the list shows it: its jobs per state, lag and serving workers (pgqueue.monitor), and
    the registered jobs and schedules that put jobs in it."""

    view: monitor.QueueView
    declared_by: tuple[str, ...] = ()


def declared_queues() -> dict[str, list[str]]:
    """The queues registered jobs (outbox subscribers and django.tasks tasks among them) and declared
    schedules put jobs in, each with what does: a queue nothing was enqueued to yet is still one to pause
    before a deploy. Imports each installed app's jobs module first, as the worker does, so that a web
    process knows every job."""
    try:
        autodiscover_modules("jobs")
    except Exception:  # a broken jobs module: the worker refuses to start and says why; list the rest
        logger.warning("pgqueue's queue list could not import every app's jobs module", exc_info=True)
    default = get_settings().DEFAULT_QUEUE
    found: dict[str, list[str]] = {}
    for name, job in sorted(registry.registered().items()):
        found.setdefault(job.queue or default, []).append(name)
    for schedule, task in Schedule.objects.using(alias()).filter(declared=True).values_list("name", "task"):
        try:
            queue = registry.get(task).queue or default
        except UnknownJob:
            continue  # its scheduler logs it; nothing to say where its jobs would go
        found.setdefault(queue, []).append(f"schedule {schedule}")
    return found


def known_queues(snap: monitor.Snapshot | None = None) -> dict[str, KnownQueue]:
    """Every queue pgqueue knows of, by name: those of pgqueue.monitor's snapshot (settings, rows, jobs,
    live workers) and the declared ones."""
    declared = declared_queues()
    views = {view.name: view for view in (snap or monitor.snapshot()).queues}
    idle = dict.fromkeys(monitor.COUNTED, 0)
    return {name: KnownQueue(views.get(name) or monitor.QueueView(name=name, counts=dict(idle), lag_seconds=0.0),
                             tuple(declared.get(name, ())))
            for name in sorted(views.keys() | declared.keys())}


def _known(queue: QueueState) -> KnownQueue:
    """What QueueChangeList found about the row's queue (nothing for a row made since)."""
    found = getattr(queue, "known", None)
    return found if isinstance(found, KnownQueue) else KnownQueue(
        monitor.QueueView(name=queue.name, counts={}, lag_seconds=0.0))


def without_row(names: list[str], search: str = "") -> list[str]:
    """Those of `names` that have no queue row yet and match every word of `search` (case-insensitive,
    as the admin's search on name), at most UNLISTED_MAX."""
    words = search.casefold().split()
    names = [name for name in names if all(word in name.casefold() for word in words)]
    rows = set(QueueState.objects.using(alias()).filter(name__in=names).values_list("name", flat=True))
    return [name for name in names if name not in rows][:UNLISTED_MAX]


def _selected_queues(request: HttpRequest, queryset: QuerySet[Any]) -> list[str]:
    """What a queue action applies to: the selected rows, and the selected queues that have no row yet
    (all of those matching the search for "select all")."""
    names = set(queryset.values_list("name", flat=True))
    unlisted = set(without_row(list(known_queues()), request.GET.get(SEARCH_VAR, "")))
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
    """Django's list of queue rows, with the known queues that have no row yet added on the last page as
    unsaved rows (default settings: active). They link to their jobs, having no page of their own. Every
    row carries its KnownQueue (`known`) for the columns."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        known = known_queues()
        unlisted_all = without_row(list(known))
        unlisted = [QueueState(name=name, paused=False, pause_when_empty=False, updated_at=None)
                    for name in without_row(unlisted_all, self.query)]
        if unlisted:
            self.result_count += len(unlisted)
            if self.full_result_count is not None:
                self.full_result_count += len(unlisted_all)
            self.show_admin_actions = True
            if not self.multi_page or (self.show_all and self.can_show_all) or self.page_num >= self.paginator.num_pages:
                rows = [*self.result_list, *unlisted]
                first = next(iter(self.queryset.query.order_by), None)
                if isinstance(first, str) and first.lstrip("-") in ("name", "pk"):
                    rows.sort(key=lambda queue: queue.name, reverse=first.startswith("-"))
                self.result_list = rows
        for queue in self.result_list:
            queue.known = known.get(queue.name)

    def url_for_result(self, result: Any) -> str:
        if result._state.adding:
            return f"{reverse('admin:pgqueue_job_changelist')}?{urlencode({'queue': result.name})}"
        return super().url_for_result(result)


@admin.register(QueueState)
class QueueStateAdmin(PgQueueAdmin):
    list_display = ("name", "status", "ready", "running", "scheduled", "dead", "lag", "workers", "declared_by")
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
        text = (f"{counted(queue.breaker_failures, 'failure')} in a row now; "
                f"tripped {counted(queue.breaker_trips, 'time')}")
        if queue.resume_at:
            text += f"; paused until {queue.resume_at:%Y-%m-%d %H:%M:%S} (resume the queue to end it now)"
        return text

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QueueChangeList

    @admin.display(description="status, limits, breaker")
    def status(self, queue: QueueState) -> str:
        return queue.describe()

    def _jobs(self, queue: QueueState, state: str) -> str:
        """The queue's jobs in `state`, linked to the job list filtered on them."""
        n = _known(queue).view.counts.get(state, 0)
        url = f"{reverse('admin:pgqueue_job_changelist')}?{urlencode({'queue': queue.name, 'state__exact': state})}"
        return format_html('<a href="{}">{}</a>', url, f"{n:,}") if n else "0"

    @admin.display(description="ready")
    def ready(self, queue: QueueState) -> str:
        return self._jobs(queue, "ready")

    @admin.display(description="running")
    def running(self, queue: QueueState) -> str:
        return self._jobs(queue, "running")

    @admin.display(description="scheduled")
    def scheduled(self, queue: QueueState) -> str:
        return self._jobs(queue, "scheduled")

    @admin.display(description="dead")
    def dead(self, queue: QueueState) -> str:
        return self._jobs(queue, "dead")

    @admin.display(description="lag")
    def lag(self, queue: QueueState) -> str:
        """The age of its oldest ready job."""
        view = _known(queue).view
        return seconds(view.lag_seconds) if view.counts.get("ready") else "-"

    @admin.display(description="workers")
    def workers(self, queue: QueueState) -> str:
        view = _known(queue).view
        if view.workers:
            return f"{view.workers} ({counted(view.threads, 'thread')})"
        if view.unserved:
            return format_html('<span class="pgqueue-state pgqueue-state-dead" title="{}">no worker</span>',
                               "No live worker has this queue in --queues: its jobs wait until one does")
        return "none"

    @admin.display(description="declared by")
    def declared_by(self, queue: QueueState) -> str:
        """The registered jobs and schedules that put jobs in it (all of them on hover)."""
        names = _known(queue).declared_by
        if not names:
            return "-"
        schedules = sum(name.startswith("schedule ") for name in names)
        parts = [counted(len(names) - schedules, "job")] if len(names) > schedules else []
        parts += [counted(schedules, "schedule")] if schedules else []
        return format_html('<span title="{}">{}</span>', "\n".join(names), ", ".join(parts))

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("pgqueue.pause_queue"))  # type: ignore[union-attr]
