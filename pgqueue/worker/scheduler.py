"""The scheduler role, one per supervisor: writes the declared schedules, then enqueues each tick as it
comes (pgqueue.schedules). Any number of schedulers may run: each tick's unique row lets one of them
enqueue it."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

from django.db import DatabaseError, connections

from pgqueue import db, events, schedules
from pgqueue.conf import Settings
from pgqueue.worker.signals import SignalPipe

IDLE_SECONDS = 1.0  # look again at least this often (an operator may enable a schedule)


class Scheduler:
    def __init__(self, process_id: str, supervisor_id: str, settings: Settings) -> None:
        self.id = process_id
        self.supervisor_id = supervisor_id
        self.settings = settings
        self.alias = settings.DATABASE
        self.pipe = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        self.specs = {s.name: s for s in schedules.declared(settings)}
        self.synced = False
        self.next_heartbeat = 0.0

    def run(self) -> int:
        events.emit("worker_started", worker=self.id, kind="scheduler", queues=(), concurrency=0)
        options = connections[self.alias].settings_dict.setdefault("OPTIONS", {})
        options["application_name"] = f"pgqueue scheduler {self.id}"[:63]  # as the other roles name theirs
        parent = os.getppid()
        failures = 0
        while not self.pipe.drain() and os.getppid() == parent:  # stop with the supervisor, or if it is gone
            try:
                wait = self.tick()
                failures = 0
            except DatabaseError as exc:
                failures += 1
                events.emit("db_reconnect", worker=self.id, error=str(exc))
                connections[self.alias].close()
                self.synced = False
                wait = min(30.0, 0.5 * 2 ** min(failures, 6))
            self._sleep(wait)
        try:
            db.run_in_django("workerprocess_set_state", using=self.alias, ids=[self.id], state="stopped")
        except DatabaseError:
            pass
        connections.close_all()
        return 0

    def tick(self) -> float:
        """One round: register or heartbeat, write the schedules (once per connection), enqueue what is due.
        Returns the seconds to wait."""
        if not self.synced:
            db.run_in_django("workerprocess_register", using=self.alias, id=self.id, kind="scheduler",
                             supervisor=self.supervisor_id, hostname=socket.gethostname(), pid=os.getpid(),
                             queues="", concurrency=0)
            schedules.sync(list(self.specs.values()), self.alias)
            self.synced = True
        elif time.monotonic() >= self.next_heartbeat:
            self.next_heartbeat = time.monotonic() + self.settings.HEARTBEAT_SECONDS
            db.run_in_django("workerprocess_heartbeat", using=self.alias, id=self.id)
        until_next = schedules.run_due(self.specs, self.alias)
        return IDLE_SECONDS if until_next is None else min(IDLE_SECONDS, until_next)

    def _sleep(self, seconds: float) -> None:
        select.select([self.pipe.read_fd], [], [], seconds)
