"""The overview on /admin/pgqueue/: per-queue counts and lag, throughput and failures, errors, workers.

Every query is bounded for large tables: active states and recent time windows are served by the partial
indexes; nothing counts the whole job table.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Min, Sum
from django.db.models.functions import Coalesce, Greatest, TruncHour, TruncMinute
from django.utils import timezone

from pgqueue.conf import get_settings
from pgqueue.models import Job, QueueStat, QueueState, WorkerProcess

ACTIVE = ["scheduled", "ready", "running", "blocked"]


@dataclass
class QueueRow:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    finished_hour: dict[str, int] = field(default_factory=dict)
    oldest_ready: dt.datetime | None = None
    paused: bool = False
    draining: bool = False
    served: bool = True  # a live worker process has it in --queues

    @property
    def unserved(self) -> bool:
        """Jobs wait in it and no live worker serves it: they will not run until one does."""
        return not self.served and bool(self.counts.get("ready") or self.counts.get("scheduled"))

    @property
    def lag_seconds(self) -> float | None:
        return (timezone.now() - self.oldest_ready).total_seconds() if self.oldest_ready else None


@dataclass
class Bar:
    label: str
    succeeded: int
    failed: int


def overview(now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    alias = get_settings().DATABASE
    hour_ago, day_ago = now - dt.timedelta(hours=1), now - dt.timedelta(days=1)
    local = timezone.localtime(now)  # chart buckets follow the admin's time zone
    queues: dict[str, QueueRow] = {}

    def row(name: str) -> QueueRow:
        return queues.setdefault(name, QueueRow(name=name))

    for name in get_settings().QUEUES or ():
        row(name)
    for state in QueueState.objects.using(alias).all():
        r = row(state.name)
        r.paused, r.draining = state.paused, state.pause_when_empty
    for item in Job.objects.using(alias).filter(state__in=ACTIVE).values("queue", "state").annotate(n=Count("id")):
        row(item["queue"]).counts[item["state"]] = item["n"]
    for item in (QueueStat.objects.using(alias).filter(bucket__gte=hour_ago).values("queue")
                 .annotate(ok=Sum("succeeded"), bad=Sum("dead"))):
        row(item["queue"]).finished_hour = {"succeeded": item["ok"], "dead": item["bad"]}
    for item in Job.objects.using(alias).filter(state="ready").values("queue").annotate(oldest=Min("run_at")):
        row(item["queue"]).oldest_ready = item["oldest"]

    workers = list(WorkerProcess.objects.using(alias).filter(state__in=["running", "stopping"]).order_by("kind", "id"))
    alive_since = now - dt.timedelta(seconds=get_settings().WORKER_DEAD_AFTER)
    served = {name for w in workers if w.kind == "worker" and w.state == "running" and w.last_heartbeat >= alive_since
              for name in w.queues.split(",")}
    for r in queues.values():
        r.served = r.name in served
    return {
        "queues": sorted(queues.values(), key=lambda q: q.name),
        "hour_bars": _bars(alias, hour_ago, TruncMinute, local.replace(second=0, microsecond=0), 60,
                           dt.timedelta(minutes=1), "%H:%M"),
        "day_bars": _bars(alias, day_ago, TruncHour, local.replace(minute=0, second=0, microsecond=0), 24,
                          dt.timedelta(hours=1), "%H:00"),
        "top_errors": list(
            Job.objects.using(alias).filter(state="dead", finished_at__gte=day_ago).exclude(error_class="")
            .values("error_class").annotate(n=Count("id")).order_by("-n")[:5]
        ),
        "workers": workers,
        "alerts": _alerts(now, hour_ago),
        "now": now,
    }


def _bars(alias: str, since: dt.datetime, trunc: Any, end: dt.datetime, count: int, step: dt.timedelta,
          fmt: str) -> list[Bar]:
    """Succeeded and dead jobs per interval, from the per-minute counts the workers keep."""
    totals: dict[dt.datetime, dict[str, int]] = defaultdict(dict)
    rows = (QueueStat.objects.using(alias).filter(bucket__gte=since).annotate(slot=trunc("bucket")).values("slot")
            .annotate(ok=Sum("succeeded"), bad=Sum("dead")))
    for item in rows:
        totals[item["slot"]] = {"ok": item["ok"], "bad": item["bad"]}
    bars = []
    for i in range(count - 1, -1, -1):
        start = end - step * i
        t = totals.get(start, {})
        bars.append(Bar(label=timezone.localtime(start).strftime(fmt), succeeded=t.get("ok", 0),
                        failed=t.get("bad", 0)))
    return bars


def _alerts(now: dt.datetime, hour_ago: dt.datetime) -> list[str]:
    settings = get_settings()
    alias = settings.DATABASE
    alerts = []
    dead = Job.objects.using(alias).filter(state="dead", finished_at__gte=hour_ago).count()
    if dead:
        alerts.append(f"{dead} job(s) went dead in the last hour.")
    stuck = Job.objects.using(alias).filter(state="running", lease_expires_at__lt=now).count()
    if stuck:
        alerts.append(f"{stuck} running job(s) hold an expired lease (their worker may be gone; maintenance "
                      "rescues them if it runs).")
    silent = WorkerProcess.objects.using(alias).annotate(
        alive_at=Greatest("last_heartbeat", Coalesce("vouched_at", "last_heartbeat"))  # workerprocess_reap's rule
    ).filter(
        state__in=["running", "stopping"], alive_at__lt=now - dt.timedelta(seconds=settings.WORKER_DEAD_AFTER)
    ).count()
    if silent:
        alerts.append(f"{silent} worker process(es) stopped heartbeating.")
    if not WorkerProcess.objects.using(alias).filter(kind="worker", state="running").exists():
        alerts.append("No worker is running: start one with manage.py pgqueue_worker.")
    return alerts


def svg_chart(bars: list[Bar], width: int = 600, height: int = 120) -> str:
    """A stacked bar chart (succeeded over failed) as inline SVG: no script, works offline."""
    from django.utils.html import escape

    top = max([b.succeeded + b.failed for b in bars] + [1])
    slot = width / max(len(bars), 1)
    parts = [f'<svg class="pgqueue-chart" viewBox="0 0 {width} {height + 16}" width="100%" role="img" '
             f'aria-label="jobs finished per interval, succeeded and dead">']
    for i, bar in enumerate(bars):
        x = i * slot + 1
        ok_h = (bar.succeeded / top) * height
        bad_h = (bar.failed / top) * height
        title = escape(f"{bar.label}: {bar.succeeded} succeeded, {bar.failed} dead")
        parts.append(f'<g><title>{title}</title>'
                     f'<rect x="{x:.1f}" y="{height - ok_h - bad_h:.1f}" width="{slot - 2:.1f}" height="{ok_h:.1f}" fill="#10b981"/>'
                     f'<rect x="{x:.1f}" y="{height - bad_h:.1f}" width="{slot - 2:.1f}" height="{bad_h:.1f}" fill="#ef4444"/></g>')
    for i, anchor in ((0, "start"), (len(bars) // 2, "middle"), (len(bars) - 1, "end")):
        if 0 <= i < len(bars):
            x = {"start": i * slot, "middle": (i + 0.5) * slot, "end": (i + 1) * slot}[anchor]
            parts.append(f'<text x="{x:.1f}" y="{height + 12}" text-anchor="{anchor}">{escape(bars[i].label)}</text>')
    parts.append(f'<text x="{width - 4}" y="10" text-anchor="end">max {top}</text></svg>')
    return "".join(parts)
