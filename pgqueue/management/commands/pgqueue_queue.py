"""manage.py pgqueue_queue: pause, resume or drain queues, or list them (each change is audited)."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue import operations
from pgqueue.conf import get_settings
from pgqueue.exceptions import InvalidJob
from pgqueue.models import AuditEntry, QueueState

VERBS = {
    "pause": (operations.pause, "pause_queue", "paused: workers lease nothing more from"),
    "resume": (operations.resume, "resume_queue", "resumed:"),
    "drain": (operations.drain_and_pause, "drain_queue", "draining (paused once nothing is ready or running):"),
}


class Command(BaseCommand):
    help = "Pause, resume or drain-and-pause queues, or list them: pgqueue_queue pause emails default"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("verb", choices=[*VERBS, "list"])
        parser.add_argument("queues", nargs="*", help="Queue names (none for list: every queue with a row).")

    def handle(self, *args: Any, verb: str, queues: list[str], **options: Any) -> None:
        if verb == "list":
            self._list(queues)
            return
        if not queues:
            raise CommandError(f"pgqueue_queue {verb} needs at least one queue name.")
        run, action, said = VERBS[verb]
        try:
            names = run(queues)
        except InvalidJob as exc:
            raise CommandError(str(exc)) from None
        AuditEntry.objects.using(get_settings().DATABASE).create(
            username=f"manage.py ({_os_user()})"[:150], action=action, target="queue", count=len(names),
            selected=len(queues), object_ids=names,
        )
        self.stdout.write(f"{said} {', '.join(names)}")

    def _list(self, names: list[str]) -> None:
        rows = QueueState.objects.using(get_settings().DATABASE).order_by("name")
        if names:
            rows = rows.filter(name__in=names)
        for row in rows:
            state = "paused" if row.paused else ("draining" if row.pause_when_empty else "active")
            self.stdout.write(f"{row.name}\t{state}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown user"
