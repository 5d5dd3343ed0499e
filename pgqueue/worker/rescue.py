"""Taking back running jobs from a worker that died or went silent: each gets its LOST transition."""

from __future__ import annotations

from pgqueue import db, events, settle, sql
from pgqueue.conf import Settings
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, decide, exit_status
from pgqueue.sql.rows import Moved
from pgqueue.types import HeldJob, Transition
from pgqueue.worker.executor import now, retry_policy
from pgqueue.worker.wakeups import SUSPECTS


def held_by_worker(database: db.Database, settings: Settings, worker: str, exit_code: int, *,
                   crash: bool = True, stalled: bool = False) -> list[HeldJob]:
    """The jobs a worker process still held when it exited with `exit_code` (from waitpid), with the exit
    status in their attempt rows. After a `crash` (an exit nobody asked for) each counts one crash, and a
    job that was alone in the process is the likely cause. A process killed because its loop `stalled`
    past a deadline: the jobs past their timeout timed out, the others are lost. Returns the jobs taken back."""
    with database.transaction():
        held = database.run(sql.job_get_held_by_worker, worker=worker)
        transitions, moved = _apply(database, settings, held, worker, exit_code=exit_code, crash=crash,
                                    stalled=stalled)
        if crash and held:  # tell the workers of these queues that suspects wait to run alone
            payloads = sorted({SUSPECTS + job.queue for job in held})
            database.run(sql.channel_notify, channel=settings.NOTIFY_CHANNEL, payloads=payloads)
    events.attempts_ended(transitions, {row.id: row.state for row in moved}, worker)
    settle.moved(database, moved, channel=settings.NOTIFY_CHANNEL)  # dependents and batches, once committed
    return held


def expired(database: db.Database, settings: Settings, limit: int, *, by: str) -> list[HeldJob]:
    """Running jobs whose lease expired or whose worker is dead or silent (at most `limit`), taken back
    by maintenance process `by`. Returns the jobs taken back."""
    with database.transaction():
        held = database.run(sql.job_get_expired, limit=limit)
        transitions, moved = _apply(database, settings, held, by, exit_code=None, crash=False)
    events.attempts_ended(transitions, {row.id: row.state for row in moved}, by)
    settle.moved(database, moved, channel=settings.NOTIFY_CHANNEL)  # dependents and batches, once committed
    return held


def _apply(database: db.Database, settings: Settings, held: list[HeldJob], worker: str, *, exit_code: int | None,
           crash: bool, stalled: bool = False) -> tuple[list[Transition], list[Moved]]:
    if not held:
        return [], []
    ended = now()
    policy = retry_policy(None, settings)
    transitions = []
    for job in held:
        end = AttemptEnd(how=Ending.LOST, worker=job.leased_by, finished_at=ended, exit_code=exit_code,
                         crash=crash, alone=len(held) == 1)
        if stalled and job.timeout and (ended - job.started_at).total_seconds() >= job.timeout:
            error = ErrorInfo(error_class="TimeoutError", message=(
                f"TimeoutError: timed out after {job.timeout} s; the job held its process's interpreter, so "
                f"its supervisor ended the process ({exit_status(exit_code)})"))
            end = end._replace(how=Ending.TIMED_OUT, error=error)
        transitions.append(decide(job, end, policy))
    return transitions, db.apply_transitions(database, transitions, worker=worker, channel=settings.NOTIFY_CHANNEL)
