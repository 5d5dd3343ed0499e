"""Values that travel between layers: job states, reason codes, leased jobs and outcomes."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for run_at
    READY = "ready"  # may be leased now
    RUNNING = "running"  # leased by a worker
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # failed for good: attempts exhausted, non-retryable, unknown task, lost too often
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # waiting on a semaphore or dependency (later features)


FINISHED_STATES = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


class Outcome(StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # raised; retried or dead depending on attempts
    TIMEOUT = "timeout"  # ran past its timeout
    CANCELLED = "cancelled"  # stopped after a cancel request
    LOST = "lost"  # its worker died or its lease expired; rescued by maintenance
    RELEASED = "released"  # handed back unfinished at shutdown


class ReasonCode(StrEnum):
    """Why a job is dead."""

    MAX_ATTEMPTS = "max_attempts"
    NON_RETRYABLE = "non_retryable"
    UNKNOWN_TASK = "unknown_task"
    LOST = "lost"  # its worker died more often than it has attempts


@dataclass(frozen=True, slots=True, kw_only=True)
class LeasedJob:
    """A job a worker holds: what the lease statement returned."""

    id: int
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout: float | None
    lease_token: uuid.UUID
    started_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """The end of one attempt, as the completer writes it."""

    job_id: int
    lease_token: uuid.UUID
    attempt: int
    state: JobState  # the job's next state
    outcome: Outcome
    started_at: dt.datetime
    finished_at: dt.datetime
    run_at: dt.datetime | None = None  # for a retry
    result: str | None = None  # JSON text
    error_class: str = ""
    error_message: str = ""
    traceback: str = ""
    reason_code: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A progress report from a running job."""

    job_id: int
    lease_token: uuid.UUID
    value: float
    message: str
