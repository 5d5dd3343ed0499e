"""Log lines for engine events: subscribed to pgqueue.events, so the engine emits once and logs nothing itself.

Each attempt's end is one INFO line on the logger "pgqueue.jobs" whose record also carries the facts as
attributes (job_id, queue, task, attempt, duration, outcome, worker, error_class), which JsonFormatter
writes as one JSON object per line (docs/operations.md)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from pgqueue import events
from pgqueue.lifecycle import exit_status, outcome_label
from pgqueue.text import counted

worker_log = logging.getLogger("pgqueue.worker")
supervisor_log = logging.getLogger("pgqueue.supervisor")
maintenance_log = logging.getLogger("pgqueue.maintenance")
db_log = logging.getLogger("pgqueue.db")
jobs_log = logging.getLogger("pgqueue.jobs")
_tracebacks_of_retries = False  # set by subscribe(): pgqueue_worker -v 2
# The record attributes of an attempt's line (and of JsonFormatter's output, beside time, level, logger, message).
JOB_FIELDS = ("job_id", "queue", "task", "attempt", "duration", "outcome", "worker", "error_class")


def _job_finished(worker: str, job_id: int, queue: str, task: str, attempt: int, outcome: str, state: str,
                  applied: bool, duration: float, error_class: str = "", message: str = "", traceback: str = "",
                  run_at: dt.datetime | None = None, **_: Any) -> None:
    """INFO for an attempt that succeeded or will run again (with when, and the error's message); WARNING
    with the traceback for a job that is dead now."""
    level = logging.WARNING if state == "dead" else logging.INFO
    if not applied or not jobs_log.isEnabledFor(level):
        return  # (a refused completion has its own warning: job_completion_refused)
    label = outcome_label(outcome, state)
    if label == "retried":
        then = f", next attempt at {run_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" if run_at is not None else ""
        told = f"failed in {duration:.3f} s{then}"
    elif label == "lost":
        told = f"lost after {duration:.3f} s (it runs again)"
    else:
        told = f"{label} in {duration:.3f} s"
    why = _error_text(error_class, message)
    text = f"job {job_id} {task} attempt {attempt} on queue {queue}: {told}{f' ({why})' if why else ''}"
    if traceback and (label == "dead" or label == "retried" and _tracebacks_of_retries):
        text += "\n" + traceback.rstrip()
    jobs_log.log(
        level, "%s", text,
        extra={"job_id": job_id, "queue": queue, "task": task, "attempt": attempt, "duration": round(duration, 6),
               "outcome": label, "worker": worker, "error_class": error_class},
    )


def _error_text(error_class: str, message: str) -> str:
    """The error as one short line: its message (which starts with the class's short name), else the class."""
    if not message:
        return error_class
    first = message.strip().splitlines()[0] if message.strip() else ""
    if len(first) > 300:
        first = first[:299] + "…"
    short = error_class.rpartition(".")[2]
    return first if not error_class or first.startswith(short) and error_class == short else \
        f"{error_class}: {first.removeprefix(short + ': ')}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the attempt fields when the record has them,
    and the exception text if any. Use it in LOGGING: {"()": "pgqueue.logs.JsonFormatter"}."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "process": record.process,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _worker_started(worker: str, kind: str, queues: tuple[str, ...] = (), concurrency: int = 0,
                    processes: int = 0, detail: str = "", **_: Any) -> None:
    if kind == "supervisor":
        supervisor_log.info("supervisor %s: %d worker(s) x %d threads on queues %s", worker, processes,
                            concurrency, ",".join(queues))
    elif kind == "worker":
        worker_log.info("worker %s started: queues=%s concurrency=%d", worker, ",".join(queues), concurrency)
    else:
        maintenance_log.info("%s %s started%s", kind, worker, f", {detail}" if detail else "")


def _worker_stopping(worker: str, reason: str, running: int, timeout: float, **_: Any) -> None:
    worker_log.info("worker %s stopping (%s): draining %s for up to %s s", worker, reason,
                    counted(running, "running job"), timeout)


def _worker_exiting(worker: str, running: int, **_: Any) -> None:
    worker_log.warning("worker %s exiting now; %s handed back", worker,
                       "1 running job is" if running == 1 else f"{running} running jobs are")


def _worker_stopped(worker: str, kind: str, reason: str, **_: Any) -> None:
    (supervisor_log if kind == "supervisor" else worker_log).info("%s %s stopped (%s)", kind, worker, reason)


def _child_exited(worker: str, kind: str, pid: int, status: int, **_: Any) -> None:
    if status == 0:
        supervisor_log.info("%s %s (pid %d) exited", kind, worker, pid)
    elif status == 3 and kind == "worker":  # pgqueue.worker.worker.EXIT_STUCK: asked to be replaced
        supervisor_log.warning("%s %s (pid %d) exited to be replaced: a job in it was stuck past its timeout",
                               kind, worker, pid)
    elif status == 4:  # pgqueue.worker.supervisor.EXIT_DATABASE: its own statement refused; restarted
        supervisor_log.error("%s %s (pid %d) stopped on a database error (exit code 4); starting another",
                             kind, worker, pid)
    else:
        supervisor_log.error("%s %s (pid %d) died with %s", kind, worker, pid, exit_status(status))


def _job_rescued(count: int, worker: str = "", status: int | None = None, **_: Any) -> None:
    if status is None:
        maintenance_log.warning("rescued %s from dead workers or expired leases", counted(count, "job"))
    else:
        supervisor_log.warning("rescued %s of %s, which exited with %s", counted(count, "job"), worker,
                               exit_status(status))


def _job_isolated(worker: str, job_id: int, crashes: int, **_: Any) -> None:
    worker_log.warning("job %s runs alone in worker %s: its process crashed %d time(s) while it ran", job_id,
                       worker, crashes)


def _job_stuck(worker: str, job_id: int, task: str, timeout: float, **_: Any) -> None:
    worker_log.error("job %s (%s) ran past its %s s timeout; it is given up on and worker %s will be replaced",
                     job_id, task, timeout, worker)


def _job_cancel_requested(worker: str, job_id: int, **_: Any) -> None:
    worker_log.info("job %s: cancel requested", job_id)


def _job_lease_lost(worker: str, job_id: int, **_: Any) -> None:
    worker_log.warning("job %s: lease lost (rescued while worker %s was unreachable); asking it to stop, its "
                       "outcome will not be recorded", job_id, worker)


def _job_released(worker: str, count: int, **_: Any) -> None:
    worker_log.warning("worker %s handed back %s", worker, counted(count, "unfinished job"))


def _job_abandoned(worker: str, count: int, **_: Any) -> None:
    worker_log.warning("worker %s exits with %s on its blocked event loop; its supervisor takes them "
                       "back once it has exited", worker, counted(count, "async job"))


def _job_completion_refused(worker: str, job_id: int, outcome: str, **_: Any) -> None:
    worker_log.warning("job %s: lease lost before its %s was recorded; not applied", job_id, outcome)


def _maintenance_leader(worker: str, token: int, **_: Any) -> None:
    maintenance_log.info("maintenance %s is the leader (token %d)", worker, token)


def _maintenance_follower(worker: str, token: int, **_: Any) -> None:
    maintenance_log.warning("maintenance %s no longer leads (its lead, token %d, ran out and another process "
                            "took it)", worker, token)


def _queue_paused(queue: str, reason: str, **_: Any) -> None:
    maintenance_log.info("queue %s is %s and now paused", queue, reason)


def _db_reconnect(worker: str, kind: str, error: str, failures: int = 1, **_: Any) -> None:
    """The first failure of a streak, with its cause (the metric counts every one)."""
    if failures != 1:
        return
    if kind == "connect":
        db_log.error("%s could not connect to the database (%s); retrying with backoff", worker, error)
    elif kind == "pooler":
        db_log.error("%s: %s", worker, error)
    else:
        db_log.warning("%s lost its database connection (%s); will reconnect", worker, error)


def _db_unavailable(worker: str, statement: str, **_: Any) -> None:
    db_log.error("%s: database unavailable for %s", worker, statement)


HANDLERS: dict[str, Callable[..., None]] = {
    "job_finished": _job_finished,
    "worker_started": _worker_started,
    "worker_stopping": _worker_stopping,
    "worker_exiting": _worker_exiting,
    "worker_stopped": _worker_stopped,
    "child_exited": _child_exited,
    "job_rescued": _job_rescued,
    "job_isolated": _job_isolated,
    "job_stuck": _job_stuck,
    "job_cancel_requested": _job_cancel_requested,
    "job_lease_lost": _job_lease_lost,
    "job_released": _job_released,
    "job_abandoned": _job_abandoned,
    "job_completion_refused": _job_completion_refused,
    "maintenance_leader": _maintenance_leader,
    "maintenance_follower": _maintenance_follower,
    "queue_paused": _queue_paused,
    "db_reconnect": _db_reconnect,
    "db_unavailable": _db_unavailable,
}


def subscribe(tracebacks_of_retries: bool = False) -> None:
    """Log every engine event above (idempotent); pgqueue_worker calls it at start. A dead job's line carries
    its traceback; with `tracebacks_of_retries` (pgqueue_worker -v 2) a failed attempt's that runs again too."""
    global _tracebacks_of_retries
    _tracebacks_of_retries = tracebacks_of_retries
    for event, handler in HANDLERS.items():
        events.subscribe(event, handler)
