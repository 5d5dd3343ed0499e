"""manage.py pgqueue_status: queues (jobs per state, lag, workers, paused, breaker), processes and totals,
as a table or --json (pgqueue.monitor.snapshot)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pgqueue.ops import monitor

COLUMNS = ("scheduled", "ready", "running", "blocked", "waiting", "dead")


class Command(BaseCommand):
    help = "Show queues, their jobs per state, lag, workers and circuit breakers; processes; totals."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the snapshot as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        snap = monitor.snapshot()
        if options["json"]:
            self.stdout.write(json.dumps(snap.to_dict(), indent=2))
            return
        rows = [["QUEUE", *(c.upper() for c in COLUMNS), "LAG", "WORKERS", "STATE"]]
        for q in snap.queues:
            rows.append([q.name, *(str(q.counts[c]) for c in COLUMNS), duration(q.lag_seconds),
                         f"{q.workers} ({q.threads} threads)", queue_state(q)])
        self.stdout.write(f"pgqueue at {snap.now:%Y-%m-%d %H:%M:%S %Z} (database clock)\n")
        self.stdout.write(table(rows) if snap.queues else "No queues yet.")
        self.stdout.write("")
        procs = [["KIND", "ID", "HOST", "PID", "QUEUES", "CONNECTIONS", "HEARTBEAT", "UP"]]
        for p in snap.processes:
            late = "" if p.heartbeat_age < snap.dead_after else " (silent)"
            procs.append([p.kind, p.id, p.hostname, str(p.pid), p.queues or "-", str(p.connections),
                          duration(p.heartbeat_age) + late, duration(p.uptime)])
        self.stdout.write(table(procs) if snap.processes else "No pgqueue process is running.")
        t = snap.totals
        self.stdout.write(
            f"\nexpired leases: {t.expired_leases} · outbox: {t.outbox_pending} pending, lag "
            f"{duration(snap.outbox_lag_seconds)} · uniqueness keys: {t.unique_keys} · idempotency keys: "
            f"{t.idempotency_keys} · semaphore slots: {t.slots_held}/{t.slots} held · rows (estimated): "
            f"{estimate(t.job_rows, 'jobs')}, {estimate(t.attempt_rows, 'attempts')}"
        )
        threads = sum(p.concurrency for p in snap.live())
        self.stdout.write(
            f"database connections: {snap.connections} held by pgqueue's processes, up to {snap.connections + threads} "
            f"if every job thread uses the ORM, of {t.usable_connections} the server allows (max_connections less "
            f"superuser_reserved_connections)"
        )


def estimate(rows: int | None, what: str) -> str:
    """The planner's row estimate, or why there is none yet (a table never analysed)."""
    return f"{rows:,} {what}" if rows is not None else f"{what}: not estimated yet (never analysed)"


def queue_state(q: monitor.QueueView) -> str:
    if q.breaker == "open":
        until = f" until {q.resume_at:%H:%M:%S}" if q.resume_at else ""
        return f"paused: circuit breaker open{until}"
    if q.paused:
        return f"paused ({q.paused_reason})" if q.paused_reason else "paused"
    state = "draining" if q.draining else "active"
    if q.unserved:
        state += ", no worker serves it"
    if q.breaker == "closed":
        state += f", breaker closed ({q.breaker_failures} failures in a row)"
    return state


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(r[i].replace(",", "").isdigit() for r in rows[1:]) for i in range(len(widths))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if num and row is not rows[0] else cell.ljust(w)
                 for cell, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
