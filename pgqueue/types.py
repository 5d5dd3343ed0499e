"""Values that travel between layers: job states, reason codes, leased jobs, attempt endings, transitions."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class JobState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for run_at
    READY = "ready"  # may be leased now
    RUNNING = "running"  # leased by a worker
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # failed for good: attempts exhausted, non-retryable, unknown task, lost too often
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # waiting for a semaphore slot (a concurrency or ordering key)
    WAITING = "waiting"  # waiting for the jobs it depends on to finish (depends_on, a workflow step)


FINISHED_STATES = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


class Outcome(StrEnum):
    """How one attempt ended, as its attempt row says."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # raised (or its outcome could not be stored); retried or dead depending on attempts
    TIMEOUT = "timeout"  # ran past its timeout
    CANCELLED = "cancelled"  # stopped after a cancel request
    LOST = "lost"  # its process died or its lease expired; rescued by its supervisor or maintenance
    RELEASED = "released"  # handed back unfinished at shutdown


class ReasonCode(StrEnum):
    """Why a job is dead (or, for DEPENDENCY, cancelled without anyone asking)."""

    MAX_ATTEMPTS = "max_attempts"
    NON_RETRYABLE = "non_retryable"
    UNKNOWN_TASK = "unknown_task"  # its function could not be imported, attempt after attempt
    LOST = "lost"  # lost (its worker died or went silent) more often than it has attempts
    CRASHED = "crashed"  # its process crashed again while it ran alone: the likely cause of the crashes
    RESULT_TOO_LARGE = "result_too_large"  # it returned a result over MAX_RESULT_BYTES
    DEPENDENCY = "dependency"  # cancelled: a job it depends on is dead or cancelled (its last_error names it)


# The values made once per job on the hot path (a leased job, its transition) are NamedTuples: immutable like
# the frozen dataclasses elsewhere, but built in one C call, where a frozen dataclass pays a setattr per field
# (~4 us a job for these two alone, measured). Build them with keywords.


class LeasedJob(NamedTuple):
    """A job a worker holds: what the lease statement returned."""

    id: int
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int  # this attempt's number (attempts started, releases not counted)
    max_attempts: int
    lost_attempts: int  # earlier attempts that were lost (they do not use up max_attempts)
    crashes: int  # earlier attempts whose process crashed: above 0, the job runs alone in its process
    timeout: float | None
    lease_token: uuid.UUID
    started_at: dt.datetime
    lock_key: str | None = None  # the uniqueness key it took
    concurrency_key: str | None = None  # its semaphore
    slot: int | None = None  # the semaphore slot it holds
    concurrency_hold: bool = False  # keeps its slot while it waits to retry
    batch_id: int | None = None  # the batch it belongs to
    callback_of: int | None = None  # the batch it is a callback of
    run_at: dt.datetime | None = None  # when it became due (its pickup latency is started_at - run_at)
    created_at: str | None = None  # when it was enqueued, as the lease's JSON text (a django.tasks result's enqueued_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldJob:
    """A running job found held by a dead worker or by an expired lease: what rescue decides on."""

    id: int
    queue: str
    task: str
    attempt: int
    max_attempts: int
    lost_attempts: int
    crashes: int
    lease_token: uuid.UUID
    started_at: dt.datetime
    leased_by: str
    lock_key: str | None = None
    concurrency_key: str | None = None
    slot: int | None = None
    concurrency_hold: bool = False
    timeout: float | None = None  # seconds: a job its supervisor killed its process for ran past it


class Transition(NamedTuple):
    """A decided move of one job out of `running`, and the attempt row that records it.

    Applied by job_set_state_if_running_many only while the job is still running under `lease_token`."""

    job_id: int
    lease_token: uuid.UUID
    queue: str  # for the events that report it (metrics, logs); not written
    task: str
    state: JobState  # the job's next state...
    yields_to_cancel: bool  # ...unless a cancel request is found on the row when applied: then 'cancelled'
    run_at: dt.datetime | None  # the next run (retries); None keeps the row's
    reason_code: str  # why the job is dead ('' otherwise)
    result: str | None  # JSON text of the return value
    attempts: int  # the job's attempts counter afterwards (a released attempt is given back)
    lost_attempts: int
    crashes: int
    job_error_class: str | None  # the job's last error, None keeps the row's
    job_error: str | None
    # the attempt row
    attempt: int
    outcome: Outcome
    worker: str
    started_at: dt.datetime
    finished_at: dt.datetime
    error_class: str = ""
    message: str = ""
    traceback: str = ""
    exit_code: int | None = None  # LOST by a crash: the process's exit code (negative: the signal)
    # flow control, applied by the same statement (and semaphore_hand_off in its transaction)
    release_lock: bool = False  # its uniqueness key goes: it is done
    release_slot: bool = False  # it gives its semaphore slot up (done, or waiting to retry without it)
    slot: int | None = None  # the slot it held


@dataclass(frozen=True, slots=True, kw_only=True)
class SettledDependency:
    """A dependency settled because the job it waited for (its parent) reached a final state."""

    job_id: int  # the job that waits
    parent_id: int
    parent_state: str  # 'succeeded', 'dead' or 'cancelled'
    parent_task: str
    on_failure: str  # 'cancel' or 'run': what the waiting job does if the parent did not succeed


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """What a waiting job does about its dependencies settled just now (pgqueue.lifecycle.release)."""

    job_id: int
    satisfied: int  # dependencies that no longer hold it back
    cancel_reason: str | None  # set: it is cancelled, and this says which dependency failed


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A progress report from a running job."""

    job_id: int
    lease_token: uuid.UUID
    value: float
    message: str
