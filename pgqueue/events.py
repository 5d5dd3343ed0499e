"""Engine events: emitted once by the core; metrics and logging subscribe (the core imports neither)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgqueue.types import Transition

logger = logging.getLogger("pgqueue.events")

Handler = Callable[..., None]
_handlers: dict[str, list[Handler]] = defaultdict(list)

# The events pgqueue emits, with their keyword data.
EVENTS = {
    "job_enqueued": "count, queues, tasks ({(queue, task): jobs enqueued})",
    "job_enqueue_refused": "queue, task, reason, message (an enqueue refused by a guardrail; nothing was written)",
    "job_leased": "worker, count, jobs (the LeasedJob values: queue, task, run_at, started_at...)",
    "job_finished": "worker, job_id, queue, task, attempt, outcome, state, applied, duration, error_class "
                    "(one per attempt that ended: in a worker, or rescued from a dead or silent one)",
    "job_completion_refused": "worker, job_id, outcome (the lease was gone when its outcome was written)",
    "job_rescued": "count, worker, status (the exit code of the process that held them; None: lease expired)",
    "job_staged": "count",
    "job_dependencies_settled": "released, cancelled, waiting (jobs that may start, that were cancelled for a failed dependency, that still wait)",
    "outbox_relayed": "events, jobs (events relayed by the maintenance leader, and the subscriber jobs enqueued)",
    "batch_settled": "batch_id, failed, finished, succeeded (which of its callbacks' moments came now)",
    "job_unblocked": "count (blocked jobs given a semaphore slot by the maintenance sweep)",
    "flow_reaped": "locks, slots (uniqueness keys and semaphore slots no job held any more)",
    "job_isolated": "worker, job_id, crashes (a crash suspect runs alone in this worker)",
    "job_stuck": "worker, job_id, task, timeout (past its timeout: the worker will be replaced)",
    "job_cancel_requested": "worker, job_id",
    "job_lease_lost": "worker, job_id (rescued elsewhere while this worker looked dead)",
    "job_released": "worker, count (handed back unfinished at shutdown)",
    "job_abandoned": "worker, count (async jobs on an event loop a job blocks, left held until the process has "
                     "exited; its supervisor takes them back)",
    "worker_started": "worker, kind, queues, concurrency (and processes, for a supervisor)",
    "worker_stopping": "worker, reason, running, timeout",
    "worker_exiting": "worker, running",
    "worker_stopped": "worker, kind, reason",
    "child_exited": "worker, kind, pid, status (exit code, or minus the signal number)",
    "child_stalled": "worker, pid (its loop did not run past a job's deadline: a job holds the interpreter; the "
                     "supervisor kills the process)",
    "maintenance_leader": "worker, token (this maintenance process now leads: pgqueue_leader, the token its lead got)",
    "maintenance_follower": "worker, token (it no longer leads: another process holds the lead)",
    "queue_paused": "queue, reason",
    "queue_resumed": "queue, reason (a circuit breaker's cool-down is over)",
    "db_reconnect": "worker, role, kind, error, failures (kind: connect, lost or pooler; failures in a row, 1 for the first)",
    "db_unavailable": "worker, statement",
}


def subscribe(event: str, handler: Handler) -> None:
    if event not in EVENTS:
        raise ValueError(f"Unknown pgqueue event {event!r}; known: {', '.join(sorted(EVENTS))}")
    if handler not in _handlers[event]:
        _handlers[event].append(handler)


def unsubscribe(event: str, handler: Handler) -> None:
    if handler in _handlers.get(event, []):
        _handlers[event].remove(handler)


def has_subscribers(event: str) -> bool:
    return bool(_handlers.get(event))


def attempts_ended(transitions: Iterable[Transition], applied: dict[int, str], worker: str) -> None:
    """job_finished for each transition written (or refused, `applied` lacking its job id)."""
    if not has_subscribers("job_finished"):
        return
    for t in transitions:
        emit("job_finished", worker=worker, job_id=t.job_id, queue=t.queue, task=t.task, attempt=t.attempt,
             outcome=t.outcome.value, state=applied.get(t.job_id, t.state.value), applied=t.job_id in applied,
             duration=(t.finished_at - t.started_at).total_seconds(), error_class=t.error_class,
             message=t.message, traceback=t.traceback, run_at=t.run_at)


def emit(event: str, **data: Any) -> None:
    """Call every subscriber; a failing subscriber is logged, never raised into the engine."""
    for handler in _handlers.get(event, ()):
        try:
            handler(**data)
        except Exception:
            logger.exception("pgqueue event handler %r failed on %s", handler, event)
