"""manage.py pgqueue_explain JOB_ID [--json]: why a job is or is not running (pgqueue.explain), read-only."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.exceptions import InvalidJob, JobNotFound
from pgqueue.ops.explain import explain, format_text


class Command(BaseCommand):
    help = ("Say why a job is or is not running: its state, what holds it back (schedule, paused queue, limits, "
            "semaphores, rate keys, dependencies, workers) or runs it, with the numbers.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", help="The job's id.")
        parser.add_argument("--json", action="store_true", help="Print the explanation as JSON.")

    def handle(self, *args: Any, job_id: str, **options: Any) -> None:
        try:
            found = explain(_as_int(job_id))
        except (InvalidJob, JobNotFound) as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(found.to_dict(), indent=2))
        else:
            self.stdout.write("\n".join(format_text(found)))


def _as_int(text: str) -> Any:
    """The id as an int if it reads as one; otherwise as given, for explain() to refuse with its message."""
    try:
        return int(text)
    except ValueError:
        return text
