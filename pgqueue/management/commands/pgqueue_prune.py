"""manage.py pgqueue_prune: delete (or archive) finished jobs and their attempts past their retention, in
batches that never wait for a locked row, with a progress bar on a terminal; --dry-run counts only."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.conf import get_settings
from pgqueue.exceptions import InvalidJob
from pgqueue.ops import retention
from pgqueue.settle import InDjango


class Command(BaseCommand):
    help = ("Prune finished jobs past their retention (the settings' KEEP_*_SECONDS and RETENTION, or --older-than), "
            "in batches; safe while workers run.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--state", action="append", help="succeeded, dead or cancelled (repeat; default all).")
        parser.add_argument("--older-than", help="Prune what finished longer ago than this: 3600, 90m, 12h, 7d, 2w "
                            "(default: the retention settings, per state and queue).")
        parser.add_argument("--queue", action="append", help="Only this queue (repeat; default all).")
        parser.add_argument("--batch", type=int, default=1000, help="Jobs per transaction (default 1000).")
        parser.add_argument("--sleep", type=float, default=0.0, help="Seconds to rest between batches, at least "
                            "(default 0).")
        parser.add_argument("--duty", type=float, default=0.25, help="Share of the time spent deleting, the rest "
                            "left to the workers (default 0.25: rest three times as long as each batch took; 1: "
                            "no rest).")
        parser.add_argument("--archive", action=argparse.BooleanOptionalAction, default=None,
                            help="Move them to the archive table (default: PGQUEUE['ARCHIVE']).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be pruned; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        settings = get_settings()
        try:
            if not 1 <= options["batch"] <= 100_000:
                raise InvalidJob(f"--batch must be from 1 to 100000, got {options['batch']}.")
            if not 0 <= options["sleep"] <= 60:
                raise InvalidJob(f"--sleep must be from 0 to 60 seconds, got {options['sleep']}.")
            if not 0.05 <= options["duty"] <= 1:
                raise InvalidJob(f"--duty must be from 0.05 to 1, got {options['duty']}.")
            age = retention.parse_age(options["older_than"]) if options["older_than"] is not None else None
            rules = retention.policy(settings, states=options["state"], older_than=age, queues=options["queue"],
                                     archive=options["archive"])
        except InvalidJob as exc:
            raise CommandError(str(exc)) from None
        runner = InDjango(settings.DATABASE)
        due = retention.count(runner, rules)
        total = sum(due.values())
        summary = ", ".join(f"{n} {state}" for state, n in due.items()) or "nothing"
        if options["dry_run"]:
            self.stdout.write(f"would prune {total} job(s): {summary}")
            return
        bar = Progress(total, sys.stderr) if sys.stderr.isatty() and total else None
        started = time.monotonic()
        jobs, attempts = retention.prune(runner, rules, batch=options["batch"], pause=options["sleep"],
                                         duty=options["duty"],
                                         progress=bar.update if bar else None)
        if bar:
            bar.finish()
        verb = "archived" if rules.archive else "pruned"
        self.stdout.write(f"{verb} {jobs} job(s) and {attempts} attempt(s) in {time.monotonic() - started:.1f} s")


class Progress:
    """A one-line progress bar, redrawn at most ten times a second."""

    def __init__(self, total: int, out: Any, width: int = 30) -> None:
        self.total, self.out, self.width = total, out, width
        self.started = time.monotonic()
        self.drawn = 0.0

    def update(self, jobs: int, attempts: int) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1 and jobs < self.total:
            return
        self.drawn = now
        share = min(1.0, jobs / self.total)
        rate = jobs / max(now - self.started, 1e-6)
        filled = int(share * self.width)
        self.out.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {share:6.1%} {jobs}/{self.total} jobs "
                       f"{rate:,.0f}/s")
        self.out.flush()

    def finish(self) -> None:
        self.out.write("\n")
