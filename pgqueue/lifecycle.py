"""Pure: given a held job, how its attempt ended and its retry policy, the transition to apply.

The one place that decides a job's next state when an attempt ends. Workers (finish, release), supervisors
(a child died holding jobs) and maintenance (expired leases) describe what happened as an AttemptEnd and
apply what `decide` returns with one guarded statement (job_set_state_if_running_many). No I/O here.

Dependencies are decided here too: when the jobs a waiting job depends on reach a final state, `release`
says whether it may start (none holds it back), keeps waiting, or is cancelled; job_release_waiting_many
applies that to jobs still 'waiting'.

Flow control is part of the decision: a job that is done releases its uniqueness key and its semaphore
slot; a job that will retry after a delay gives its slot up and waits as 'blocked' (the next job of its
key runs meanwhile), unless it holds the line (an ordering key with ordering_retry="block"); a job that
runs again at once (released at shutdown, rescued) keeps its slot.

Where a job that may run goes (runnable_state) and what a token bucket holds (bucket_tokens) are rules the
SQL statements apply through the functions of the same names (migration 0021); the twins here serve
explain and the admin, and a test holds each pair to the same answers.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from pgqueue.payload import fit
from pgqueue.types import (
    FINISHED_STATES,
    JobState,
    Outcome,
    ReasonCode,
    Release,
    SettledDependency,
    Transition,
)

# Column sizes the transition's text is fitted to (tests compare them with the models).
ERROR_CLASS_MAX = 255
WORKER_MAX = 64
MESSAGE_MAX = 2_000
TRACEBACK_MAX = 20_000

LOST_ERROR_CLASS = "pgqueue.LostLease"  # the worker went silent or its lease expired
DIED_ERROR_CLASS = "pgqueue.WorkerDied"  # the worker process ended while it ran the job
CRASHES_TO_BLAME = 2  # crashes (the last one while running alone) that make a job the likely cause


class Ending(StrEnum):
    """How an attempt ended, as seen by whoever reports it."""

    RETURNED = "returned"  # the job function returned (result is its JSON)
    RESULT_TOO_LARGE = "result_too_large"  # it returned a result over MAX_RESULT_BYTES
    RAISED = "raised"  # it raised (or leaving it failed: an open transaction, an unstorable error)
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # it stopped after a cancel request
    UNKNOWN_TASK = "unknown_task"  # its function could not be found or imported on this worker
    LOST = "lost"  # its process died (crash) or went silent until the lease expired
    RELEASED = "released"  # handed back unfinished at shutdown


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """An error as text: what the attempt row stores. Built by code that never raises."""

    error_class: str
    message: str
    traceback: str = ""


class AttemptEnd(NamedTuple):
    """How one attempt ended (a NamedTuple: one is made per job, see pgqueue.types)."""

    how: Ending
    worker: str
    finished_at: dt.datetime
    result: str | None = None  # RETURNED: JSON text
    error: ErrorInfo | None = None  # RAISED, TIMED_OUT, CANCELLED, UNKNOWN_TASK, RESULT_TOO_LARGE
    retryable: bool = True  # RAISED: False when the job's policy says this error is final
    exit_code: int | None = None  # LOST on an exit: waitpid's exit code (negative: killed by that signal)
    crash: bool = False  # LOST: its process ended while holding it (not a lease that merely expired)
    alone: bool = False  # LOST by a crash: it was the only job in that process


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Delay before the attempt after failure n: backoff * 2**(n-1), capped, plus up to jitter x itself."""

    backoff: float
    backoff_max: float
    jitter: float

    def delay(self, failures: int, rand: float) -> float:
        raw = self.backoff * 2.0 ** min(max(0, failures - 1), 60)
        delay = min(self.backoff_max, raw) * (1.0 + max(0.0, min(1.0, rand)) * self.jitter)
        if not math.isfinite(delay) or delay < 0:  # settings are validated; stay total regardless
            return self.backoff_max if math.isfinite(self.backoff_max) and self.backoff_max >= 0 else 0.0
        return delay


