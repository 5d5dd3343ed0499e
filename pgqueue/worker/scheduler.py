"""The scheduler role, one per supervisor: writes the declared schedules, then enqueues each tick as it
comes (pgqueue.schedules). Any number of schedulers may run: each tick's unique row lets one of them
enqueue it. It works on Django's connection: a tick is enqueued as any job is, in a transaction with its
tick row."""

from __future__ import annotations

from django.db import DatabaseError, connections

from pgqueue import events, schedules
from pgqueue.conf import Settings
from pgqueue.settle import InDjango
from pgqueue.worker.role import Role

IDLE_SECONDS = 1.0  # look again at least this often (an operator may enable a schedule)


class Scheduler(Role):
    kind = "scheduler"
    connection_errors = (DatabaseError,)

    def __init__(self, process_id: str, supervisor_id: str, settings: Settings) -> None:
        super().__init__(process_id, supervisor_id, settings, InDjango(settings.DATABASE))
        self.alias = settings.DATABASE
        self.specs = {s.name: s for s in schedules.declared(settings)}
        options = connections[self.alias].settings_dict.setdefault("OPTIONS", {})
        options["application_name"] = f"pgqueue scheduler {self.id}"[:63]  # as the other roles name theirs

    def registered_now(self) -> None:
        schedules.sync(list(self.specs.values()), self.alias)  # once per connection

    def round(self) -> float:
        """Enqueue what is due; the seconds until the next tick, at most IDLE_SECONDS."""
        until_next = schedules.run_due(self.specs, self.alias)
        return IDLE_SECONDS if until_next is None else min(IDLE_SECONDS, until_next)

    def lost(self, exc: BaseException) -> float:
        events.emit("db_reconnect", worker=self.id, role=self.kind, kind="lost", error=str(exc).strip(),
                    failures=self.failures)
        connections[self.alias].close()
        return min(30.0, 0.5 * 2.0 ** min(self.failures, 6))

    def close(self) -> None:
        connections.close_all()
