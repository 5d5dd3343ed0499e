"""Validate pgqueue_worker's options, check the database, and run the supervisor."""

from __future__ import annotations

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from pgqueue import db
from pgqueue.apps import discover_jobs
from pgqueue.checks import check_migrations
from pgqueue.conf import check_queue_name, get_settings
from pgqueue.exceptions import InvalidJob
from pgqueue.worker.supervisor import Supervisor, SupervisorConfig


class LaunchError(Exception):
    """The worker cannot start: bad options or settings, or the database is not ready."""


def launch(
    *,
    processes: int,
    concurrency: int,
    queues: str | None,
    shutdown_timeout: float,
    max_jobs: int | None = None,
    max_memory_mb: float | None = None,
    max_lifetime: float | None = None,
    maintenance: bool = True,
) -> int:
    try:
        settings = get_settings()
    except ImproperlyConfigured as exc:
        raise LaunchError(str(exc)) from None
    if not 1 <= processes <= 256:
        raise LaunchError(f"--processes must be from 1 to 256, got {processes}.")
    if not 1 <= concurrency <= 1000:
        raise LaunchError(f"--concurrency must be from 1 to 1000, got {concurrency}.")
    if shutdown_timeout < 0:
        raise LaunchError(f"--shutdown-timeout must be >= 0, got {shutdown_timeout}.")
    for label, value in (("--max-jobs", max_jobs), ("--max-memory", max_memory_mb), ("--max-lifetime", max_lifetime)):
        if value is not None and value <= 0:
            raise LaunchError(f"{label} must be greater than 0, got {value}.")
    names = [q.strip() for q in (queues or settings.DEFAULT_QUEUE).split(",")]
    try:
        names = [check_queue_name(q) for q in names]
    except InvalidJob as exc:
        raise LaunchError(f"--queues: {exc}") from None
    if settings.QUEUES is not None:
        unknown = [q for q in names if q not in settings.QUEUES]
        if unknown:
            raise LaunchError(f"--queues: {', '.join(unknown)} not declared in PGQUEUE['QUEUES'] "
                              f"({', '.join(settings.QUEUES)}).")
    problems = [m for m in checks.run_checks(databases=[settings.DATABASE]) if m.is_serious()]
    problems += check_migrations(settings.DATABASE)
    if problems:
        raise LaunchError("\n".join(f"{m.id}: {m.msg}" for m in problems))
    discover_jobs()
    config = SupervisorConfig(
        processes=processes, concurrency=concurrency, queues=tuple(dict.fromkeys(names)),
        shutdown_timeout=shutdown_timeout, max_jobs=max_jobs, max_memory_mb=max_memory_mb,
        max_lifetime=max_lifetime, maintenance=maintenance,
    )
    return Supervisor(config, settings, db.connection_kwargs(settings.DATABASE)).run()
