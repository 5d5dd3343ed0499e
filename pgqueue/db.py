"""The only code that runs pgqueue's runtime SQL: a statement's handle (pgqueue.sql) run with exactly its
parameters, its rows returned as its row type, on Django's connection (joining the caller's transaction) or
on a worker role's own psycopg connection."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from django.db import connections
from psycopg import sql as psql

from pgqueue import events, sql
from pgqueue.conf import get_settings
from pgqueue.sql import Statement
from pgqueue.sql.rows import Cancelled, Moved
from pgqueue.types import Transition

logger = logging.getLogger("pgqueue.db")
R = TypeVar("R")



class PoolerError(psycopg.OperationalError):
    """A statement met a prepared statement it did not make, or missed one it made: a transaction pooler hands
    this connection's server session to other clients. Handled as a lost connection (closed, reported,
    retried), never as a job's fault."""


# Errors that mean "the connection or server is gone", not "this statement is wrong".
CONNECTION_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
# What a transaction pooler does to a client that keeps prepared statements (SQLSTATE 42P05, 26000): each is
# raised again as a PoolerError. ("bind message supplies 1 parameters, but prepared statement requires 3",
# 08P01, is an OperationalError already.)
POOLER_SIGNS: tuple[type[Exception], ...] = (psycopg.errors.DuplicatePreparedStatement,
                                             psycopg.errors.InvalidSqlStatementName)
POOLER_ADVICE = ("the server session is not this connection's own: a transaction pooler sits between pgqueue and "
                 "PostgreSQL. Set PGQUEUE['POOLER'] = 'transaction' (docs/deployment.md); until then this "
                 "process stops preparing statements")

# A worker role's connection keeps one plan per prepared statement (session_generic_plans), made from the
# table's size when it is first run. A plan made while the job table was empty or small (a worker started
# on an idle queue) would outlive the table's growth until autovacuum's next ANALYZE, scanning what it
# took for a few rows: so the plans are made again this often (session_discard_plans).
REPLAN_SECONDS = 5.0

# Statements run as server-side prepared statements on Django's connection (Settings.prepare):
# measured, the single ready-now enqueue spends ~90 µs of its ~850 µs parsing and planning when it is not.
PREPARED = frozenset({sql.job_insert_ready})
_CHECKED: set[str] = set()  # statements whose result columns matched their row type once


def run(cursor: Any, statement: Statement[R], /, **params: Any) -> list[R]:
    """Execute a statement on a DB-API cursor with exactly its parameters; return its rows as its row type."""
    if params.keys() != statement.params:
        raise TypeError(_wrong_params(statement, params))
    cursor.execute(_text(statement, params), params)
    if cursor.description is None:
        return []
    build = statement.from_json
    if build is not None:
        document = cursor.fetchone()[0]
        if isinstance(document, str):  # a cursor without psycopg's JSON loader (Django's, in some setups)
            document = json.loads(document)
        return list(map(build, document))
    if statement.name not in _CHECKED:
        _check_columns(statement, tuple(d.name for d in cursor.description))
    cls, columns = statement.row, statement.columns
    assert cls is not None  # checked: a statement returning rows names their type
    if issubclass(cls, tuple):  # a NamedTuple: its columns were checked to be its fields, in order
        return list(map(cls._make, cursor.fetchall()))  # type: ignore[attr-defined]
    return [cls(**dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]


def _wrong_params(statement: Statement[Any], params: dict[str, Any]) -> str:
    missing, extra = sorted(statement.params - params.keys()), sorted(params.keys() - statement.params)
    return (f"statement {statement.name} takes {sorted(statement.params)}"
            + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))


def _check_columns(statement: Statement[Any], columns: tuple[str, ...]) -> None:
    if statement.row is None:
        raise TypeError(f"statement {statement.name} returns rows but its handle names no row type")
    if columns != statement.columns:
        raise TypeError(f"statement {statement.name} returns columns {columns}, its row type "
                        f"{statement.row.__name__} has {statement.columns}")
    _CHECKED.add(statement.name)


def _text(statement: Statement[Any], params: dict[str, Any]) -> Any:
    if statement.identifiers:  # names, not values: quoted into the text, never bound
        return psql.SQL(statement.text).format(
            **{key: psql.Identifier(params.pop(key)) for key in statement.identifiers})
    return statement.text


