"""Jobs and attempts in the admin: a fast changelist on large tables, the attempts timeline, actions."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin import helpers
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from pgqueue import db, operations, sql
from pgqueue.admin.actions import FROM_PAGE, confirmed_action
from pgqueue.admin.base import PgQueueAdmin, alias, job_link, parse_id
from pgqueue.admin.flow import tokens_now
from pgqueue.conf import get_settings
from pgqueue.models import (
    Attempt,
    Batch,
    Dependency,
    Job,
    Lock,
    QueueState,
    RateLimit,
    Semaphore,
    SemaphoreSlot,
    WorkerProcess,
)
from pgqueue.text import counted, duration_text
from pgqueue.types import FINISHED_STATES

RECENT = 5_000  # filters offer the queues and tasks seen among the newest jobs (bounded query)
COUNT_CAP = 10_000  # filtered changelists count at most this many rows
ERROR_SHOWN = 200  # characters of a last error's first line in the job list (the column cuts it to fit)
ERROR_TITLE = 1_000  # and in its title
REPLAYS_SHOWN = 50  # replays of a job its page links to


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


def task_label(task: str) -> str:
    """A task's whole dotted path, so two apps' `jobs.send` never read alike: in a narrow column the module
    between the app and the function is cut first, and a long function name goes to a line of its own."""
    head, _, function = task.rpartition(".")
    app, _, module = head.partition(".")
    return format_html('<span class="pgqueue-task" title="{}"><span class="pgqueue-task-path"><span class='
                       '"pgqueue-task-app">{}</span><span class="pgqueue-task-module">{}</span></span><span class='
                       '"pgqueue-task-function">{}</span></span>', task, f"{app}." if app else "",
                       f"{module}." if module else "", function)


def _when(moment: dt.datetime | None, now: dt.datetime) -> str:
    """ "19:01:13 (3 min ago)", "2026-12-04 22:00:00 (in 2 h)": the time, and how far it is from now."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    shown = local.strftime("%H:%M:%S" if local.date() == timezone.localtime(now).date() else "%Y-%m-%d %H:%M:%S")
    seconds = (moment - now).total_seconds()
    near = f"in {duration_text(seconds)}" if seconds > 0 else f"{duration_text(-seconds)} ago"
    return format_html('<time datetime="{}" title="{}">{}</time> ({})', local.isoformat(),
                       local.strftime("%Y-%m-%d %H:%M:%S.%f %Z"), shown, near)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


WAITING = ("scheduled", "ready", "blocked", "waiting")

# What a job's page offers: (action, button label, the states in which the action changes the job). The
# action's own statement decides what it does; the states only keep a button off a page where it would
# do nothing (running a ready job "now" would not move it; a blocked one stays blocked without a slot).
BUTTONS = (
    ("retry_now", "Retry", ("dead", "cancelled")),
    ("retry_now", "Run now", ("scheduled", "waiting")),
    ("replay_jobs", "Replay", ("dead", "cancelled")),
    ("cancel_jobs", "Cancel", (*WAITING, "running")),
    ("delete_finished", "Delete", FINISHED_STATES),
)

REASONS = {  # why a job is dead (or cancelled without anyone asking), as its page says it
    "max_attempts": "Failed every attempt it was allowed.",
    "non_retryable": "Raised an error its job marks as not worth retrying.",
    "unknown_task": "Its function could not be imported.",
    "lost": "Its worker died or went silent more often than it has attempts.",
    "crashed": "Its process crashed again while it ran alone.",
    "result_too_large": "Returned a result over MAX_RESULT_BYTES.",
    "dependency": "A job it depends on is dead or cancelled.",
}


