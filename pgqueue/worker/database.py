"""A worker role's own psycopg connection: named statements, reconnect with backoff when it breaks."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from pgqueue import db, events

logger = logging.getLogger("pgqueue.worker")

# Errors that mean "the connection or server is gone", not "this statement is wrong".
CONNECTION_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


class Database:
    """One autocommit connection, opened lazily and replaced after a connection error."""

    def __init__(self, params: dict[str, Any], *, owner: str, role: str) -> None:
        self.params = {**params, "application_name": f"pgqueue {role} {owner}"[:63]}
        self.owner = owner
        self.conn: psycopg.Connection[Any] | None = None
        self.failures = 0

    def connect(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(**self.params, autocommit=True, connect_timeout=5)
            if self.failures:
                logger.info("%s reconnected to the database", self.owner)
            self.failures = 0
        return self.conn

    def run(self, name: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run a named statement; on a connection error close the connection and re-raise."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                return db.run(cursor, name, **params)
        except CONNECTION_ERRORS as exc:
            self.broken(exc)
            raise

    def broken(self, exc: BaseException) -> None:
        self.failures += 1
        logger.warning("%s lost its database connection (%s); will reconnect", self.owner, exc)
        events.emit("db_reconnect", worker=self.owner, error=str(exc))
        self.close()

    def backoff(self) -> float:
        """Seconds to wait before the next try: 0.1 s doubling to 5 s."""
        return min(5.0, 0.1 * (2 ** min(self.failures, 6)))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

