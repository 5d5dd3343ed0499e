"""The health report behind the health view: database reachable, migrations applied, live workers per
queue, each queue's lag against its threshold. A probe reads the status code: 200 healthy, 503 not."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from pgqueue.checks import check_migrations
from pgqueue.conf import Settings, get_settings
from pgqueue.ops import monitor

# What a probe asks about: "live" (the database answers), "ready" (and pgqueue's migrations are applied),
# "all" (and every queue that has work is served by a live worker and not lagging).
SCOPES = ("live", "ready", "all")
MIGRATIONS_CACHE_SECONDS = 60.0  # applied migrations are looked up once a minute per process, not per probe
_migrations_ok_until = 0.0


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Report:
    scope: str
    findings: list[Finding]
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "fail",
            "scope": self.scope,
            "checks": [{"name": f.name, "ok": f.ok, "detail": f.detail} for f in self.findings],
            "queues": self.queues,
        }


def max_lag(settings: Settings, queue: str) -> float:
    return settings.HEALTH_QUEUE_MAX_LAG_SECONDS.get(queue, settings.HEALTH_MAX_LAG_SECONDS)


def report(scope: str = "all", settings: Settings | None = None) -> Report:
    """Check what `scope` covers; never raises for a database that is down (that is a finding)."""
    global _migrations_ok_until
    if scope not in SCOPES:
        raise ValueError(f"unknown health scope {scope!r}; use one of {', '.join(SCOPES)}")
    settings = settings or get_settings()
    try:
        snap = monitor.snapshot(settings=settings)
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Report(scope, [Finding("database", False, f"database {settings.DATABASE!r} is not reachable: {reason}")])
    findings = [Finding("database", True, f"database {settings.DATABASE!r} answered")]
    if scope == "live":
        return Report(scope, findings)
    if time.monotonic() >= _migrations_ok_until:
        try:
            missing = [m.msg for m in check_migrations(settings.DATABASE)]
        except DatabaseError as exc:
            missing = [f"could not read the applied migrations: {exc}"]
        if missing:
            return Report(scope, [*findings, Finding("migrations", False, "; ".join(missing))])
        _migrations_ok_until = time.monotonic() + MIGRATIONS_CACHE_SECONDS
    findings.append(Finding("migrations", True, "pgqueue's migrations are applied"))
    if scope == "ready":
        return Report(scope, findings)
    queues: dict[str, dict[str, Any]] = {}
    for q in snap.queues:
        limit = max_lag(settings, q.name)
        has_work = q.counts["ready"] + q.counts["running"] > 0
        problems: list[str] = []
        if q.paused:
            pass  # paused on purpose (or by its breaker): neither its lag nor its workers are a failure
        else:
            if q.lag_seconds > limit:
                problems.append(f"its oldest ready job has waited {q.lag_seconds:.0f} s, over {limit:g} s")
            if has_work and q.workers == 0:
                problems.append("no live worker serves it")
        queues[q.name] = {
            "ok": not problems, "ready": q.counts["ready"], "running": q.counts["running"],
            "lag_seconds": round(q.lag_seconds, 3), "max_lag_seconds": limit, "workers": q.workers,
            "paused": q.paused, "problems": problems,
        }
        if problems:
            findings.append(Finding(f"queue {q.name}", False, f"queue {q.name}: {'; '.join(problems)}"))
    if all(f.ok for f in findings):
        findings.append(Finding("queues", True, f"{len(queues)} queue(s) within their lag thresholds and served"))
    return Report(scope, findings, queues)
