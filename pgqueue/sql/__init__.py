"""pgqueue's SQL: the statement files loaded into QUERIES (statement name -> SQL text), and a typed handle
for each statement (pgqueue.db runs a handle and returns its rows as the handle's row type).

queries.sql holds every statement the engine runs (enqueue, lease, transitions, maintenance): their handles
are this module's names (`sql.job_lease`). The other files hold read-only reporting for operators (status,
doctor, explain), one file per concern: their handles live in the module that runs them, beside their rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from pgqueue.sql import rows
from pgqueue.types import HeldJob, LeasedJob, SettledDependency

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(text: str) -> dict[str, str]:
    """Split a file of "-- name: x" sections into {name: sql}; comments stay in the text."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"queries.sql defines {name!r} twice")
        text = "\n".join(line for line in body.strip().splitlines() if not line.startswith("--")).strip()
        queries[name] = text.rstrip(";")
    return queries


def load_all(folder: Path) -> dict[str, str]:
    """Every *.sql file of the folder, queries.sql first; a name defined in two files is an error."""
    queries: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql"), key=lambda p: (p.name != "queries.sql", p.name)):
        for name, text in load(path.read_text()).items():
            if name in queries:
                raise ValueError(f"{path.name} defines {name!r}, already defined in another statement file")
            queries[name] = text
    return queries


FILES: tuple[Path, ...] = tuple(sorted(Path(__file__).parent.glob("*.sql")))
QUERIES: dict[str, str] = load_all(Path(__file__).parent)

_PARAMETER = re.compile(r"%\((\w+)\)s")
_IDENTIFIER = re.compile(r"\{(\w+)\}")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, eq=False)
class Statement(Generic[R]):
    """A named statement: its text, the parameters it binds, and the type of the rows it returns."""

    name: str
    text: str
    params: frozenset[str]  # every keyword it must be run with (bound values and identifiers)
    identifiers: tuple[str, ...]  # parameters that are names (written {name}): quoted into the text, never bound
    row: type[R] | None  # None: it returns no rows
    columns: tuple[str, ...]  # the row type's fields, in order: the statement's result columns
    from_json: Callable[[list[Any]], R] | None  # it returns one JSON document of rows: builds one row

    def __repr__(self) -> str:
        return f"<statement {self.name}>"


STATEMENTS: dict[str, Statement[Any]] = {}  # every handle made, by name: one per statement


@overload
def statement(name: str) -> Statement[None]: ...
@overload
def statement(name: str, row: type[R], *, from_json: Callable[[list[Any]], R] | None = None) -> Statement[R]: ...
def statement(name: str, row: type[Any] | None = None, *,
              from_json: Callable[[list[Any]], Any] | None = None) -> Statement[Any]:
    """The handle of statement `name` of pgqueue/sql/*.sql, whose rows are `row`s (a frozen dataclass or a
    NamedTuple whose fields are the result columns, in order); made once, where the statement is run."""
    if name not in QUERIES:
        raise KeyError(f"no statement named {name!r} in pgqueue/sql")
    if name in STATEMENTS:
        raise ValueError(f"statement {name} already has a handle")
    text = QUERIES[name]
    identifiers = tuple(dict.fromkeys(_IDENTIFIER.findall(text)))
    handle = Statement(name, text, frozenset(_PARAMETER.findall(text)) | set(identifiers), identifiers, row,
                       _columns(row), from_json)
    STATEMENTS[name] = handle
    return handle


def _columns(row: type | None) -> tuple[str, ...]:
    if row is None:
        return ()
    if issubclass(row, tuple):  # a NamedTuple
        return tuple(getattr(row, "_fields"))  # noqa: B009 (mypy cannot see _fields on a type)
    return tuple(f.name for f in fields(row))  # type: ignore[arg-type]  # a dataclass