class Attempted(Protocol):
    """What decide needs to know about the job (a LeasedJob or a HeldJob)."""

    @property
    def id(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def lost_attempts(self) -> int: ...
    @property
    def crashes(self) -> int: ...
    @property
    def lease_token(self) -> uuid.UUID: ...
    @property
    def started_at(self) -> dt.datetime: ...
    @property
    def lock_key(self) -> str | None: ...
    @property
    def slot(self) -> int | None: ...
    @property
    def concurrency_hold(self) -> bool: ...


def decide(job: Attempted, end: AttemptEnd, policy: RetryPolicy, *, rand: float = 0.0) -> Transition:
    """The transition for `job` whose attempt ended as `end`. `rand` in [0, 1) spreads retry delays."""
    if end.how is Ending.RETURNED:
        return _move(job, end, JobState.SUCCEEDED, Outcome.SUCCEEDED, result=end.result)
    if end.how is Ending.RESULT_TOO_LARGE:
        return _move(job, end, JobState.DEAD, Outcome.FAILED, reason=ReasonCode.RESULT_TOO_LARGE)
    if end.how is Ending.CANCELLED:
        return _move(job, end, JobState.CANCELLED, Outcome.CANCELLED)
    if end.how is Ending.RELEASED:
        return _move(job, end, JobState.READY, Outcome.RELEASED, run_at=end.finished_at, attempts=job.attempt - 1,
                     message="handed back unfinished when the worker shut down", keep_job_error=True)
    if end.how is Ending.LOST:
        return _lost(job, end)
    outcome = Outcome.TIMEOUT if end.how is Ending.TIMED_OUT else Outcome.FAILED
    if end.how is Ending.RAISED and not end.retryable:
        return _move(job, end, JobState.DEAD, outcome, reason=ReasonCode.NON_RETRYABLE)
    failures = job.attempt - job.lost_attempts  # lost attempts have their own budget
    if failures >= job.max_attempts:
        reason = ReasonCode.UNKNOWN_TASK if end.how is Ending.UNKNOWN_TASK else ReasonCode.MAX_ATTEMPTS
        return _move(job, end, JobState.DEAD, outcome, reason=reason)
    delay = policy.delay(failures, rand)
    run_at = end.finished_at + dt.timedelta(seconds=delay)
    return _move(job, end, JobState.SCHEDULED if delay > 0 else JobState.READY, outcome, run_at=run_at)


def _lost(job: Attempted, end: AttemptEnd) -> Transition:
    lost = job.lost_attempts + 1
    crashes = job.crashes + (1 if end.crash else 0)
    if end.crash:
        error_class = DIED_ERROR_CLASS
        message = f"worker {end.worker} died with {exit_status(end.exit_code)} during attempt {job.attempt}"
        if not end.alone:
            message += " (other jobs ran beside it: it will run alone next, to find the cause)"
    elif end.exit_code is not None:  # a planned exit (recycle, replacement) that could not hand it back
        error_class = LOST_ERROR_CLASS
        message = (f"worker {end.worker} exited with {exit_status(end.exit_code)} without handing back "
                   f"attempt {job.attempt}")
    else:
        error_class = LOST_ERROR_CLASS
        message = f"worker {end.worker} stopped heartbeating or its lease expired during attempt {job.attempt}"
    error = ErrorInfo(error_class=error_class, message=message)
    reason: ReasonCode | None = None
    if end.crash and end.alone and crashes >= CRASHES_TO_BLAME:
        reason = ReasonCode.CRASHED
    elif lost > job.max_attempts:
        reason = ReasonCode.LOST
    return _move(job, end, JobState.DEAD if reason else JobState.READY, Outcome.LOST, reason=reason,
                 run_at=None if reason else end.finished_at, error=error, lost_attempts=lost, crashes=crashes)


def outcome_label(outcome: str, state: str) -> str:
    """What became of the job after an attempt, in one word (metrics' and logs' outcome): succeeded, dead,
    cancelled, lost (its worker died; it runs again), released (handed back at shutdown) or retried."""
    if state in ("succeeded", "dead", "cancelled"):
        return state
    if outcome in ("lost", "released"):
        return outcome
    return "retried"


def exit_status(code: int | None) -> str:
    """waitpid's exit code as words: 'signal 9 (SIGKILL)', 'exit code 1'."""
    if code is None:
        return "an unknown exit status"
    if code < 0:
        import signal

        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _move(
    job: Attempted,
    end: AttemptEnd,
    state: JobState,
    outcome: Outcome,
    *,
    reason: ReasonCode | None = None,
    result: str | None = None,
    run_at: dt.datetime | None = None,
    attempts: int | None = None,
    lost_attempts: int | None = None,
    crashes: int | None = None,
    error: ErrorInfo | None = None,
    message: str = "",
    keep_job_error: bool = False,
) -> Transition:
    error = error or end.error
    error_class = fit(error.error_class, ERROR_CLASS_MAX) if error else ""
    text = fit(error.message, MESSAGE_MAX) if error else fit(message, MESSAGE_MAX) if message else ""
    failed = outcome is not Outcome.SUCCEEDED and not keep_job_error
    done = state in FINISHED_STATES
    release_slot = job.slot is not None and (done or (state is JobState.SCHEDULED and not job.concurrency_hold))
    if release_slot and not done:
        state = JobState.BLOCKED  # waits for its run_at and a free slot
    return Transition(
        job_id=job.id,
        lease_token=job.lease_token,
        queue=job.queue,
        task=job.task,
        state=state,
        # A retry or a hand-back loses to a cancel request that arrived meanwhile; a final state stands.
        yields_to_cancel=not done,
        run_at=run_at,
        reason_code=reason.value if reason else "",
        result=result,
        attempts=job.attempt if attempts is None else attempts,
        lost_attempts=job.lost_attempts if lost_attempts is None else lost_attempts,
        crashes=job.crashes if crashes is None else crashes,
        job_error_class=error_class if failed else None,
        job_error=text if failed else None,
        attempt=job.attempt,
        outcome=outcome,
        worker=_worker_text(end.worker),
        started_at=job.started_at,
        finished_at=end.finished_at,
        error_class=error_class,
        message=text,
        traceback=fit(error.traceback, TRACEBACK_MAX, keep_end=True) if error else "",
        exit_code=end.exit_code,
        release_lock=done and job.lock_key is not None,
        release_slot=release_slot,
        slot=job.slot,
    )


@functools.lru_cache(maxsize=256)
def _worker_text(worker: str) -> str:
    """A worker id as its attempt row stores it (a worker reports thousands of attempts with one id)."""
    return fit(worker, WORKER_MAX)


class OnDependencyFailure(StrEnum):
    """What a job does when a job it depends on is dead or cancelled."""

    CANCEL = "cancel"  # it is cancelled too (reason 'dependency', its last error naming the job)
    RUN = "run"  # it runs anyway, once all its dependencies have finished


def release(settled: list[SettledDependency]) -> list[Release]:
    """What each waiting job does about its dependencies settled just now: a succeeded dependency, or a
    failed one under on_failure='run', no longer holds it back; a failed one under 'cancel' cancels it
    (the first such dependency by id is named). One Release per waiting job, in job id order (the order
    job_release_waiting_many locks them in)."""
    satisfied: dict[int, int] = {}
    failed: dict[int, SettledDependency] = {}
    for edge in sorted(settled, key=lambda e: (e.job_id, e.parent_id)):
        satisfied.setdefault(edge.job_id, 0)
        if edge.parent_state == JobState.SUCCEEDED or edge.on_failure == OnDependencyFailure.RUN:
            satisfied[edge.job_id] += 1
        elif edge.job_id not in failed:
            failed[edge.job_id] = edge
    return [
        Release(job_id=job_id, satisfied=count,
                cancel_reason=dependency_failed(failed[job_id]) if job_id in failed else None)
        for job_id, count in satisfied.items()
    ]


def dependency_failed(edge: SettledDependency) -> str:
    """The reason a job is cancelled for its dependency: "job 12 (app.jobs.fetch), which it depends on, is dead"."""
    return fit(f"job {edge.parent_id} ({edge.parent_task}), which it depends on, is {edge.parent_state}", MESSAGE_MAX)


def stripped(transition: Transition, problem: str) -> Transition:
    """The same decision with only short plain text, for when the database refused the full one: the
    job still moves as decided (a finished job is never turned into a re-run), its details say why."""
    note = fit(f"pgqueue could not store this attempt's details: {problem}", MESSAGE_MAX)
    failed = transition.outcome is not Outcome.SUCCEEDED
    return transition._replace(
        result=None,
        job_error_class="pgqueue.UnstorableOutcome" if failed else None,
        job_error=note if failed else None,
        error_class="pgqueue.UnstorableOutcome",
        message=note,
        traceback="",
        worker=transition.worker.encode("ascii", "replace").decode("ascii"),
    )


def runnable_state(run_at: dt.datetime, now: dt.datetime, concurrency_key: str | None, slot: int | None) -> JobState:
    """Where a job that may run goes: scheduled while its run_at is ahead, blocked while it needs a semaphore
    slot it does not hold, else ready (SQL: pgqueue_runnable_state)."""
    if run_at > now:
        return JobState.SCHEDULED
    if concurrency_key is not None and slot is None:
        return JobState.BLOCKED
    return JobState.READY


def bucket_tokens(tokens: float, elapsed: float, limit: float, window: float) -> float:
    """What a token bucket holds `elapsed` seconds after it held `tokens`: refilled at `limit` per `window`
    seconds, never above `limit` (SQL: pgqueue_bucket_tokens)."""
    return min(float(limit), tokens + elapsed * limit / window)


def process_silent(last_heartbeat: dt.datetime | None, vouched_at: dt.datetime | None, now: dt.datetime,
                   dead_after: float) -> bool:
    """A process counts as dead once neither its own heartbeat nor its supervisor's vouching came within
    dead_after seconds (SQL: pgqueue_process_silent)."""
    seen = max((t for t in (last_heartbeat, vouched_at) if t is not None), default=None)
    return seen is not None and seen < now - dt.timedelta(seconds=dead_after)


def lease_rescuable(holder_state: str | None, lease_expires_at: dt.datetime | None,
                    holder_heartbeat: dt.datetime | None, now: dt.datetime) -> bool:
    """A running job is taken back when its process is dead or gone, or when its lease ran out and its worker
    no longer holds it (its last heartbeat came after) or is unknown (holder_state None) (SQL:
    pgqueue_lease_rescuable)."""
    if holder_state is not None and holder_state not in ("running", "stopping"):
        return True
    if lease_expires_at is None or lease_expires_at >= now:
        return False
    return holder_state is None or (holder_heartbeat is not None and lease_expires_at < holder_heartbeat)
