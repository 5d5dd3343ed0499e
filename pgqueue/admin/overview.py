"""The overview on /admin/pgqueue/: every known queue with its counts and lag, throughput and failure
charts, errors, live processes.

Every query is bounded for large tables: the per-queue counts are pgqueue.monitor's (one statement over
the partial indexes), the charts read the per-minute pgqueue_stat rows, the rest reads recent dead jobs;
nothing counts the whole job table.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import Coalesce, Greatest, TruncHour, TruncMinute
from django.utils import timezone

from pgqueue.admin.charts import Bar, percent, summary
from pgqueue.admin.queues import known_queues
from pgqueue.conf import get_settings
from pgqueue.models import Job, QueueStat, WorkerProcess
from pgqueue.ops import monitor
from pgqueue.text import counted


@dataclass
class QueueRow:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    finished_hour: dict[str, int] = field(default_factory=dict)
    lag_seconds: float | None = None  # age of its oldest ready job; None when nothing is ready
    paused: bool = False
    draining: bool = False
    unserved: bool = False  # jobs wait in it and no live worker serves it (monitor.QueueView.unserved)

    @property
    def dead_rate(self) -> str:
        """Dead among the jobs that finished in the last hour, as a percentage ("" when none finished)."""
        ok, dead = self.finished_hour.get("succeeded", 0), self.finished_hour.get("dead", 0)
        return percent(dead / (ok + dead)) if dead else ""


def overview(now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    alias = get_settings().DATABASE
    hour_ago, day_ago = now - dt.timedelta(hours=1), now - dt.timedelta(days=1)
    local = timezone.localtime(now)  # chart buckets follow the admin's time zone
    snap = monitor.snapshot()
    queues = {name: QueueRow(name=name, counts=known.view.counts,
                             lag_seconds=known.view.lag_seconds if known.view.counts.get("ready") else None,
                             paused=known.view.paused, draining=known.view.draining, unserved=known.view.unserved)
              for name, known in known_queues(snap).items()}
    for item in (QueueStat.objects.using(alias).filter(bucket__gte=hour_ago).values("queue")
                 .annotate(ok=Sum("succeeded"), bad=Sum("dead"))):
        row = queues.setdefault(item["queue"], QueueRow(name=item["queue"]))
        row.finished_hour = {"succeeded": item["ok"], "dead": item["bad"]}
    hour_bars = _bars(alias, hour_ago, TruncMinute, local.replace(second=0, microsecond=0), 60,
                      dt.timedelta(minutes=1))
    day_bars = _bars(alias, day_ago, TruncHour, local.replace(minute=0, second=0, microsecond=0), 24,
                     dt.timedelta(hours=1))
    return {
        "queues": sorted(queues.values(), key=lambda q: q.name),
        "hour_bars": hour_bars,
        "day_bars": day_bars,
        "hour_total": summary(hour_bars),
        "day_total": summary(day_bars),
        "top_errors": list(
            Job.objects.using(alias).filter(state="dead", finished_at__gte=day_ago).exclude(error_class="")
            .values("error_class").annotate(n=Count("id")).order_by("-n")[:5]
        ),
        "workers": snap.processes,
        "alerts": _alerts(now, hour_ago, snap),
        "now": now,
    }


def _bars(alias: str, since: dt.datetime, trunc: Any, end: dt.datetime, count: int, step: dt.timedelta) -> list[Bar]:
    """Succeeded and dead jobs, and retried attempts, per interval, from the per-minute counts the workers
    keep."""
    totals: dict[dt.datetime, dict[str, int]] = defaultdict(dict)
    rows = (QueueStat.objects.using(alias).filter(bucket__gte=since).annotate(slot=trunc("bucket")).values("slot")
            .annotate(ok=Sum("succeeded"), bad=Sum("dead"), again=Sum("retried")))
    for item in rows:
        totals[item["slot"]] = item
    bars = []
    for i in range(count - 1, -1, -1):
        start = end - step * i
        t = totals.get(start, {})
        bars.append(Bar(start=timezone.localtime(start), succeeded=t.get("ok", 0), dead=t.get("bad", 0),
                        retried=t.get("again", 0)))
    return bars


def _alerts(now: dt.datetime, hour_ago: dt.datetime, snap: monitor.Snapshot) -> list[str]:
    settings = get_settings()
    alias = settings.DATABASE
    alerts = []
    dead = Job.objects.using(alias).filter(state="dead", finished_at__gte=hour_ago).count()
    if dead:
        alerts.append(f"{counted(dead, 'job')} went dead in the last hour.")
    if stuck := snap.totals.expired_leases:
        alerts.append(f"{counted(stuck, 'running job')} {'holds' if stuck == 1 else 'hold'} an expired lease "
                      "(their worker may be gone; maintenance rescues them if it runs).")
    silent = WorkerProcess.objects.using(alias).annotate(
        alive_at=Greatest("last_heartbeat", Coalesce("vouched_at", "last_heartbeat"))  # workerprocess_reap's rule
    ).filter(
        state__in=["running", "stopping"], alive_at__lt=now - dt.timedelta(seconds=settings.WORKER_DEAD_AFTER)
    ).count()
    if silent:
        alerts.append(f"{counted(silent, 'worker process', 'worker processes')} stopped heartbeating.")
    if not any(p.kind == "worker" and p.state == "running" for p in snap.processes):
        alerts.append("No worker is running: start one with manage.py pgqueue_worker.")
    return alerts
