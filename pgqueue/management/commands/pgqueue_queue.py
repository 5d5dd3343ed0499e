"""manage.py pgqueue_queue: pause, resume or drain queues, set their limits and circuit breakers, or list
them. Each change is audited, as the admin's actions are."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from pgqueue import operations
from pgqueue.conf import get_settings
from pgqueue.exceptions import InvalidJob
from pgqueue.models import QueueState
from pgqueue.ops import audit

VERBS = {
    "pause": (operations.pause, "pause_queue", "paused (workers lease nothing more from them):"),
    "resume": (operations.resume, "resume_queue", "resumed:"),
    "drain": (operations.drain_and_pause, "drain_queue", "draining (paused once nothing is ready or running):"),
}


# The option values of a plain pause, resume or drain (pgqueue_pause and pgqueue_resume pass these).
NO_OPTIONS: dict[str, Any] = {"concurrency": None, "rate": None, "per": None, "failures": None, "within": None,
                              "cooldown": None, "off": False}


class Command(BaseCommand):
    help = ("Queues: pause, resume or drain NAME...; limit NAME [--concurrency N] [--rate N --per SECONDS] "
            "(no option clears them); breaker NAME --failures N --within SECONDS --cooldown SECONDS (or --off); "
            "list [NAME...].")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("verb", choices=[*VERBS, "limit", "breaker", "list"])
        parser.add_argument("queues", nargs="*", help="Queue names (for list: none means every queue with a row).")
        parser.add_argument("--concurrency", type=int, help="limit: running jobs at most, cluster-wide.")
        parser.add_argument("--rate", type=int, help="limit: jobs started at most per --per seconds.")
        parser.add_argument("--per", type=float, help="limit: the rate's window in seconds.")
        parser.add_argument("--failures", type=int, help="breaker: failed attempts in a row that pause the queue.")
        parser.add_argument("--within", type=float, help="breaker: seconds the failures must fall within.")
        parser.add_argument("--cooldown", type=float, help="breaker: seconds the queue stays paused.")
        parser.add_argument("--off", action="store_true", help="breaker: remove the queue's circuit breaker.")

    def handle(self, *args: Any, verb: str, queues: list[str], **options: Any) -> None:
        if verb == "list":
            self._list(queues)
            return
        if not queues:
            raise CommandError(f"pgqueue_queue {verb} needs at least one queue name.")
        scope = ""
        alias = get_settings().DATABASE
        try:
            with transaction.atomic(using=alias):  # every name is checked before anything is written
                if verb in VERBS:
                    run, action, said = VERBS[verb]
                    names = run(queues)
                elif verb == "limit":
                    action, said = "set_queue_limits", "limits set:"
                    scope = _options_text(options, ("concurrency", "rate", "per"))
                    limits = {"concurrency": options["concurrency"], "rate": options["rate"], "per": options["per"]}
                    for queue in queues:
                        operations.check_limits(queue, **limits)
                    names = [operations.set_limits(q, **limits) for q in queues]
                else:
                    if options["off"] == (options["failures"] is not None):
                        raise CommandError("pgqueue_queue breaker needs --failures, --within and --cooldown, or --off.")
                    action = "set_queue_breaker"
                    said = "circuit breaker removed:" if options["off"] else "circuit breaker set:"
                    scope = _options_text(options, ("failures", "within", "cooldown", "off"))
                    breaker = {"failures": options["failures"], "within": options["within"],
                               "cooldown": options["cooldown"]}
                    for queue in queues:
                        operations.check_breaker(queue, **breaker)
                    names = [operations.set_breaker(q, **breaker) for q in queues]
                audit.record(action=action, target="queue", changed=names, selected=len(queues), scope=scope,
                             alias=alias)
        except InvalidJob as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{said} {', '.join(names)}")

    def _list(self, names: list[str]) -> None:
        rows = QueueState.objects.using(get_settings().DATABASE).order_by("name")
        if names:
            rows = rows.filter(name__in=names)
        for row in rows:
            self.stdout.write("\t".join([row.name, row.describe()]))


def _options_text(options: dict[str, Any], keys: tuple[str, ...]) -> str:
    return " ".join(f"--{k}={options[k]}" for k in keys if options.get(k) not in (None, False))
