"""Jobs and attempts in the admin: a fast changelist on large tables, the attempts timeline, actions."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from pgqueue import db, operations, sql
from pgqueue.admin.actions import confirmed_action
from pgqueue.admin.base import PgQueueAdmin, alias, job_link, parse_id
from pgqueue.admin.flow import tokens_now
from pgqueue.conf import get_settings
from pgqueue.models import (
    Attempt,
    Batch,
    Dependency,
    Job,
    Lock,
    RateLimit,
    Semaphore,
    SemaphoreSlot,
)
from pgqueue.text import duration_text

RECENT = 5_000  # filters offer the queues and tasks seen among the newest jobs (bounded query)
COUNT_CAP = 10_000  # filtered changelists count at most this many rows


class EstimatedCountPaginator(Paginator):
    """Counting a million rows is slow: use PostgreSQL's estimate for the whole table, and a capped
    count for filtered lists (the page then says "10,000+")."""

    @cached_property
    def count(self) -> int:
        qs: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        if not qs.query.where:
            rows = db.run_in_django(sql.table_estimated_rows, using=qs.db, table=qs.model._meta.db_table)
            estimate = rows[0].estimate
            if estimate > COUNT_CAP:
                return int(estimate)
        return int(qs[:COUNT_CAP + 1].count())


class _RecentValuesFilter(admin.SimpleListFilter):
    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = Job.objects.using(alias()).order_by("-id").values_list(self.field, flat=True)[:RECENT]
        values = set(Job.objects.using(alias()).filter(id__in=recent.values("id")).values_list(self.field, flat=True))
        values |= set(self.extra())
        return [(v, v) for v in sorted(values)]

    def extra(self) -> list[str]:
        return []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class QueueFilter(_RecentValuesFilter):
    title = "queue"
    parameter_name = "queue"
    field = "queue"

    def extra(self) -> list[str]:
        from pgqueue.models import QueueState

        return list(get_settings().QUEUES or ()) + list(QueueState.objects.using(alias()).values_list("name", flat=True))


class BatchFilter(admin.SimpleListFilter):
    """?batch=N: the jobs of batch N (the batch page links here; not offered as a list of choices)."""

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, f"batch {value}")] if value else []  # offered only while set (so it can be cleared)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        batch_id = parse_id(value)
        return queryset.filter(batch_id=batch_id) if batch_id is not None else queryset.none()


class TaskFilter(_RecentValuesFilter):
    title = "task"
    parameter_name = "task"
    field = "task"


def _batch_link(batch_id: int) -> str:
    return format_html('<a href="{}">batch {}</a>', reverse("admin:pgqueue_batch_change", args=[batch_id]), batch_id)


def _pretty(value: Any) -> str:
    return format_html("<pre class=\"pgqueue-json\">{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(Job)
class JobAdmin(PgQueueAdmin):
    list_display = ("id", "task_name", "queue", "state_badge", "tries", "priority", "run_at", "age", "took",
                    "error_short")
    list_display_links = ("id", "task_name")
    list_filter = ("state", QueueFilter, TaskFilter, "reason_code", ("created_at", admin.DateFieldListFilter),
                   BatchFilter)
    search_fields = ("task",)
    search_help_text = ("A job id, text in the task path, the error class or the arguments, or a whole idempotency, "
                        "uniqueness, concurrency or rate key.")
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-id",)
    change_form_template = "admin/pgqueue/job/change_form.html"
    fieldsets = [
        (None, {"fields": ("task", "queue", "state", "reason_code", "tries", "priority", "run_at", "timeout",
                           "progress_display")}),
        ("Payload and result", {"fields": ("args_pretty", "kwargs_pretty", "result_pretty", "last_error",
                                           "error_class")}),
        ("Flow control", {"fields": ("flow_display",)}),
        ("Batch and dependencies", {"fields": ("links_display",)}),
        ("Lease", {"fields": ("leased_by", "lease_expires_at", "cancel_requested")}),
        ("Lineage", {"fields": ("replay_of_link", "replays_links")}),
        ("Times", {"fields": ("created_at", "started_at", "finished_at")}),
    ]
    readonly_fields = ("task", "queue", "state", "reason_code", "tries", "priority", "run_at", "timeout",
                       "progress_display", "args_pretty", "kwargs_pretty", "result_pretty", "last_error",
                       "error_class", "flow_display", "links_display", "leased_by", "lease_expires_at", "cancel_requested",
                       "replay_of_link",
                       "replays_links", "created_at", "started_at", "finished_at")

    actions = [
        confirmed_action(
            name="retry_now", description="Retry now", permission="retry", run=operations.retry,
            explain="Waiting jobs run now; dead and cancelled jobs get one more attempt (same job, history kept). "
                    "Running and succeeded jobs are left alone.",
        ),
        confirmed_action(
            name="cancel_jobs", description="Cancel", permission="cancel",
            run=lambda ids: list(operations.cancel(ids)),
            explain="Waiting jobs are cancelled now; running jobs are asked to stop (their worker sees it at its "
                    "next heartbeat) and are not retried. Finished jobs are left alone.",
        ),
        confirmed_action(
            name="replay_jobs", description="Replay", permission="replay",
            run=lambda ids: list(operations.replay(ids)),
            explain="Each dead or cancelled job is copied into a new ready job that points back at it. "
                    "Other jobs are left alone.",
        ),
        confirmed_action(
            name="delete_finished", description="Delete finished", permission="delete_finished",
            run=operations.delete_finished,
            explain="Succeeded, dead and cancelled jobs are deleted with their attempts. Waiting and running "
                    "jobs are kept.",
        ),
    ]

    # -- permissions: changes go through the actions (and so through the state machine) -------------

    def _perm(self, request: HttpRequest, codename: str) -> bool:
        return bool(request.user.has_perm(f"pgqueue.{codename}"))  # type: ignore[union-attr]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "cancel_job")

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "replay_job")

    def has_delete_finished_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "delete_finished_job")

    # -- search: id, task, argument text, flow keys -------------------------------------------------

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        term = search_term.strip()
        if not term:
            return queryset, False
        job_id = parse_id(term)
        if job_id is not None:
            return queryset.filter(pk=job_id), False
        matches = queryset.annotate(
            _args=Cast("args", TextField()), _kwargs=Cast("kwargs", TextField())
        )
        return matches.filter(Q(task__icontains=term) | Q(error_class__icontains=term) | Q(_args__icontains=term)
                              | Q(_kwargs__icontains=term) | Q(idempotency_key=term) | Q(lock_key=term)
                              | Q(concurrency_key=term) | Q(rate_key=term)), False

    # -- columns --------------------------------------------------------------------------------------

    @admin.display(description="task", ordering="task")
    def task_name(self, job: Job) -> str:
        task = str(job.task)
        return task.rsplit(".", 2)[-2] + "." + task.rsplit(".", 1)[-1] if "." in task else task

    @admin.display(description="state", ordering="state")
    def state_badge(self, job: Job) -> str:
        return format_html('<span class="pgqueue-state pgqueue-state-{}">{}</span>', job.state, job.state)

    @admin.display(description="attempts")
    def tries(self, job: Job) -> str:
        """Attempts started / attempts that may fail; lost ones (their own budget) are named apart."""
        text = f"{job.attempts}/{job.max_attempts}"
        if job.lost_attempts:
            text += f", {job.lost_attempts} lost"
        if job.crashes:
            text += f" ({job.crashes} in a crash)"
        return text

    @admin.display(description="age", ordering="created_at")
    def age(self, job: Job) -> str:
        return duration_text((timezone.now() - job.created_at).total_seconds())

    @admin.display(description="duration")
    def took(self, job: Job) -> str:
        if job.started_at and job.finished_at:
            return duration_text((job.finished_at - job.started_at).total_seconds())
        return "-"

    @admin.display(description="last error")
    def error_short(self, job: Job) -> str:
        return (job.last_error or "").splitlines()[0][:80] if job.last_error else ""

    # -- detail ---------------------------------------------------------------------------------------

    @admin.display(description="args")
    def args_pretty(self, job: Job) -> str:
        return _pretty(job.args)

    @admin.display(description="kwargs")
    def kwargs_pretty(self, job: Job) -> str:
        return _pretty(job.kwargs)

    @admin.display(description="result")
    def result_pretty(self, job: Job) -> str:
        return _pretty(job.result) if job.result is not None else "-"

    @admin.display(description="progress")
    def progress_display(self, job: Job) -> str:
        if job.progress is None:
            return "-"
        return format_html('<progress max="100" value="{}"></progress> {}% {}', job.progress,
                           f"{job.progress:.0f}", job.progress_message)

    @admin.display(description="keys and slots")
    def flow_display(self, job: Job) -> str:
        """What holds this job back or what it holds: its keys, its semaphore slot, or what it waits for."""
        lines: list[str] = []
        if job.idempotency_key:
            lines.append(format_html("Idempotency key <code>{}</code>.", job.idempotency_key))
        if job.lock_key:
            lock = Lock.objects.using(alias()).filter(kind="unique", key=job.lock_key).first()
            ours = lock is not None and lock.__dict__["job_id"] == job.id
            held: str = "released"
            if lock is not None and ours and not lock.released:
                held = format_html("held (until {})", lock.until)
            elif lock is not None and ours and lock.expires_at:
                held = format_html("released; counts until {}", lock.expires_at)
            lines.append(format_html('Uniqueness key <a href="{}?{}"><code>{}</code></a>: {}.',
                                     reverse("admin:pgqueue_lock_changelist"), urlencode({"q": job.lock_key}),
                                     job.lock_key, held))
        if job.concurrency_key:
            lines.append(self._semaphore_line(job))
        if job.queue_slot is not None:
            lines.append(format_html("Holds running slot {} of queue {}'s concurrency limit.", job.queue_slot,
                                     job.queue))
        if job.rate_key:
            lines.append(self._rate_line(job))
        if not lines:
            return "-"
        return format_html_join("", "<p>{}</p>", ((line,) for line in lines))

    def _semaphore_line(self, job: Job) -> str:
        key = job.concurrency_key
        semaphore = Semaphore.objects.using(alias()).filter(key=key).first()
        limit = semaphore.limit if semaphore is not None else "?"
        link = format_html('<a href="{}?{}"><code>{}</code></a>', reverse("admin:pgqueue_semaphore_changelist"),
                           urlencode({"q": key}), key)
        if job.slot is not None:
            return format_html("Holds slot {} of semaphore {} (limit {}).", job.slot, link, limit)
        if job.state != "blocked":
            return format_html("Semaphore {} (limit {}); holds no slot now.", link, limit)
        holders = list(SemaphoreSlot.objects.using(alias()).filter(semaphore_id=key, job_id__isnull=False)
                       .order_by("number").values_list("job_id", flat=True)[:20])
        ahead = Job.objects.using(alias()).filter(state="blocked", concurrency_key=key, id__lt=job.id).count()
        held_by = format_html_join(", ", "{}", ((job_link(i),) for i in holders)) or "nobody"
        when = "" if job.run_at <= timezone.now() else format_html(" (its retry delay ends at {})", job.run_at)
        return format_html("Blocked: waits for a slot of semaphore {} (limit {}), held by {}; {} blocked job(s) of "
                           "the key are ahead of it{}.", link, limit, held_by, ahead, when)

    def _rate_line(self, job: Job) -> str:
        bucket = RateLimit.objects.using(alias()).filter(key=job.rate_key).first()
        link = format_html('<a href="{}?{}"><code>{}</code></a>', reverse("admin:pgqueue_ratelimit_changelist"),
                           urlencode({"q": job.rate_key}), job.rate_key)
        if bucket is None:
            return format_html("Rate key {}.", link)
        rate = format_html("{} per {}", bucket.limit, duration_text(bucket.window))
        tokens = f"{max(0.0, tokens_now(bucket)):.1f}"
        deferred = bucket.deferred_until is not None and job.run_at <= bucket.deferred_until
        if job.state == "scheduled" and deferred and job.run_at > timezone.now():
            return format_html("Rate key {} ({}): deferred until its token comes, at {} ({} tokens now).", link,
                               rate, job.run_at, tokens)
        return format_html("Rate key {} ({}): each start takes a token ({} now).", link, rate, tokens)

    @admin.display(description="batch and dependencies")
    def links_display(self, job: Job) -> str:
        """Its batch (or the batch it is a callback of), what it waits for, and what waits for it."""
        lines: list[str] = []
        batch_id, callback_of = job.__dict__.get("batch_id"), job.__dict__.get("callback_of_id")
        if batch_id is not None:
            lines.append(format_html("In {}.", _batch_link(batch_id)))
        if callback_of is not None:
            row = Batch.objects.using(alias()).filter(pk=callback_of).first()
            role = next((name for name, job_id in (("on_success", row.success_job_id), ("on_finish", row.finish_job_id),
                                                   ("on_failure", row.failure_job_id)) if job_id == job.id),
                        None) if row is not None else None
            lines.append(format_html("The {} callback of {}.", role, _batch_link(callback_of)) if role else
                         format_html("A callback of {}.", _batch_link(callback_of)))
        edges = Dependency.objects.using(alias()).filter(job_id=job.id)
        parents = list(edges.order_by("depends_on_id").values_list("depends_on_id", "on_failure")[:100])
        if parents:
            states = dict(Job.objects.using(alias()).filter(id__in=[p for p, _ in parents]).values_list("id", "state"))
            listed = format_html_join(", ", "{} ({})", ((job_link(p), states.get(p, "pruned")) for p, _ in parents))
            if job.state == "waiting":
                lines.append(format_html("Waiting: {} of the {} job(s) it depends on have not finished: {}.",
                                         job.waiting_on, edges.count() if len(parents) == 100 else len(parents),
                                         listed))
            else:
                lines.append(format_html("Depends on {}.", listed))
            if any(on_failure == "run" for _, on_failure in parents):
                lines.append("It runs even if one of them is dead or cancelled.")
            elif job.state == "waiting":
                lines.append("If one of them is dead or cancelled, it is cancelled.")
        children = list(Dependency.objects.using(alias()).filter(depends_on_id=job.id).order_by("job_id")
                        .values_list("job_id", flat=True)[:50])
        if children:
            lines.append(format_html("Jobs that depend on it: {}.",
                                     format_html_join(", ", "{}", ((job_link(c),) for c in children))))
        if not lines:
            return "-"
        return format_html_join("", "<p>{}</p>", ((line,) for line in lines))

    @admin.display(description="replay of")
    def replay_of_link(self, job: Job) -> str:
        source = job.__dict__.get("replay_of_id")  # the raw column: no query for the row itself
        if source is None:
            return "-"
        return job_link(source)

    @admin.display(description="replays")
    def replays_links(self, job: Job) -> str:
        ids = list(Job.objects.using(alias()).filter(replay_of_id=job.id).values_list("id", flat=True)[:50])
        if not ids:
            return "-"
        return format_html_join(", ", "{}", ((job_link(i),) for i in ids))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> Any:
        job_id = parse_id(object_id)
        attempts = (Attempt.objects.using(alias()).filter(job_id=job_id).order_by("id")
                    if job_id is not None else Attempt.objects.none())
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "attempts": attempts})


@admin.register(Attempt)
class AttemptAdmin(PgQueueAdmin):
    list_display = ("id", "job_link", "number", "outcome", "worker", "started_at", "duration", "error_class")
    list_filter = ("outcome",)
    search_fields = ("=job__id", "error_class")
    readonly_fields = [f.name for f in Attempt._meta.fields]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    ordering = ("-id",)

    @admin.display(description="job")
    def job_link(self, attempt: Attempt) -> str:
        job_id = attempt.__dict__["job_id"]
        return job_link(job_id)



