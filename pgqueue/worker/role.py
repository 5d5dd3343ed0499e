"""The shape every process a supervisor forks shares. ProcessRow is its row in pgqueue_workerprocess (registered,
kept alive, marked stopped); Role is the shell of the roles beside the workers (maintenance, scheduler,
metrics): a signal pipe, a loop of rounds until SIGTERM/SIGINT/SIGQUIT or until the supervisor is gone, the
row registered whenever the role (re)gains the database and beating at least every HEARTBEAT_SECONDS, a
backoff after a lost connection, the row marked stopped at the end. A role says only what one round does."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from typing import Any, ClassVar

from pgqueue import db, events, sql
from pgqueue.conf import Settings
from pgqueue.worker.signals import SignalPipe

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class ProcessRow:
    """A process's row in pgqueue_workerprocess, written through `runner` (a db.Database, or settle.InDjango)."""

    def __init__(self, runner: Any, process_id: str, kind: str, supervisor_id: str, *, queues: str = "",
                 concurrency: int = 0, connections: int = 1) -> None:
        self.runner = runner
        self.params = dict(id=process_id, kind=kind, supervisor=supervisor_id, hostname=socket.gethostname(),
                           pid=os.getpid(), queues=queues, concurrency=concurrency, connections=connections)

    def register(self) -> None:
        self.runner.run(sql.workerprocess_register, **self.params)

    def heartbeat(self) -> None:
        self.runner.run(sql.workerprocess_heartbeat, id=self.params["id"])

    def set_state(self, state: str, errors: tuple[type[BaseException], ...] = db.CONNECTION_ERRORS) -> None:
        """Mark the row (stopping, stopped): best effort, the process is on its way out."""
        try:
            self.runner.run(sql.workerprocess_set_state, ids=[self.params["id"]], state=state)
        except errors:
            pass


class Role:
    """A process role beside the workers. Subclasses set `kind` and define round(); they may define
    registered() (run after each registration), lost() (after a connection error) and wait()."""

    kind: ClassVar[str]
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = db.CONNECTION_ERRORS
    heartbeat_every: float | None = None  # seconds; None: HEARTBEAT_SECONDS

    def detail(self) -> str:
        """What its start-up line adds (the metrics process: the address it serves)."""
        return ""

    def __init__(self, process_id: str, supervisor_id: str, settings: Settings, runner: Any) -> None:
        self.id = process_id
        self.supervisor_id = supervisor_id
        self.settings = settings
        self.runner = runner
        self.row = ProcessRow(runner, process_id, self.kind, supervisor_id)
        self.pipe = SignalPipe(STOP_SIGNALS)
        self.registered = False
        self.connected_at = 0.0  # monotonic: when this process last (re)gained the database
        self.next_heartbeat = 0.0
        self.failures = 0

    def run(self) -> int:
        events.emit("worker_started", worker=self.id, kind=self.kind, queues=(), concurrency=0, detail=self.detail())
        parent = os.getppid()
        while not self.pipe.drain() and os.getppid() == parent:  # stop with the supervisor, or if it is gone
            try:
                wait = self.tick()
                self.failures = 0
            except self.connection_errors as exc:
                self.registered = False
                self.failures += 1
                wait = self.lost(exc)
            self.wait(wait)
        self.row.set_state("stopped", self.connection_errors)
        self.close()
        return 0

    def tick(self) -> float:
        """One round with its bookkeeping: register (or beat), then round(). Returns the seconds to wait."""
        self.beat()
        return self.round()

    def beat(self) -> None:
        """Register the row after (re)gaining the database, else a heartbeat when one is due."""
        now = time.monotonic()
        if not self.registered:
            self.row.register()
            self.registered = True
            self.connected_at = now
            self.next_heartbeat = now + self._heartbeat_every()
            self.registered_now()
        elif now >= self.next_heartbeat:
            self.row.heartbeat()
            self.next_heartbeat = now + self._heartbeat_every()

    def _heartbeat_every(self) -> float:
        return self.settings.HEARTBEAT_SECONDS if self.heartbeat_every is None else self.heartbeat_every

    def round(self) -> float:
        raise NotImplementedError

    def registered_now(self) -> None:
        """After each registration: the role's own set-up on a new connection."""

    def lost(self, exc: BaseException) -> float:
        """After a connection error: the seconds to wait before the next round (0.1 s doubling to 5 s)."""
        return db.backoff_seconds(self.failures)

    def wait(self, seconds: float) -> None:
        """Wait up to `seconds`, waking at once for a stop signal."""
        select.select([self.pipe.read_fd], [], [], seconds)

    def close(self) -> None:
        self.runner.close()