@admin.register(Job)
class JobAdmin(PgQueueAdmin):
    # Five columns fit 1280 px beside the navigation and the filters: the last error goes under its task,
    # the attempts under the state, the run time or duration under the age (docs/admin.md).
    list_display = ("id", "task_name", "queue_name", "state_badge", "age")
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
    readonly_fields = ("task", "queue", "state", "reason_code", "tries", "priority", "run_at", "timeout",
                       "progress_display", "args_pretty", "kwargs_pretty", "result_pretty", "last_error",
                       "error_class", "flow_display", "links_display", "leased_by", "lease_expires_at",
                       "cancel_requested", "created_at", "started_at", "finished_at")

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
            name="replay_jobs", description="Replay", permission="replay", run=operations.replay,
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

    # -- columns: each from the row itself (no query per row) --------------------------------------

    @admin.display(description="task, last error", ordering="task")
    def task_name(self, job: Job) -> str:
        error = self.error_text(job)
        if not error:
            return task_label(job.task)
        return format_html('{}<span class="pgqueue-line pgqueue-error" title="{}">{}</span>', task_label(job.task),
                           error[:ERROR_TITLE], _first_line(error)[:ERROR_SHOWN])

    @admin.display(description="queue", ordering="queue")
    def queue_name(self, job: Job) -> str:
        return format_html('<span class="pgqueue-wrap">{}</span>', job.queue)

    @staticmethod
    def error_text(job: Job) -> str:
        """ "PaymentDeclined: card declined": the last error (its message names its class), or its class."""
        return str(job.last_error) or str(job.error_class)

    @admin.display(description="state", ordering="state")
    def state_badge(self, job: Job) -> str:
        badge = format_html('<span class="pgqueue-state pgqueue-state-{}">{}</span>', job.state, job.state)
        if not job.attempts:
            return badge
        return format_html('{}<span class="pgqueue-line" title="attempts started / attempts allowed: {}">{} '
                           "attempts</span>", badge, self.tries(job), self.tries(job))

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
        """How long ago it was enqueued, and under it how long it ran, has been running, or when it runs."""
        now = timezone.now()
        age = format_html('<span title="enqueued {}">{}</span>', timezone.localtime(job.created_at)
                          .strftime("%Y-%m-%d %H:%M:%S"), duration_text((now - job.created_at).total_seconds()))
        if job.state == "running" and job.started_at:
            line = f"for {duration_text((now - job.started_at).total_seconds())}"
        elif job.state in FINISHED_STATES and job.started_at and job.finished_at:
            line = f"took {duration_text((job.finished_at - job.started_at).total_seconds())}"
        elif job.state in WAITING and job.run_at > now:
            line = f"runs in {duration_text((job.run_at - now).total_seconds())}"
        else:
            return age
        return format_html('{}<span class="pgqueue-line">{}</span>', age, line)

    # -- the job's page: what matters for its state first, then its arguments, then every field ---------

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """The sections under the summary and the attempts, without the fields this job leaves empty."""
        if obj is None:
            return super().get_fieldsets(request, obj)
        job: Job = obj
        sections: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
            ("Result", ("result_pretty",), ()),
            ("Arguments", ("args_pretty", "kwargs_pretty"), ()),
            ("Keys, batch and dependencies", () if job.state in ("blocked", "waiting") else  # in the summary
             ("flow_display", "links_display"), ()),
            ("All fields", ("task", "queue", "state", "reason_code", "tries", "priority", "run_at", "timeout",
                            "error_class", "last_error", "leased_by", "lease_expires_at", "cancel_requested",
                            "progress_display", "created_at", "started_at", "finished_at"), ("collapse",)),
        ]
        return [(title, {"fields": shown, "classes": classes}) for title, fields, classes in sections
                if (shown := [name for name in fields if self._has(job, name)])]

    def _has(self, job: Job, name: str) -> bool:
        """Whether the field has something to show for this job (empty ones are left out, not shown as "-")."""
        if name == "result_pretty":
            return job.result is not None
        if name == "args_pretty":
            return bool(job.args)
        if name == "kwargs_pretty":
            return bool(job.kwargs)
        if name == "progress_display":
            return job.progress is not None
        if name == "tries":
            return True
        if name == "flow_display":
            return any(value is not None for value in (job.idempotency_key, job.lock_key, job.concurrency_key,
                                                       job.queue_slot, job.rate_key))
        if name == "links_display":
            return (job.__dict__.get("batch_id") is not None or job.__dict__.get("callback_of_id") is not None
                    or job.has_dependents or Dependency.objects.using(alias()).filter(job_id=job.id).exists())
        value = getattr(job, name)
        return value is not None and value != "" and value is not False

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Any = None) -> Any:
        if obj is not None:
            attempts = list(Attempt.objects.using(alias()).filter(job_id=obj.id).order_by("-number", "-id"))
            context.update({
                "summary": self.summary(obj, attempts),
                "attempts": attempts,
                "attempts_first": obj.state in ("dead", "cancelled") or (obj.state in WAITING and bool(attempts)),
                "open_traceback": obj.state != "succeeded",
                "buttons": self.buttons(request, obj),
                "from_page_name": FROM_PAGE,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            })
        return super().render_change_form(request, context, add, change, form_url, obj)

    def buttons(self, request: HttpRequest, job: Job) -> list[dict[str, str]]:
        """The list's actions that change this job in its state, those the user may run (the same check as
        the list's action menu: a button posts the action to the list, confirmation and audit included)."""
        allowed = self.get_actions(request)
        return [{"action": action, "label": label} for action, label, states in BUTTONS
                if action in allowed and job.state in states
                and not (action == "cancel_jobs" and job.cancel_requested)]

    def summary(self, job: Job, attempts: list[Attempt]) -> dict[str, Any]:
        """The state in a sentence, and the facts that matter for it, as (label, html) pairs."""
        now = timezone.now()
        facts: list[tuple[str, str]] = []
        if job.state == "dead":
            headline = REASONS.get(job.reason_code, "It will not run again.")
        elif job.state == "cancelled":
            headline = format_html("Since {}. {}", _when(job.finished_at, now), REASONS.get(job.reason_code, ""))
        elif job.state == "succeeded":
            took = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
            headline = format_html("Finished {}{}.", _when(job.finished_at, now),
                                   f", in {duration_text(took)}" if took is not None else "")
        elif job.state == "running":
            headline = format_html("Attempt {} since {}.", job.attempts, _when(job.started_at, now))
        elif job.state == "waiting":
            headline = "Waits for the jobs it depends on."
        elif job.state == "blocked":
            headline = "Waits for a slot of its semaphore."
        elif job.run_at > now:
            headline = format_html("Runs at {}{}.", _when(job.run_at, now),
                                   ", after a failed attempt" if job.attempts and job.last_error else "")
        else:
            headline = format_html("Since {}: the next free worker of its queue takes it.", _when(job.run_at, now))

        error = self.error_text(job)
        if error and job.state != "succeeded":
            last = next((a for a in attempts if a.error_class or a.message), None)
            facts.append(("Last error", format_html(
                '<span class="pgqueue-error" title="{}">{}</span>{}', job.error_class, _first_line(error),
                format_html('<br><span class="pgqueue-quiet">attempt {}, ended {}</span>', last.number,
                            _when(last.finished_at, now)) if last is not None and last.finished_at else "")))
        if job.state == "running":
            facts += self._running_facts(job, now)
        elif job.progress is not None:
            facts.append(("Progress", self.progress_display(job)))
        facts.append(("Attempts", format_html("{} <span class=\"pgqueue-quiet\">(started / allowed)</span>",
                                              self.tries(job))))
        if job.state in WAITING and job.run_at > now and job.state != "scheduled":
            facts.append(("Not before", _when(job.run_at, now)))
        facts.append(("Queue", self._queue_fact(job)))
        if job.state == "blocked":
            facts.append(("Why it waits", self.flow_display(job)))
        elif job.state == "waiting":
            facts.append(("Why it waits", self.links_display(job)))
        elif job.state == "scheduled" and job.rate_key:
            facts.append(("Rate", self._rate_line(job)))
        source = job.__dict__.get("replay_of_id")  # the raw column: no query for the row itself
        if source is not None:
            facts.append(("Replay of", job_link(source)))
        replays = list(Job.objects.using(alias()).filter(replay_of_id=job.id).order_by("id")
                       .values_list("id", "state")[:REPLAYS_SHOWN])
        if replays:
            facts.append(("Replayed as", format_html_join(", ", "{} ({})", ((job_link(i), state)
                                                                            for i, state in replays))))
        return {"headline": headline, "facts": facts}

    def _running_facts(self, job: Job, now: dt.datetime) -> list[tuple[str, str]]:
        """Where it runs, whether its worker is alive, how far it got, and whether it was asked to stop."""
        facts: list[tuple[str, str]] = []
        process = WorkerProcess.objects.using(alias()).filter(pk=job.leased_by).first()
        worker = format_html("<code>{}</code>", job.leased_by)
        if process is not None:
            worker = format_html("{} on {} (pid {}), its last heartbeat {}", worker, process.hostname, process.pid,
                                 _when(process.last_heartbeat, now))
        facts.append(("Worker", worker))
        if job.lease_expires_at is not None:
            lease = _when(job.lease_expires_at, now)
            if job.lease_expires_at < now:
                lease = format_html('<span class="pgqueue-error">expired {}</span>: its worker is gone or stuck; '
                                    "maintenance rescues the job", lease)
            else:
                lease = format_html("expires {}, renewed at each heartbeat", lease)
            facts.append(("Lease", lease))
        if job.timeout is not None:
            facts.append(("Timeout", f"{duration_text(job.timeout)} an attempt"))
        if job.progress is not None:
            facts.append(("Progress", self.progress_display(job)))
        if job.cancel_requested:
            facts.append(("Cancel", "requested: its worker stops it at its next heartbeat"))
        return facts

    def _queue_fact(self, job: Job) -> str:
        link = format_html('<a href="{}?{}">{}</a>', reverse("admin:pgqueue_job_changelist"),
                           urlencode({"queue": job.queue}), job.queue)
        if job.state not in WAITING:
            return link
        queue = QueueState.objects.using(alias()).filter(pk=job.queue).first()
        if queue is not None and queue.paused:
            return format_html('{} <span class="pgqueue-state pgqueue-state-cancelled">paused</span>{}: no job of '
                               "it starts until it is resumed", link,
                               f" ({queue.paused_reason})" if queue.paused_reason else "")
        return link

    @admin.display(description="args")
    def args_pretty(self, job: Job) -> str:
        return _pretty(job.args)

    @admin.display(description="kwargs")
    def kwargs_pretty(self, job: Job) -> str:
        return _pretty(job.kwargs)

    @admin.display(description="result")
    def result_pretty(self, job: Job) -> str:
        return _pretty(job.result)

    @admin.display(description="progress")
    def progress_display(self, job: Job) -> str:
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
        return format_html("Blocked: waits for a slot of semaphore {} (limit {}), held by {}; {} of the key {} ahead "
                           "of it{}.", link, limit, held_by, counted(ahead, "blocked job"), "is" if ahead == 1 else "are",
                           when)

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
                total = edges.count() if len(parents) == 100 else len(parents)
                lines.append(format_html("Waiting: the job it depends on has not finished: {}.", listed) if total == 1
                             else format_html("Waiting: {} of the {} it depends on {} not finished: {}.",
                                              job.waiting_on, counted(total, "job"),
                                              "has" if job.waiting_on == 1 else "have", listed))
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



