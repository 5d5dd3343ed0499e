"""What the queues look like now, read from the database in four bounded statements: the one picture the
metrics collector, the health view and pgqueue_status all report from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pgqueue.conf import Settings, get_settings
from pgqueue.settle import InDjango, Runner
from pgqueue.sql import statement

# The states counted per queue (succeeded and cancelled history is not: it is only ever pruned).
COUNTED = ("scheduled", "ready", "running", "blocked", "waiting", "dead")


@dataclass(frozen=True, slots=True)
class JobCount:
    queue: str
    state: str
    count: int
    oldest: dt.datetime | None


@dataclass(frozen=True, slots=True)
class QueueStateRow:
    name: str
    paused: bool
    draining: bool
    paused_reason: str
    resume_at: dt.datetime | None
    concurrency_limit: int | None
    rate_limit: int | None
    rate_window: float | None
    breaker_threshold: int | None
    breaker_failures: int
    breaker_trips: int


@dataclass(frozen=True, slots=True)
class ProcessRow:
    id: str
    kind: str
    supervisor_id: str
    hostname: str
    pid: int
    queues: str
    concurrency: int
    connections: int  # the database connections pgqueue opened for it (not job code's ORM connections)
    state: str
    heartbeat_age: float
    uptime: float


@dataclass(frozen=True, slots=True)
class Totals:
    now: dt.datetime
    expired_leases: int
    outbox_pending: int
    outbox_oldest: dt.datetime | None
    unique_keys: int
    idempotency_keys: int
    slots_held: int
    slots: int
    job_rows: int | None  # None: the table was never analysed (no estimate yet)
    attempt_rows: int | None
    usable_connections: int  # max_connections less superuser_reserved_connections
    job_ids_issued: int  # pgqueue_job's id sequence: jobs inserted by anyone (rolled-back inserts too), ever


JOB_COUNTS = statement("monitor_job_counts", JobCount)
QUEUE_STATES = statement("monitor_queue_states", QueueStateRow)
PROCESSES = statement("monitor_processes", ProcessRow)
TOTALS = statement("monitor_totals", Totals)


@dataclass(frozen=True, kw_only=True)
class QueueView:
    """One queue: its jobs per state, its lag, its operator state and the live workers serving it."""

    name: str
    counts: dict[str, int]
    lag_seconds: float  # age of its oldest ready job (0 when nothing is ready)
    paused: bool = False
    draining: bool = False
    paused_reason: str = ""
    resume_at: dt.datetime | None = None
    breaker: str = "none"  # "none" (no breaker), "closed", or "open" (tripped: paused until resume_at)
    breaker_failures: int = 0
    breaker_trips: int = 0
    concurrency_limit: int | None = None
    rate_limit: int | None = None
    rate_window: float | None = None
    workers: int = 0  # live worker processes whose --queues include it
    threads: int = 0  # their job threads

    @property
    def unserved(self) -> bool:
        """Jobs wait in it (ready or scheduled) and no live worker serves it: they will not run until one
        does. What the overview, the Queues page and pgqueue_status mark "no worker"."""
        return not self.workers and bool(self.counts.get("ready") or self.counts.get("scheduled"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "counts": self.counts, "lag_seconds": round(self.lag_seconds, 3),
            "paused": self.paused, "draining": self.draining, "paused_reason": self.paused_reason,
            "resume_at": _iso(self.resume_at), "breaker": self.breaker, "breaker_failures": self.breaker_failures,
            "breaker_trips": self.breaker_trips, "concurrency_limit": self.concurrency_limit,
            "rate_limit": self.rate_limit, "rate_window": self.rate_window, "workers": self.workers,
            "threads": self.threads,
        }


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    now: dt.datetime  # the database's clock when it was taken
    queues: list[QueueView]
    processes: list[ProcessRow]
    totals: Totals
    dead_after: float  # a process silent this long is dead (WORKER_DEAD_AFTER)
    outbox_lag_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> QueueView | None:
        return next((q for q in self.queues if q.name == name), None)

    def live(self, kind: str = "worker") -> list[ProcessRow]:
        """Processes of this kind that heartbeat in time."""
        return [p for p in self.processes if p.kind == kind and p.heartbeat_age < self.dead_after]

    @property
    def connections(self) -> int:
        """Database connections held by pgqueue processes that heartbeat in time (job code's ORM ones aside)."""
        return sum(p.connections for p in self.processes if p.heartbeat_age < self.dead_after)

    def to_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "now": _iso(self.now),
            "queues": [q.to_dict() for q in self.queues],
            "processes": [
                {"id": p.id, "kind": p.kind, "supervisor": p.supervisor_id, "hostname": p.hostname, "pid": p.pid,
                 "queues": p.queues.split(",") if p.queues else [], "concurrency": p.concurrency, "connections": p.connections,
                 "state": p.state,
                 "heartbeat_age": round(p.heartbeat_age, 3), "uptime": round(p.uptime, 3),
                 "alive": p.heartbeat_age < self.dead_after}
                for p in self.processes
            ],
            "expired_leases": t.expired_leases,
            "outbox": {"pending": t.outbox_pending, "lag_seconds": round(self.outbox_lag_seconds, 3)},
            "locks": {"unique": t.unique_keys, "idempotency": t.idempotency_keys},
            "semaphore_slots": {"held": t.slots_held, "total": t.slots},
            "estimated_rows": {"jobs": t.job_rows, "attempts": t.attempt_rows},
            "connections": {"pgqueue": self.connections, "usable": t.usable_connections},
        }


