"""The only code that runs pgqueue's runtime SQL: named statements returning typed rows, on Django's
connection (joining the caller's transaction) or on a worker role's own psycopg connection."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import psycopg
from django.db import connections
from psycopg import sql

from pgqueue import events
from pgqueue.conf import get_settings
from pgqueue.sql import QUERIES
from pgqueue.types import HeldJob, LeasedJob, SettledDependency, Transition

logger = logging.getLogger("pgqueue.db")

# Errors that mean "the connection or server is gone", not "this statement is wrong".
CONNECTION_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)

# A worker role's connection keeps one plan per prepared statement (session_generic_plans), made from the
# table's size when it is first run. A plan made while the job table was empty or small (a worker started
# on an idle queue) would outlive the table's growth until autovacuum's next ANALYZE, scanning what it
# took for a few rows: so the plans are made again this often (session_discard_plans).
REPLAN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class JobId:
    id: int


@dataclass(frozen=True, slots=True)
class Woken:
    id: int
    woken: int  # NOTIFYs sent by the statement (the column makes PostgreSQL run the wake-up)


class Moved(NamedTuple):
    """A job job_set_state_if_running_many moved (one per job: a NamedTuple, see pgqueue.types)."""

    id: int
    state: str
    woken: int
    slot_key: str | None  # the semaphore whose slot it gave up (then slot is the slot's number)
    slot: int | None
    batch_id: int | None  # its batch (pgqueue.settle looks at it once this has committed)
    has_dependents: bool  # jobs depend on it (pgqueue.settle releases or cancels them)


@dataclass(frozen=True, slots=True)
class Cancelled:
    id: int
    state: str  # 'cancelled', or 'cancelling' for a running job asked to stop
    slot_key: str | None
    slot: int | None
    batch_id: int | None
    has_dependents: bool


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    id: int
    topic: str
    key: str | None
    payload: str  # JSON text
    created_at: Any


@dataclass(frozen=True, slots=True)
class Delivered:
    event_id: int
    subscriber: str
    job_id: int


@dataclass(frozen=True, slots=True)
class DueSchedule:
    name: str
    last_tick_at: Any
    created_at: Any
    now: Any


@dataclass(frozen=True, slots=True)
class Soonest:
    next_tick_at: Any
    now: Any


@dataclass(frozen=True, slots=True)
class Parent:
    id: int
    state: str
    task: str


@dataclass(frozen=True, slots=True)
class Released:
    """A waiting job that job_release_waiting_many moved (or that still waits for others)."""

    id: int
    state: str
    batch_id: int | None
    has_dependents: bool
    key: str | None  # the semaphore it now waits for ('blocked')
    woken: int


@dataclass(frozen=True, slots=True)
class BatchLocked:
    id: int
    closed: bool
    cancelled: bool


@dataclass(frozen=True, slots=True)
class BatchSettled:
    id: int
    failed: bool  # its failure callback's moment came now
    finished: bool
    succeeded: bool
    callbacks: list[list[Any]]  # the callbacks fired: [job id, queue, task, args, kwargs, priority, max_attempts, timeout]


@dataclass(frozen=True, slots=True)
class Retried:
    id: int
    woken: int
    key: str | None  # the semaphore it waits for ('blocked'), if any


@dataclass(frozen=True, slots=True)
class LockTaken:
    call: int  # index of the call in the batch
    id: int  # the job id the call gets if it holds all its keys
    holder: int | None  # the job holding this key (== id: the call took it); None: the call has no key
    kind: str | None
    key: str | None


@dataclass(frozen=True, slots=True)
class Key:
    key: str


@dataclass(frozen=True, slots=True)
class Resumed:
    name: str
    woken: int


@dataclass(frozen=True, slots=True)
class PausedOrResumed:
    name: str
    quiet: bool  # True: paused (no NOTIFY); a resumed queue wakes its workers


@dataclass(frozen=True, slots=True)
class Limited:
    limited: bool


@dataclass(frozen=True, slots=True)
class LocksReaped:
    released: int
    deleted: int


@dataclass(frozen=True, slots=True)
class Beat:
    id: int
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Replayable:
    id: int
    copy_id: int  # reserved for the copy
    queue: str
    task: str
    args: str  # JSON text
    kwargs: str
    priority: int
    max_attempts: int
    timeout: float | None
    concurrency_key: str | None
    concurrency_hold: bool
    rate_key: str | None


@dataclass(frozen=True, slots=True)
class Staged:
    staged: int
    woken: int


@dataclass(frozen=True, slots=True)
class Count:
    count: int


@dataclass(frozen=True, slots=True)
class Take:
    granted: bool
    retry_after: float


@dataclass(frozen=True, slots=True)
class Pruned:
    jobs: int
    attempts: int


@dataclass(frozen=True, slots=True)
class StateCount:
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class Leader:
    leader: bool


@dataclass(frozen=True, slots=True)
class Held:
    held: bool


@dataclass(frozen=True, slots=True)
class Sent:
    sent: int


@dataclass(frozen=True, slots=True)
class Exists:
    exists: bool


@dataclass(frozen=True, slots=True)
class Estimate:
    estimate: int


@dataclass(frozen=True, slots=True)
class WorkerId:
    id: str


# The row type of every statement that returns rows; the others return an empty list.
RETURNS: dict[str, type] = {
    "job_insert_many": Woken,
    "job_insert": Woken,
    "job_insert_ready": Woken,
    "job_replace_waiting_many": Woken,
    "job_lock_parents": Parent,
    "dependency_settle": SettledDependency,
    "dependency_unsettled": JobId,
    "job_release_waiting_many": Released,
    "batch_create": JobId,
    "batch_lock": BatchLocked,
    "batch_lock_for_update": BatchLocked,
    "batch_close": JobId,
    "batch_cancel": JobId,
    "batch_settle": BatchSettled,
    "batch_unsettled": JobId,
    "outbox_insert_many": JobId,
    "outbox_claim": ClaimedEvent,
    "outbox_deliver_many": Delivered,
    "outbox_prune": Count,
    "schedule_sync_many": Count,
    "schedule_due": DueSchedule,
    "schedule_soonest": Soonest,
    "schedule_tick_take": JobId,
    "schedule_set_enabled": Name,
    "lock_take_many": LockTaken,
    "lock_reap": LocksReaped,
    "lock_release_many": JobId,
    "semaphore_hand_off": Woken,
    "semaphore_waiting_keys": Key,
    "semaphore_slot_reap": Key,
    "job_reserve_ids": JobId,
    "job_lease": LeasedJob,
    "job_lease_suspect": LeasedJob,
    "job_lease_limited": LeasedJob,
    "queuestate_limited": Limited,
    "queuestate_set_limits": Name,
    "queuestate_set_breaker": Name,
    "queuestate_resume_due": Resumed,
    "job_set_state_if_running_many": Moved,
    "job_get_held_by_worker": HeldJob,
    "job_get_expired": HeldJob,
    "job_stage_due": Staged,
    "job_heartbeat": Beat,
    "job_cancel_many": Cancelled,
    "job_retry_many": Retried,
    "job_delete_finished_many": JobId,
    "job_get_replayable": Replayable,
    "job_prune": Pruned,
    "job_prune_count": StateCount,
    "archive_prune": Count,
    "ratelimit_take_enqueue": Take,
    "queuestate_set_paused": PausedOrResumed,
    "queuestate_pause_drained": Name,
    "queuestate_drain": Name,
    "workerprocess_reap": WorkerId,
    "maintenance_try_lead": Leader,
    "table_estimated_rows": Estimate,
    "job_is_leased": Held,
    "devdb_database_exists": Exists,
    "channel_notify": Sent,
}
# Statements that take identifiers (written {name} in queries.sql) rather than bound values.
IDENTIFIERS: dict[str, tuple[str, ...]] = {"channel_listen": ("channel",), "devdb_create_database": ("database",)}
# Statements run as server-side prepared statements on Django's connection (PGQUEUE['PREPARE_STATEMENTS']):
# measured, the single ready-now enqueue spends ~90 µs of its ~850 µs parsing and planning when it is not.
PREPARED = frozenset({"job_insert_ready"})


def _names(cls: type) -> tuple[str, ...]:
    """A row type's fields, in order (a frozen dataclass or a NamedTuple)."""
    if issubclass(cls, tuple):
        return tuple(getattr(cls, "_fields"))  # noqa: B009 (a NamedTuple's, which mypy cannot see on a type)
    return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]