# -- the engine's statements (queries.sql), in the file's order ---------------------------------------
job_insert_many = statement("job_insert_many", rows.Woken)
lock_release_many = statement("lock_release_many", rows.JobId)
lock_drop_many = statement("lock_drop_many")
job_replace_waiting_many = statement("job_replace_waiting_many", rows.Woken)
lock_take_many = statement("lock_take_many", rows.LockTaken)
job_insert = statement("job_insert", rows.Woken)
job_insert_ready = statement("job_insert_ready", rows.Woken)
job_reserve_ids = statement("job_reserve_ids", rows.JobId)
job_lease = statement("job_lease", LeasedJob, from_json=rows.leased)
job_lease_limited = statement("job_lease_limited", LeasedJob, from_json=rows.leased)
ratelimit_take_enqueue = statement("ratelimit_take_enqueue", rows.Take)
ratelimit_create_enqueue = statement("ratelimit_create_enqueue")
refusal_record = statement("refusal_record")
refusal_prune = statement("refusal_prune")
queuestate_limited = statement("queuestate_limited", rows.Limited)
queuestate_set_limits = statement("queuestate_set_limits", rows.Name)
job_lease_suspect = statement("job_lease_suspect", LeasedJob, from_json=rows.leased)
job_set_state_if_running_many = statement("job_set_state_if_running_many", rows.Moved)
semaphore_hand_off = statement("semaphore_hand_off", rows.Woken)
job_lock_parents = statement("job_lock_parents", rows.Parent)
dependency_insert_many = statement("dependency_insert_many")
dependency_settle = statement("dependency_settle", SettledDependency)
dependency_unsettled = statement("dependency_unsettled", rows.JobId)
job_release_waiting_many = statement("job_release_waiting_many", rows.Released)
batch_create = statement("batch_create", rows.JobId)
batch_lock = statement("batch_lock", rows.BatchLocked)
batch_lock_for_update = statement("batch_lock_for_update", rows.BatchLocked)
batch_close = statement("batch_close", rows.JobId)
batch_cancel = statement("batch_cancel", rows.JobId)
batch_settle = statement("batch_settle", rows.BatchSettled)
batch_unsettled = statement("batch_unsettled", rows.JobId)
outbox_insert_many = statement("outbox_insert_many", rows.JobId)
outbox_claim = statement("outbox_claim", rows.ClaimedEvent)
outbox_deliver_many = statement("outbox_deliver_many", rows.Delivered)
outbox_mark_relayed = statement("outbox_mark_relayed")
outbox_prune = statement("outbox_prune", rows.Count)
schedule_sync_many = statement("schedule_sync_many", rows.Count)
schedule_due = statement("schedule_due", rows.DueSchedule)
schedule_soonest = statement("schedule_soonest", rows.Soonest)
schedule_advance = statement("schedule_advance")
schedule_tick_take = statement("schedule_tick_take", rows.JobId)
schedule_tick_set_job = statement("schedule_tick_set_job")
schedule_set_enabled = statement("schedule_set_enabled", rows.Name)
schedule_tick_prune = statement("schedule_tick_prune")
semaphore_waiting_keys = statement("semaphore_waiting_keys", rows.Key)
semaphore_slot_reap = statement("semaphore_slot_reap", rows.Key)
lock_reap = statement("lock_reap", rows.LocksReaped)
job_get_held_by_worker = statement("job_get_held_by_worker", HeldJob)
job_get_expired = statement("job_get_expired", HeldJob)
job_stage_due = statement("job_stage_due", rows.Staged)
job_heartbeat = statement("job_heartbeat", rows.Beat)
job_progress_many = statement("job_progress_many")
job_cancel_many = statement("job_cancel_many", rows.Cancelled)
job_retry_many = statement("job_retry_many", rows.Retried)
job_delete_finished_many = statement("job_delete_finished_many", rows.JobId)
queuestate_set_paused = statement("queuestate_set_paused", rows.PausedOrResumed)
queuestate_resume_due = statement("queuestate_resume_due", rows.Resumed)
queuestate_set_breaker = statement("queuestate_set_breaker", rows.Name)
queuestate_pause_drained = statement("queuestate_pause_drained", rows.Name)
queuestate_drain = statement("queuestate_drain", rows.Name)
job_get_replayable = statement("job_get_replayable", rows.Replayable)
job_prune = statement("job_prune", rows.Pruned)
job_prune_count = statement("job_prune_count", rows.StateCount)
archive_prune = statement("archive_prune", rows.Count)
stat_prune = statement("stat_prune")
workerprocess_register = statement("workerprocess_register")
workerprocess_heartbeat = statement("workerprocess_heartbeat")
supervisor_heartbeat = statement("supervisor_heartbeat")
workerprocess_set_state = statement("workerprocess_set_state")
workerprocess_reap = statement("workerprocess_reap", rows.WorkerId)
leader_claim = statement("leader_claim", rows.Token)
leader_renew = statement("leader_renew", rows.Token)
leader_resign = statement("leader_resign", rows.Token)
leader_get = statement("leader_get", rows.Leadership)
channel_notify = statement("channel_notify", rows.Sent)
session_generic_plans = statement("session_generic_plans")
session_discard_plans = statement("session_discard_plans")
channel_listen = statement("channel_listen")
table_estimated_rows = statement("table_estimated_rows", rows.Estimate)
job_is_leased = statement("job_is_leased", rows.Held)
devdb_database_exists = statement("devdb_database_exists", rows.Exists)
devdb_create_database = statement("devdb_create_database")