# The fields of one transition in job_set_state_if_running_many's JSON rows, in order (its input CTE reads
# them by position). The attempt's start is the row's started_at, set by the lease this token names.
TRANSITION_FIELDS = (
    "id", "token", "state", "yields", "run_at", "reason", "result", "attempts", "lost", "crashes",
    "job_error_class", "job_error", "number", "outcome", "worker", "finished_at", "error_class", "message",
    "traceback", "exit_code", "release_lock", "release_slot", "slot",
)


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of these strings: bound as one string where a statement casts it to text[]
    (a worker binds its queues thousands of times; a list is dumped element by element in Python)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def transition_params(transitions: Sequence[Transition]) -> dict[str, str]:
    """job_set_state_if_running_many's parameter: the transitions as one JSON array of rows."""
    rows = [
        [t.job_id, str(t.lease_token), t.state.value, t.yields_to_cancel,
         None if t.run_at is None else t.run_at.isoformat(), t.reason_code, t.result, t.attempts,
         t.lost_attempts, t.crashes, t.job_error_class, t.job_error, t.attempt, t.outcome.value, t.worker,
         t.finished_at.isoformat(), t.error_class, t.message, t.traceback, t.exit_code, t.release_lock,
         t.release_slot, t.slot]
        for t in transitions
    ]
    return {"transitions": json.dumps(rows, ensure_ascii=False, separators=(",", ":"))}


def apply_transitions(database: Database, transitions: Sequence[Transition], *, worker: str,
                      channel: str) -> list[Moved]:
    """Apply transitions (job_set_state_if_running_many). When a job with a semaphore slot is among them,
    in one transaction with semaphore_hand_off, so a slot given up goes to the next blocked job at once."""
    params = transition_params(transitions)
    if not any(t.slot is not None for t in transitions):
        return database.run(sql.job_set_state_if_running_many, **params, worker=worker, channel=channel)
    with database.transaction():
        moved = database.run(sql.job_set_state_if_running_many, **params, worker=worker, channel=channel)
        if any(m.slot_key is not None for m in moved):
            database.run(sql.semaphore_hand_off, **hand_off_params(moved, channel=channel))
    return moved


