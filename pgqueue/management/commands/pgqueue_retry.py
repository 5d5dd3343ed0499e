"""manage.py pgqueue_retry: give jobs one more attempt from a script: by id, or every dead (--dead) or
cancelled (--cancelled) job of some queues or tasks; in batches, audited, --dry-run counts only."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from pgqueue import operations
from pgqueue.conf import check_queue_name, get_settings
from pgqueue.exceptions import InvalidJob
from pgqueue.models import Job
from pgqueue.ops import audit

BATCH = 1000


class Command(BaseCommand):
    help = "Retry jobs: JOB_ID..., or --dead / --cancelled with optional --queue and --task filters."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="Job ids to retry (any state retry accepts).")
        parser.add_argument("--dead", action="store_true", help="Retry dead jobs.")
        parser.add_argument("--cancelled", action="store_true", help="Retry cancelled jobs.")
        parser.add_argument("--queue", action="append", help="Only jobs of this queue (repeat).")
        parser.add_argument("--task", action="append", help="Only jobs of this task, its dotted path (repeat).")
        parser.add_argument("--limit", type=int, default=None, help="At most this many jobs.")
        parser.add_argument("--dry-run", action="store_true", help="Count the jobs; change nothing.")

    def handle(self, *args: Any, ids: list[int], **options: Any) -> None:
        states = [s for s in ("dead", "cancelled") if options[s]]
        if bool(ids) == bool(states):
            raise CommandError("pgqueue_retry needs job ids, or --dead and/or --cancelled (not both).")
        if ids and (options["queue"] or options["task"]):
            raise CommandError("--queue and --task select among --dead or --cancelled jobs, not among ids.")
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError(f"--limit must be at least 1, got {options['limit']}.")
        alias = get_settings().DATABASE
        try:
            for queue in options["queue"] or ():
                check_queue_name(queue)
            if ids:
                chosen = list(dict.fromkeys(operations.check_ids(ids)))  # an id given twice is one job
            else:
                rows = Job.objects.using(alias).filter(state__in=states)
                if options["queue"]:
                    rows = rows.filter(queue__in=options["queue"])
                if options["task"]:
                    rows = rows.filter(task__in=options["task"])
                chosen = list(rows.order_by("id").values_list("id", flat=True)[:options["limit"]])
        except InvalidJob as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            self.stdout.write(f"would retry {len(chosen)} job(s)")
            return
        moved: list[int] = []
        for start in range(0, len(chosen), BATCH):
            with transaction.atomic(using=alias):
                done = operations.retry(chosen[start:start + BATCH])
                moved += done
                audit.record(
                    action="retry_job", target="job", changed=done, selected=len(chosen[start:start + BATCH]),
                    alias=alias, scope=" ".join(f"--{k}={v}" for k in ("queue", "task") for v in options[k] or ())
                    + (" --dead" if options["dead"] else "") + (" --cancelled" if options["cancelled"] else ""),
                )
        skipped = len(chosen) - len(moved)
        self.stdout.write(f"retried {len(moved)} job(s)" + (f"; {skipped} could not be retried (running or already "
                                                             "finished successfully, or gone)" if skipped else ""))
