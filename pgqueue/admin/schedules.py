"""Schedules in the admin: each recurring job's expression and zone, last and next run, the last job's
outcome, its recent ticks; enable, disable and run now (confirmed and audited)."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pgqueue import schedules
from pgqueue.admin.actions import confirmed_action
from pgqueue.admin.base import PgQueueAdmin, alias, job_link
from pgqueue.admin.display import ago, breakable, seconds
from pgqueue.models import Job, Schedule, ScheduleTick

RECENT_TICKS = 20
CRON_ONE_LINE = 24  # an expression up to this long stays on one line; a longer one breaks between fields


def moment(at: dt.datetime | None) -> str:
    """A tick time and how far it is from now: "Dec 05 03:00" over "in 7.9 h"."""
    if at is None:
        return "-"
    delta = (timezone.now() - at).total_seconds()
    return format_html('<span class="pgqueue-nowrap" title="{}">{}</span><br><span class="pgqueue-quiet">{}</span>',
                       f"{timezone.localtime(at):%Y-%m-%d %H:%M:%S %Z}", f"{timezone.localtime(at):%b %d %H:%M}",
                       ago(delta) if delta >= 0 else f"in {seconds(-delta)}")


@admin.register(Schedule)
class ScheduleAdmin(PgQueueAdmin):
    list_display = ("name_and_task", "expression", "status", "last_tick", "next_tick")
    list_filter = ("enabled", "declared")
    search_fields = ("name", "task")
    search_help_text = "Text in the schedule's name or its job's path."
    ordering = ("name",)
    fields = ("name", "task", "cron", "timezone", "args", "kwargs", "catch_up", "status", "last_tick_at",
              "next_tick_at", "last_outcome", "recent_ticks")
    readonly_fields = fields
    actions = [
        confirmed_action(
            name="run_schedules_now", description="Run now", permission="trigger", target="schedule", key="name",
            run=schedules.run_now,
            explain="Each schedule's job is enqueued at once (a manual tick), whatever its expression says; its "
                    "next ticks are not changed.",
        ),
        confirmed_action(
            name="disable_schedules", description="Disable", permission="toggle", target="schedule", key="name",
            run=lambda names: schedules.set_enabled(names, False),
            explain="The schedules enqueue nothing until they are enabled again (the switch is kept across deploys).",
        ),
        confirmed_action(
            name="enable_schedules", description="Enable", permission="toggle", target="schedule", key="name",
            run=lambda names: schedules.set_enabled(names, True),
            explain="The schedules run again. Ticks missed meanwhile follow each schedule's catch_up: all of them, "
                    "or only the latest one.",
        ),
    ]

    def has_trigger_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("pgqueue.trigger_schedule"))  # type: ignore[union-attr]

    def has_toggle_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("pgqueue.toggle_schedule"))  # type: ignore[union-attr]

    @admin.display(description="schedule, job", ordering="name")
    def name_and_task(self, schedule: Schedule) -> str:
        return format_html('{}<br><span class="pgqueue-quiet">{}</span>', schedule.name, breakable(schedule.task, "."))

    @admin.display(description="cron, time zone", ordering="cron")
    def expression(self, schedule: Schedule) -> str:
        wrap = "" if len(schedule.cron) > CRON_ONE_LINE else ' class="pgqueue-nowrap"'
        return format_html('<code{}>{}</code><br><span class="pgqueue-quiet">{}</span>', SafeString(wrap),
                           schedule.cron, breakable(schedule.timezone, "/"))

    @admin.display(description="last tick, its job", ordering="last_tick_at")
    def last_tick(self, schedule: Schedule) -> str:
        if schedule.last_job_id is None:
            return moment(schedule.last_tick_at)
        return format_html('{}<br>{}', moment(schedule.last_tick_at), self.last_outcome(schedule))

    @admin.display(description="next tick", ordering="next_tick_at")
    def next_tick(self, schedule: Schedule) -> str:
        return moment(schedule.next_tick_at)

    @admin.display(description="status")
    def status(self, schedule: Schedule) -> str:
        if not schedule.declared:
            return "no longer declared"
        return "enabled" if schedule.enabled else "disabled"

    @admin.display(description="last job")
    def last_outcome(self, schedule: Schedule) -> str:
        if schedule.last_job_id is None:
            return "-"
        state = Job.objects.using(alias()).filter(pk=schedule.last_job_id).values_list("state", flat=True).first()
        return format_html("{} ({})", job_link(schedule.last_job_id), state or "pruned")

    @admin.display(description="recent ticks")
    def recent_ticks(self, schedule: Schedule) -> str:
        ticks = list(ScheduleTick.objects.using(alias()).filter(schedule_id=schedule.name).order_by("-tick")
                     .values_list("tick", "job_id", "manual")[:RECENT_TICKS])
        if not ticks:
            return "-"
        states = dict(Job.objects.using(alias()).filter(id__in=[j for _, j, _ in ticks if j]).values_list("id", "state"))
        return format_html_join("", "<p>{}{}: {} ({})</p>", (
            (tick, " (run now)" if manual else "", job_link(job_id), states.get(job_id, "pruned"))
            for tick, job_id, manual in ticks))