def hand_off_params(rows: Sequence[Moved | Cancelled], *, channel: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """semaphore_hand_off's parameters: the slots these rows gave up, and more keys to look at."""
    given_up = [r for r in rows if r.slot_key is not None]
    return {"job_ids": [r.id for r in given_up], "slot_keys": [r.slot_key for r in given_up],
            "slots": [r.slot for r in given_up], "keys": sorted(set(keys)), "channel": channel}


def run_in_django(statement: Statement[R], /, *, using: str | None = None, **params: Any) -> list[R]:
    """Execute a statement on Django's connection for the pgqueue alias (joins its transaction)."""
    settings = get_settings()
    conn = connections[using or settings.DATABASE]
    if statement in PREPARED and settings.prepare and not conn.queries_logged:
        return _run_prepared(conn, statement, params)
    with conn.cursor() as cursor:
        return run(cursor, statement, **params)


def _run_prepared(conn: Any, statement: Statement[R], params: dict[str, Any]) -> list[R]:
    """Run a statement prepared on Django's psycopg connection, through Django's cursor wrapper (so its
    execute wrappers and error translation apply). Django leaves psycopg's prepare_threshold at None
    (never prepare); it is 0 (prepare at once) for this one call only. Not used while Django logs queries
    (DEBUG, tests capturing them): its log cannot show a prepared statement's text."""
    conn.ensure_connection()
    raw = conn.connection
    saved = raw.prepare_threshold
    raw.prepare_threshold = 0
    try:
        with conn.make_cursor(psycopg.Cursor(raw)) as cursor:
            return run(cursor, statement, **params)
    finally:
        raw.prepare_threshold = saved


def connection_kwargs(alias: str | None = None) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for a Django database alias."""
    alias = alias or get_settings().DATABASE
    settings_dict = connections[alias].settings_dict
    options = dict(settings_dict.get("OPTIONS") or {})
    for django_only in ("pool", "server_side_binding", "isolation_level", "assume_role", "cursor_factory"):
        options.pop(django_only, None)
    params: dict[str, Any] = {"dbname": settings_dict.get("NAME") or "postgres", **options}
    for key, param in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        if settings_dict.get(key):
            params[param] = str(settings_dict[key])
    params.setdefault("application_name", "pgqueue")
    return params


def listen_kwargs(settings: Any) -> dict[str, Any] | None:
    """psycopg.connect() arguments for a worker's LISTEN connection: the jobs' database, unless a transaction
    pooler sits in front of it (LISTEN there hears nothing: a NOTIFY reaches the session that listened, and
    the pooler hands that session to other clients). Then LISTEN_DATABASE, or None: the workers poll."""
    if not settings.transaction_pooled:
        return connection_kwargs(settings.DATABASE)
    if settings.LISTEN_DATABASE is None:
        return None
    return connection_kwargs(settings.LISTEN_DATABASE)


def notify_round_trip(listen_params: dict[str, Any], notify_params: dict[str, Any], *, owner: str,
                      timeout: float) -> float | None:
    """LISTEN on a private channel through `listen_params`, NOTIFY it through `notify_params`: the seconds until
    the NOTIFY arrived, or None if it did not within `timeout` (a transaction pooler between the listener and
    the server, or two different databases)."""
    channel = f"pgqueue_probe_{uuid.uuid4().hex[:16]}"
    listener = Database(listen_params, owner=owner, role="listen probe")
    sender = Database(notify_params, owner=owner, role="notify probe")
    try:
        listener.run(sql.channel_listen, channel=channel)
        started = time.monotonic()
        sender.run(sql.channel_notify, channel=channel, payloads=[channel])
        conn = listener.connect()
        while (left := started + timeout - time.monotonic()) > 0:
            for note in conn.notifies(timeout=left, stop_after=1):
                if note.channel == channel:
                    return time.monotonic() - started
        return None
    finally:
        listener.close()
        sender.close()


def backoff_seconds(failures: int) -> float:
    """Seconds to wait after `failures` connection errors in a row: 0.1 s doubling to 5 s."""
    return min(5.0, 0.1 * (2.0 ** min(failures, 6)))


class Database:
    """A worker role's own autocommit connection, opened lazily and replaced after a connection error. Threads
    may share it (a worker's loop and its completer): statements and transactions take it in turn."""

    def __init__(self, params: dict[str, Any], *, owner: str, role: str) -> None:
        self.params = {**params, "application_name": f"pgqueue {role} {owner}"[:63]}
        self.owner = owner
        self.role = role
        self.pooled = False  # a pooler mixed this connection's sessions: keep no session state from now on
        self.conn: psycopg.Connection[Any] | None = None
        self.failures = 0
        self.replan_at: float | None = None  # when its kept plans are made again (None: it keeps none)
        self._cursor: psycopg.Cursor[Any] | None = None
        self._turn = threading.RLock()  # one statement (or transaction) at a time on the connection

    def connect(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            try:
                self.conn = psycopg.connect(**self.params, autocommit=True, connect_timeout=5)
            except CONNECTION_ERRORS as exc:
                self.broken(exc, kind="connect")
                raise
            settings = get_settings()
            if not settings.prepare or self.pooled:
                self.conn.prepare_threshold = None
            elif not settings.transaction_pooled:  # plan each prepared statement once in a while (see
                with self.conn.cursor() as cursor:  # session_generic_plans); a pooled one keeps no SET
                    run(cursor, sql.session_generic_plans)
                self.replan_at = time.monotonic() + REPLAN_SECONDS
            if self.failures:
                logger.info("%s reconnected to the database", self.owner)
            self.failures = 0
        return self.conn

    def run(self, statement: Statement[R], /, **params: Any) -> list[R]:
        """Run a statement; on a connection error close the connection and re-raise (a pooler's sign as a
        PoolerError)."""
        with self._turn:
            return self._run(statement, params)

    def _run(self, statement: Statement[R], params: dict[str, Any]) -> list[R]:
        conn = self.connect()
        try:
            cursor = self._cursor
            if cursor is None or cursor.connection is not conn:  # one cursor per connection, used in turn
                cursor = self._cursor = conn.cursor()
            if self.replan_at is not None and time.monotonic() >= self.replan_at:
                cursor.execute(sql.session_discard_plans.text, prepare=False)  # a command: never prepared
                self.replan_at = time.monotonic() + REPLAN_SECONDS
            return run(cursor, statement, **params)
        except CONNECTION_ERRORS as exc:
            self.broken(exc)
            raise
        except POOLER_SIGNS as exc:
            self.pooled = True
            self.replan_at = None
            error = PoolerError(f"{type(exc).__name__}: {str(exc).strip()}: {POOLER_ADVICE}")
            self.broken(error, kind="pooler")
            raise error from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the statements inside in one transaction (locks taken by one are held for the next); other
        threads' statements wait until it ends."""
        with self._turn:
            conn = self.connect()  # a failed connect reports itself
            try:
                with conn.transaction():
                    yield
            except CONNECTION_ERRORS as exc:
                self.broken(exc)
                raise

    def broken(self, exc: BaseException, kind: str = "lost") -> None:
        """The connection failed (kind: connect, lost or pooler): count it, report it, close the connection."""
        self.failures += 1
        events.emit("db_reconnect", worker=self.owner, role=self.role, kind=kind, error=str(exc).strip(),
                    failures=self.failures)
        self.close()

    def backoff(self) -> float:
        """Seconds to wait before the next try: 0.1 s doubling to 5 s."""
        return backoff_seconds(self.failures)

    def close(self) -> None:
        self._cursor = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
