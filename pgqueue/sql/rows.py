"""The rows pgqueue's engine statements return (see pgqueue.sql): frozen dataclasses, or NamedTuples where
a statement returns many rows a worker reads at once, with their columns' names in order."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from pgqueue.types import LeasedJob


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
class Token:
    token: int


@dataclass(frozen=True, slots=True)
class Leadership:
    """leader_get: who leads a role; `live` while its lease runs (by the database's clock)."""

    holder: str
    token: int
    acquired_at: dt.datetime
    renewed_at: dt.datetime
    expires_at: dt.datetime
    live: bool


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


def leased(v: list[Any]) -> LeasedJob:
    """A LeasedJob from its fields in a JSON array (lease token and times as JSON text; created_at is left
    as text, parsed only by who reads it)."""
    return LeasedJob(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], uuid.UUID(v[10]),
                     dt.datetime.fromisoformat(v[11]), v[12], v[13], v[14], v[15], v[16], v[17],
                     None if v[18] is None else dt.datetime.fromisoformat(v[18]), v[19])