def snapshot(runner: Runner | None = None, settings: Settings | None = None) -> Snapshot:
    """Read the picture now: on `runner` (a worker role's Database), else on Django's connection."""
    settings = settings or get_settings()
    runner = runner or InDjango(settings.DATABASE)
    counts = runner.run(JOB_COUNTS)
    states = runner.run(QUEUE_STATES)
    processes = runner.run(PROCESSES)
    totals = runner.run(TOTALS)[0]
    now = totals.now

    serving: dict[str, list[ProcessRow]] = {}
    for p in processes:
        if p.kind == "worker" and p.state == "running" and p.heartbeat_age < settings.WORKER_DEAD_AFTER:
            for name in p.queues.split(","):
                serving.setdefault(name, []).append(p)
    names = set(settings.QUEUES or ()) | {c.queue for c in counts} | {s.name for s in states} | set(serving)
    per_state: dict[str, dict[str, int]] = {name: dict.fromkeys(COUNTED, 0) for name in names}
    oldest: dict[str, dt.datetime] = {}
    for c in counts:
        per_state[c.queue][c.state] += c.count
        if c.oldest is not None and (c.queue not in oldest or c.oldest < oldest[c.queue]):
            oldest[c.queue] = c.oldest
    by_name = {s.name: s for s in states}
    queues = []
    for name in sorted(names):
        s = by_name.get(name)
        lag = max(0.0, (now - oldest[name]).total_seconds()) if name in oldest else 0.0
        workers = serving.get(name, [])
        common: dict[str, Any] = {"name": name, "counts": per_state[name], "lag_seconds": lag,
                                  "workers": len(workers), "threads": sum(w.concurrency for w in workers)}
        if s is None:
            queues.append(QueueView(**common))
            continue
        breaker = "none" if s.breaker_threshold is None else (
            "open" if s.paused and s.resume_at is not None else "closed")
        queues.append(QueueView(
            **common, paused=s.paused, draining=s.draining, paused_reason=s.paused_reason, resume_at=s.resume_at,
            breaker=breaker, breaker_failures=s.breaker_failures, breaker_trips=s.breaker_trips,
            concurrency_limit=s.concurrency_limit, rate_limit=s.rate_limit, rate_window=s.rate_window,
        ))
    outbox_lag = max(0.0, (now - totals.outbox_oldest).total_seconds()) if totals.outbox_oldest else 0.0
    return Snapshot(now=now, queues=queues, processes=processes, totals=totals,
                    dead_after=settings.WORKER_DEAD_AFTER, outbox_lag_seconds=outbox_lag)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