_COLUMNS = {name: _names(cls) for name, cls in RETURNS.items()}


def returns(**types: type) -> None:
    """Name the row type of statements from the reporting files (pgqueue/sql/*.sql other than queries.sql),
    from the module that runs them: statement name -> frozen dataclass of its columns, in order."""
    for name, cls in types.items():
        if name not in QUERIES:
            raise KeyError(f"no statement named {name!r} in pgqueue/sql")
        RETURNS[name] = cls
        _COLUMNS[name] = _names(cls)
_CHECKED: set[str] = set()  # statements whose result columns matched their row type once


def _leased(v: list[Any]) -> LeasedJob:
    """A LeasedJob from its fields in a JSON array (lease token and times as JSON text)."""
    return LeasedJob(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], uuid.UUID(v[10]),
                     dt.datetime.fromisoformat(v[11]), v[12], v[13], v[14], v[15], v[16], v[17],
                     None if v[18] is None else dt.datetime.fromisoformat(v[18]))


# Statements that return their rows as one JSON document (one column, `rows`: an array of arrays, each the
# row type's fields in order), and what builds a row from one array. The lease returns up to a worker's free
# slots every few ms: one document costs the worker a fraction of 19 typed columns a row (measured: the
# lease's fetch was a quarter of a worker's CPU per job). tests/unit/test_sql.py checks the field order.
JSON_ROWS: dict[str, Callable[[list[Any]], Any]] = {
    "job_lease": _leased, "job_lease_limited": _leased, "job_lease_suspect": _leased,
}


