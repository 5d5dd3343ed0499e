"""manage.py pgqueue_pause NAME...: pause queues from a script (audited); pgqueue_queue pause does the same."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from pgqueue.management.commands import pgqueue_queue


class Command(pgqueue_queue.Command):
    help = "Pause the named queues: workers lease nothing more from them (audited; as pgqueue_queue pause)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="+", help="Queue names.")

    def handle(self, *args: Any, queues: list[str], **options: Any) -> None:
        super().handle(verb="pause", queues=queues, **pgqueue_queue.NO_OPTIONS)
