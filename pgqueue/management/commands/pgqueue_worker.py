"""manage.py pgqueue_worker: start a supervisor with worker processes, the maintenance role, the scheduler and
(with --metrics-port) the metrics process."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.worker import options as worker_options
from pgqueue.worker.launch import LaunchError, launch, settings_for_launch


class Command(BaseCommand):
    help = ("Run pgqueue: a supervisor forks worker processes (--processes), one maintenance process (unless "
            "--no-maintenance), one scheduler process (when schedules are declared, unless --no-scheduler) and, "
            "with --metrics-port, one metrics process; it replaces any that dies.")
    requires_system_checks = []  # checked in launch(), with the database

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--processes", type=int, default=1, help="Worker processes (default 1).")
        parser.add_argument("--concurrency", type=int, default=10, help="Job threads per process (default 10).")
        parser.add_argument("--queues", default=None, help="Comma-separated queues (default: DEFAULT_QUEUE).")
        parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                            help="Seconds to let running jobs finish after SIGTERM (default 30).")
        parser.add_argument("--max-jobs", type=int, default=None, help="Recycle a worker after this many jobs.")
        parser.add_argument("--max-memory", type=float, default=None, help="Recycle a worker above this RSS (MiB).")
        parser.add_argument("--max-lifetime", type=float, default=None, help="Recycle a worker after this many s.")
        parser.add_argument("--no-maintenance", action="store_true",
                            help="Do not run the maintenance role in this supervisor.")
        parser.add_argument("--no-scheduler", action="store_true",
                            help="Do not run the scheduler (recurring jobs) in this supervisor.")
        parser.add_argument("--share-connections", action="store_true",
                            help="One database connection per worker and one LISTEN for all of them: 2 + "
                                 "processes connections (default: 2 + 3 x processes), for less throughput.")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve Prometheus metrics on this port (needs PGQUEUE['METRICS_TOKEN'] unless DEBUG).")
        parser.add_argument("--metrics-address", default="0.0.0.0",
                            help="Address the metrics port listens on (default 0.0.0.0).")
        parser.add_argument("--log-level", default=None,
                            help="pgqueue log level (default: from --verbosity: 0 WARNING, 1 and 2 INFO, 3 DEBUG).")

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        _configure_logging(options["log_level"] or VERBOSITY_LEVELS.get(verbosity, "DEBUG"),
                           tracebacks="every failure" if verbosity >= 2 else "dead jobs")
        try:
            parsed = worker_options.parse(
                settings_for_launch(), queues=options["queues"], processes=options["processes"],
                concurrency=options["concurrency"], shutdown_timeout=options["shutdown_timeout"],
                max_jobs=options["max_jobs"], max_memory_mb=options["max_memory"],
                max_lifetime=options["max_lifetime"], maintenance=not options["no_maintenance"],
                scheduler=not options["no_scheduler"], share_connections=options["share_connections"],
                metrics_port=options["metrics_port"],
                metrics_address=options["metrics_address"],
            )
            code = launch(parsed)
        except (LaunchError, worker_options.OptionError) as exc:
            raise CommandError(str(exc)) from None
        if code:
            raise SystemExit(code)


# --verbosity (Django's -v) without --log-level: 0 problems and dead jobs only, 1 a line per attempt, 2 the
# same with the traceback of every failed attempt (not only a dead job's), 3 pgqueue's DEBUG lines too
VERBOSITY_LEVELS = {0: "WARNING", 1: "INFO", 2: "INFO", 3: "DEBUG"}


def _configure_logging(level: str, tracebacks: str) -> None:
    from pgqueue.ops import logs

    logger = logging.getLogger("pgqueue")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(handler)
    try:
        logger.setLevel(level.upper())
    except ValueError:
        raise CommandError(f"--log-level: unknown level {level!r}") from None
    tasks_logger = logging.getLogger("django.tasks")  # Django's lines for each task (pgqueue as its backend)
    if "pgqueue.tasks" in sys.modules and not tasks_logger.handlers and not logging.getLogger().handlers:
        tasks_logger.addHandler(handler)
        tasks_logger.setLevel(level.upper())
        tasks_logger.propagate = False  # Django's "django" logger prints only with DEBUG: ours always
    logs.subscribe(tracebacks_of_retries=tracebacks == "every failure")
