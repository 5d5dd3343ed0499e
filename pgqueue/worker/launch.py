"""Check the settings, the database and the job modules, then run the supervisor with the options."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import sys
import tempfile

import psycopg
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from pgqueue import db, schedules
from pgqueue.checks import check_migrations
from pgqueue.conf import Settings, get_settings
from pgqueue.enqueuing import registry
from pgqueue.exceptions import InvalidJob
from pgqueue.ops import metrics
from pgqueue.ops.doctor import listen_fix
from pgqueue.worker import exporter
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
        if not any(m.id == "pgqueue.E003" for m in problems):  # not PostgreSQL: no migrations to read
            problems += check_migrations(settings.DATABASE)
    except DatabaseError as exc:
        raise LaunchError(f"Database {settings.DATABASE!r} is not reachable: {exc}".strip()) from None
    if problems:
        raise LaunchError("\n".join(f"{m.id}: {m.msg}" for m in problems))
    check_wake_ups(settings)
    import_job_modules()
    try:  # with every @schedule registered now: a name declared twice stops the start, not the scheduler
        declared = schedules.declared(settings)
    except InvalidJob as exc:
        raise LaunchError(f"pgqueue.E005: {exc}") from None
    if not declared:  # nothing to tick: no scheduler process (nor its connection)
        options = dataclasses.replace(options, scheduler=False)
    unserved = unserved_jobs(options.queues, settings)
    if unserved:
        listed = "; ".join(f"{queue}: {', '.join(names[:3])}{' and more' if len(names) > 3 else ''}"
                           for queue, names in sorted(unserved.items()))
        logging.getLogger("pgqueue.supervisor").warning(
            "jobs of queues this worker does not serve wait for another worker (this one has --queues %s): %s",
            ",".join(options.queues), listed)
    if options.metrics_port is None:
        metrics.uninstall()  # nobody could read this process's counters: the jobs do not pay for them
        return Supervisor(options, settings, db.connection_kwargs(settings.DATABASE),
                          listen_params=db.listen_kwargs(settings)).run()
    open_access = _check_metrics_token(settings)
    try:
        server = exporter.listen(options.metrics_address, options.metrics_port)
    except OSError as exc:
        raise LaunchError(f"--metrics-port {options.metrics_port}: cannot listen on "
                          f"{options.metrics_address}:{options.metrics_port}: {exc.strerror or exc}.") from None
    folder = tempfile.mkdtemp(prefix="pgqueue-metrics-")  # this supervisor's counters, from zero
    try:
        metrics.install_multiprocess(folder)
        return Supervisor(options, settings, db.connection_kwargs(settings.DATABASE),
                          listen_params=db.listen_kwargs(settings), metrics_server=server,
                          open_metrics=open_access).run()
    finally:
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def unserved_jobs(queues: tuple[str, ...], settings: Settings) -> dict[str, list[str]]:
    """Registered jobs (subscribers and django.tasks tasks included) whose queue is not in `queues`, by queue:
    what a worker says at start, since their jobs would wait for another worker."""
    served = set(queues)
    found: dict[str, list[str]] = {}
    for name, job in sorted(registry.registered().items()):
        queue = job.queue or settings.DEFAULT_QUEUE
        if queue not in served:
            found.setdefault(queue, []).append(name)
    return found


def check_wake_ups(settings: Settings, *, timeout: float = 5.0) -> None:
    """A NOTIFY sent as an enqueue sends it must reach a connection listening as the workers will: else a
    transaction pooler sits in front (pgqueue's session state would leak into other clients' sessions and its
    prepared statements collide), or LISTEN_DATABASE is not the jobs' database. Refused at start, with what
    to set, instead of workers that never wake or crash on the pooler's errors."""
    listen = db.listen_kwargs(settings)
    if listen is None:
        return  # transaction pooler without LISTEN_DATABASE: the workers poll (pgqueue_doctor says so)
    try:
        arrived = db.notify_round_trip(listen, db.connection_kwargs(settings.DATABASE), owner="pgqueue_worker",
                                       timeout=timeout)
    except psycopg.Error as exc:
        raise LaunchError(f"Checking LISTEN/NOTIFY failed: {str(exc).strip()}") from None
    if arrived is None:
        where = f"LISTEN_DATABASE {settings.LISTEN_DATABASE!r}" if settings.transaction_pooled else "it"
        raise LaunchError(f"A NOTIFY sent through DATABASE {settings.DATABASE!r} did not reach a connection listening "
                          f"on {where} within {timeout:g} s. {listen_fix(settings)}")


def _check_metrics_token(settings: Settings) -> bool:
    """Refuse to serve metrics to the network behind a missing or placeholder token, unless DEBUG is on.
    Returns whether scrapes need no token (DEBUG with no token set)."""
    from django.conf import settings as django_settings

    problem = metrics.token_problem(settings.METRICS_TOKEN)
    if problem is None:
        return False
    if django_settings.DEBUG and not settings.METRICS_TOKEN:
        return True
    if django_settings.DEBUG:
        return False  # a weak token still protects a development machine
    raise LaunchError(f"--metrics-port needs PGQUEUE['METRICS_TOKEN'] (or PGQUEUE_METRICS_TOKEN) set to a secret "
                      f"when DEBUG is off, and {problem}. Generate one with: python -c \"import secrets; "
                      f"print(secrets.token_urlsafe(32))\"")


def import_job_modules() -> None:
    """Import the `jobs` module of every installed app (registering its @job functions), and its `tasks`
    module when pgqueue is a django.tasks backend; one that exists but fails to import stops the launch
    with the app and the error named."""
    kinds = ("jobs", "tasks") if "pgqueue.tasks" in sys.modules else ("jobs",)  # imported by the app's ready()
    for config, kind in ((c, k) for c in apps.get_app_configs() for k in kinds):
        name = f"{config.name}.{kind}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # the app has no such module
            raise LaunchError(f"Importing {name} (app {config.label!r}) failed: {exc!r}") from exc
        except Exception as exc:
            raise LaunchError(f"Importing {name} (app {config.label!r}) failed: {exc!r}") from exc


__all__ = ["LaunchError", "OptionError", "launch"]
