"""System checks: PostgreSQL database (and LISTEN_DATABASE), valid PGQUEUE settings and schedules, migrations
applied."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections


@checks.register(checks.Tags.database, deploy=False)
def check_database(app_configs: Any = None, databases: Any = None, **_: Any) -> list[checks.CheckMessage]:
    from pgqueue.conf import get_settings

    try:
        settings = get_settings()
    except ImproperlyConfigured:
        return []  # reported by check_settings
    alias = settings.DATABASE
    if alias not in connections:
        return [checks.Error(f"PGQUEUE['DATABASE'] names database alias {alias!r}, which is not in DATABASES.",
                             id="pgqueue.E002")]
    vendor = connections[alias].vendor
    if vendor != "postgresql":
        return [checks.Error(f"pgqueue needs PostgreSQL, but database {alias!r} is {vendor}.",
                             id="pgqueue.E003", hint="Point DATABASES[...] at a PostgreSQL 14+ server.")]
    return _listen_database(settings)


def _listen_database(settings: Any) -> list[checks.CheckMessage]:
    """pgqueue.E006: LISTEN_DATABASE names a PostgreSQL alias, and only matters behind a transaction pooler."""
    alias = settings.LISTEN_DATABASE
    if alias is None:
        return []
    if alias not in connections:
        return [checks.Error(f"PGQUEUE['LISTEN_DATABASE'] names database alias {alias!r}, which is not in DATABASES.",
                             id="pgqueue.E006")]
    if connections[alias].vendor != "postgresql":
        return [checks.Error(f"PGQUEUE['LISTEN_DATABASE'] {alias!r} must be a PostgreSQL database (the one "
                             f"PGQUEUE['DATABASE'] {settings.DATABASE!r} reaches, directly).", id="pgqueue.E006")]
    if not settings.transaction_pooled:
        return [checks.Warning(f"PGQUEUE['LISTEN_DATABASE'] {alias!r} is set but PGQUEUE['POOLER'] is "
                               f"{settings.POOLER!r}: workers LISTEN on PGQUEUE['DATABASE'] and do not use it.",
                               id="pgqueue.W006", hint="Set POOLER = 'transaction' if a transaction pooler sits in "
                               "front of DATABASE; else remove LISTEN_DATABASE.")]
    return []


def check_migrations(alias: str) -> list[checks.CheckMessage]:
    """pgqueue.E004, run by pgqueue_worker (not a registered check: `migrate` runs those first)."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "pgqueue"]
    plan = executor.migration_plan(targets)
    if plan:
        return [checks.Error(f"pgqueue migrations are not applied on database {alias!r}: "
                             f"{unapplied_names([m for m, _ in plan])}.",
                             id="pgqueue.E004", hint=f"Run: python manage.py migrate pgqueue --database {alias}")]
    return []


def unapplied_names(migrations: list[Any]) -> str:
    """Migrations to apply, app by app in plan order: 'pgqueue.0001_initial .. pgqueue.0024_x (24 migrations),
    auth.0001_initial' (a fresh database's plan also holds the apps pgqueue depends on)."""
    by_app: dict[str, list[str]] = {}
    for migration in migrations:
        by_app.setdefault(migration.app_label, []).append(migration.name)
    parts = []
    for app, names in by_app.items():
        if len(names) > 2:
            parts.append(f"{app}.{names[0]} .. {app}.{names[-1]} ({len(names)} migrations)")
        else:
            parts.extend(f"{app}.{name}" for name in names)
    return ", ".join(parts)


@checks.register()
def check_settings(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    from pgqueue.conf import get_settings

    try:
        get_settings()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="pgqueue.E001", hint="Fix settings.PGQUEUE or the PGQUEUE_* variable.")]
    return []


@checks.register()
def check_schedules(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    """pgqueue.E005: each PGQUEUE['SCHEDULES'] entry's expression, time zone, job and arguments (an
    @schedule is checked when its module is imported; pgqueue_worker checks names declared twice)."""
    from pgqueue import schedules
    from pgqueue.conf import get_settings

    try:
        settings = get_settings()
    except ImproperlyConfigured:
        return []  # reported by check_settings
    return [checks.Error(problem, id="pgqueue.E005", hint="Fix PGQUEUE['SCHEDULES'] or the @schedule.")
            for problem in schedules.problems(settings)]