def run(cursor: Any, name: str, /, **params: Any) -> list[Any]:
    """Execute statement `name` on a DB-API cursor and return its rows as RETURNS[name] objects."""
    cursor.execute(_statement(name, params), params)
    if cursor.description is None:
        return []
    build = JSON_ROWS.get(name)
    if build is not None:
        document = cursor.fetchone()[0]
        if isinstance(document, str):  # a cursor without psycopg's JSON loader (Django's, in some setups)
            document = json.loads(document)
        return list(map(build, document))
    if name not in _CHECKED:
        _check_columns(name, tuple(d.name for d in cursor.description))
    cls, columns = RETURNS[name], _COLUMNS[name]
    if issubclass(cls, tuple):  # a NamedTuple: its columns were checked to be its fields, in order
        return list(map(cls._make, cursor.fetchall()))  # type: ignore[attr-defined]
    return [cls(**dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]


def _check_columns(name: str, columns: tuple[str, ...]) -> None:
    cls = RETURNS.get(name)
    if cls is None:
        raise TypeError(f"statement {name} returns rows but pgqueue.db.RETURNS names no row type for it")
    if columns != _COLUMNS[name]:
        raise TypeError(f"statement {name} returns columns {columns}, its row type {cls.__name__} has "
                        f"{_COLUMNS[name]}")
    _CHECKED.add(name)


def _statement(name: str, params: dict[str, Any]) -> Any:
    text = QUERIES[name]
    identifiers = IDENTIFIERS.get(name)
    if identifiers:  # names, not values: quoted into the text, never bound
        return sql.SQL(text).format(**{key: sql.Identifier(params.pop(key)) for key in identifiers})
    return text


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
        return database.run("job_set_state_if_running_many", **params, worker=worker, channel=channel)
    with database.transaction():
        moved: list[Moved] = database.run("job_set_state_if_running_many", **params, worker=worker, channel=channel)
        if any(m.slot_key is not None for m in moved):
            database.run("semaphore_hand_off", **hand_off_params(moved, channel=channel))
    return moved


def hand_off_params(rows: Sequence[Moved | Cancelled], *, channel: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """semaphore_hand_off's parameters: the slots these rows gave up, and more keys to look at."""
    given_up = [r for r in rows if r.slot_key is not None]
    return {"job_ids": [r.id for r in given_up], "slot_keys": [r.slot_key for r in given_up],
            "slots": [r.slot for r in given_up], "keys": sorted(set(keys)), "channel": channel}


def run_in_django(name: str, /, *, using: str | None = None, **params: Any) -> list[Any]:
    """Execute statement `name` on Django's connection for the pgqueue alias (joins its transaction)."""
    settings = get_settings()
    conn = connections[using or settings.DATABASE]
    if name in PREPARED and settings.PREPARE_STATEMENTS and not conn.queries_logged:
        return _run_prepared(conn, name, params)
    with conn.cursor() as cursor:
        return run(cursor, name, **params)


def _run_prepared(conn: Any, name: str, params: dict[str, Any]) -> list[Any]:
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
            return run(cursor, name, **params)
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


def backoff_seconds(failures: int) -> float:
    """Seconds to wait after `failures` connection errors in a row: 0.1 s doubling to 5 s."""
    return min(5.0, 0.1 * (2.0 ** min(failures, 6)))


class Database:
    """A worker role's own autocommit connection, opened lazily and replaced after a connection error."""

    def __init__(self, params: dict[str, Any], *, owner: str, role: str) -> None:
        self.params = {**params, "application_name": f"pgqueue {role} {owner}"[:63]}
        self.owner = owner
        self.conn: psycopg.Connection[Any] | None = None
        self.failures = 0
        self.replan_at: float | None = None  # when its kept plans are made again (None: it keeps none)
        self._cursor: psycopg.Cursor[Any] | None = None

    def connect(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(**self.params, autocommit=True, connect_timeout=5)
            if not get_settings().PREPARE_STATEMENTS:
                self.conn.prepare_threshold = None
            else:  # plan each prepared statement once in a while (see session_generic_plans)
                with self.conn.cursor() as cursor:
                    run(cursor, "session_generic_plans")
                self.replan_at = time.monotonic() + REPLAN_SECONDS
            if self.failures:
                logger.info("%s reconnected to the database", self.owner)
            self.failures = 0
        return self.conn

    def run(self, name: str, /, **params: Any) -> list[Any]:
        """Run a named statement; on a connection error close the connection and re-raise."""
        conn = self.connect()
        try:
            cursor = self._cursor
            if cursor is None or cursor.connection is not conn:  # one cursor per connection, used in turn
                cursor = self._cursor = conn.cursor()
            if self.replan_at is not None and time.monotonic() >= self.replan_at:
                cursor.execute(QUERIES["session_discard_plans"], prepare=False)  # a command: never prepared
                self.replan_at = time.monotonic() + REPLAN_SECONDS
            return run(cursor, name, **params)
        except CONNECTION_ERRORS as exc:
            self.broken(exc)
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the statements inside in one transaction (locks taken by one are held for the next)."""
        conn = self.connect()
        try:
            with conn.transaction():
                yield
        except CONNECTION_ERRORS as exc:
            self.broken(exc)
            raise

    def broken(self, exc: BaseException) -> None:
        self.failures += 1
        events.emit("db_reconnect", worker=self.owner, error=str(exc))
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
