"""A worker's LISTEN connection: registered in the loop's selector, says when one of its queues got work."""

from __future__ import annotations

import contextlib
import selectors

import psycopg

from pgqueue import db


class Listener:
    """LISTEN on the notify channel; read() tells whether a NOTIFY named one of `queues`."""

    def __init__(self, database: db.Database, selector: selectors.BaseSelector, channel: str,
                 queues: tuple[str, ...]) -> None:
        self.database = database
        self.selector = selector
        self.channel = channel
        self.queues = frozenset(queues)
        self.fd = -1  # the registered socket while listening, -1 otherwise

    @property
    def listening(self) -> bool:
        return self.fd >= 0

    def ensure(self) -> bool:
        """Listen if not listening yet. True when it just (re)started: NOTIFYs may have been missed."""
        if self.listening:
            return False
        try:
            conn = self.database.connect()
            self.database.run("channel_listen", channel=self.channel)
            fd = conn.fileno()
            self.selector.register(fd, selectors.EVENT_READ, "listen")
            self.fd = fd
            return True
        except db.CONNECTION_ERRORS:
            return False  # Database.run already closed it; try again at the next wait

    def read(self) -> bool:
        """Consume pending NOTIFYs; True if one names our queues (or the connection broke: poll then)."""
        conn = self.database.conn
        if conn is None:
            self.stop()
            return True
        woken = False
        try:
            for note in conn.notifies(timeout=0):
                woken = woken or note.payload in self.queues
        except psycopg.Error as exc:
            self.stop()
            self.database.broken(exc)
            return True
        return woken

    def stop(self) -> None:
        """Forget the socket by the fd we registered (a lost connection can no longer tell it)."""
        if self.listening:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.fd)
            self.fd = -1
