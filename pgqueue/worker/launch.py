"""Check the settings, the database and the job modules, then run the supervisor with the options."""

from __future__ import annotations

import importlib

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from pgqueue import db, schedules
from pgqueue.checks import check_migrations
from pgqueue.conf import Settings, get_settings
from pgqueue.exceptions import InvalidJob
from pgqueue.worker.options import OptionError, WorkerOptions
from pgqueue.worker.supervisor import Supervisor


class LaunchError(Exception):
    """The worker cannot start: bad options or settings, a broken jobs module, or the database is not ready."""


def settings_for_launch() -> Settings:
    try:
        return get_settings()
    except ImproperlyConfigured as exc:
        raise LaunchError(str(exc)) from None


def launch(options: WorkerOptions) -> int:
    settings = settings_for_launch()
    try:
        problems = [m for m in checks.run_checks(databases=[settings.DATABASE]) if m.is_serious()]
        problems += check_migrations(settings.DATABASE)
    except DatabaseError as exc:
        raise LaunchError(f"Database {settings.DATABASE!r} is not reachable: {exc}".strip()) from None
    if problems:
        raise LaunchError("\n".join(f"{m.id}: {m.msg}" for m in problems))
    import_job_modules()
    try:  # with every @schedule registered now: a name declared twice stops the start, not the scheduler
        schedules.declared(settings)
    except InvalidJob as exc:
        raise LaunchError(f"pgqueue.E005: {exc}") from None
    return Supervisor(options, settings, db.connection_kwargs(settings.DATABASE)).run()


def import_job_modules() -> None:
    """Import the `jobs` module of every installed app (registering its @job functions); one that exists
    but fails to import stops the launch with the app and the error named."""
    for config in apps.get_app_configs():
        name = f"{config.name}.jobs"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # the app has no jobs module
            raise LaunchError(f"Importing {name} (app {config.label!r}) failed: {exc!r}") from exc
        except Exception as exc:
            raise LaunchError(f"Importing {name} (app {config.label!r}) failed: {exc!r}") from exc


__all__ = ["LaunchError", "OptionError", "launch"]
