"""A worker's LISTEN connection: registered in the loop's selector, says when one of its queues got work
(payload: the queue's name; RATED + the queue's name for jobs with a rate key, which only
job_lease_limited leases) or got a crash suspect to run alone (payload: SUSPECTS + the queue's name)."""

from __future__ import annotations

import contextlib
import selectors

import psycopg

from pgqueue import db, sql

SUSPECTS = ",suspects:"  # a queue name has no comma, so no queue's payload starts like this
RATED = ",rated:"  # the statements that make jobs with a rate key ready write this before the queue's name


class Wake:
    """What the NOTIFYs read at once said: work in our queues (some with a rate key), crash suspects in
    our queues."""

    __slots__ = ("rated", "suspects", "work")

    def __init__(self, work: bool = False, suspects: bool = False, rated: bool = False) -> None:
        self.work = work
        self.suspects = suspects
        self.rated = rated


class Listener:
    """LISTEN on the notify channel; read() tells whether a NOTIFY named one of `queues`. With no database
    (a transaction pooler and no LISTEN_DATABASE) it never listens: the worker polls every POLL_SECONDS."""

    def __init__(self, database: db.Database | None, selector: selectors.BaseSelector, channel: str,
                 queues: tuple[str, ...]) -> None:
        self.database = database
        self.selector = selector
        self.channel = channel
        self.queues = frozenset(queues)
        self.suspect_payloads = frozenset(SUSPECTS + q for q in queues)
        self.rated_payloads = frozenset(RATED + q for q in queues)
        self.fd = -1  # the registered socket while listening, -1 otherwise

    @property
    def listening(self) -> bool:
        return self.fd >= 0

    def ensure(self) -> bool:
        """Listen if not listening yet. True when it just (re)started: NOTIFYs may have been missed."""
        if self.listening or self.database is None:
            return False
        try:
            self.database.run(sql.channel_listen, channel=self.channel)  # connects (a failure is reported)
            conn = self.database.connect()
            fd = conn.fileno()
            self.selector.register(fd, selectors.EVENT_READ, "listen")
            self.fd = fd
            return True
        except db.CONNECTION_ERRORS:
            return False  # Database.run already closed it; try again at the next wait

    def read(self) -> Wake:
        """Consume pending NOTIFYs. A broken connection wakes for all (anything may have been missed)."""
        assert self.database is not None  # only a listening Listener's socket is registered
        conn = self.database.conn
        if conn is None:
            self.stop()
            return Wake(work=True, suspects=True, rated=True)
        wake = Wake()
        try:
            for note in conn.notifies(timeout=0):
                if note.payload in self.queues:
                    wake.work = True
                elif note.payload in self.rated_payloads:
                    wake.work = wake.rated = True
                elif note.payload in self.suspect_payloads:
                    wake.suspects = True
        except psycopg.Error as exc:
            self.stop()
            self.database.broken(exc)
            return Wake(work=True, suspects=True, rated=True)
        return wake

    def stop(self) -> None:
        """Forget the socket by the fd we registered (a lost connection can no longer tell it)."""
        if self.listening:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.fd)
            self.fd = -1
