"""Prometheus metrics: counters and histograms fed by the engine's events (pgqueue.events), gauges read from
the database at scrape time (pgqueue.monitor), and the exposition both the /metrics view and the
supervisor's --metrics-port serve. See docs/operations.md for every name.

Why two sources: a count of what happened (jobs finished, attempt durations) is only known in the process
it happened in, so those are prometheus-client counters, kept per process in the client's multi-process
files when a supervisor forks workers; a gauge of how things are (jobs ready per queue, lag, workers alive)
is the same for every process and already in the database, so it is read there, once per scrape, from
partial indexes and planner estimates (measured in benchmarks/run.py, workload "metrics")."""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from pgqueue import events
from pgqueue.conf import Settings, get_settings
from pgqueue.lifecycle import exit_status, outcome_label
from pgqueue.ops import monitor
from pgqueue.settle import Runner

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Tokens that are placeholders, not secrets: refused (with empty and short ones) when DEBUG is off.
PLACEHOLDER_TOKENS = frozenset({"changeme", "change-me", "change_me", "secret", "token", "metrics", "default",
                                "pgqueue", "password", "admin", "test", "example", "xxx"})
TOKEN_MIN_LENGTH = 16


@dataclass(frozen=True)
class Metrics:
    """The counters and histograms of this process (one set per install)."""

    enqueued: Counter
    started: Counter
    finished: Counter
    duration: Histogram
    pickup: Histogram
    refused: Counter
    rescued: Counter
    exits: Counter
    completions_refused: Counter
    stuck: Counter
    relayed: Counter
    delivered: Counter
    db_errors: Counter


_installed: Metrics | None = None


def _create(registry: CollectorRegistry | None) -> Metrics:
    return Metrics(
        enqueued=Counter("pgqueue_jobs_enqueued", "Jobs enqueued.", ["queue", "task"], registry=registry),
        started=Counter("pgqueue_jobs_started", "Attempts started (jobs leased by a worker).", ["queue", "task"],
                        registry=registry),
        finished=Counter("pgqueue_jobs", "Attempts ended, by what became of the job: succeeded, retried, dead, "
                         "cancelled, lost (its worker died; it runs again) or released (handed back at shutdown).",
                         ["queue", "task", "outcome"], registry=registry),
        duration=Histogram("pgqueue_attempt_duration_seconds", "How long attempts ran, by outcome.",
                           ["queue", "task", "outcome"], buckets=DURATION_BUCKETS, registry=registry),
        pickup=Histogram("pgqueue_pickup_latency_seconds", "From a job's run_at to the start of its attempt.",
                         ["queue"], buckets=LATENCY_BUCKETS, registry=registry),
        refused=Counter("pgqueue_enqueue_refused", "Enqueues refused by a guardrail (nothing was written).",
                        ["queue", "reason"], registry=registry),
        rescued=Counter("pgqueue_lease_rescues", "Running jobs taken back from a worker: its process exited "
                        "(process_exit) or its lease expired or it went silent (lease_expired).", ["cause"],
                        registry=registry),
        exits=Counter("pgqueue_process_exits", "Supervised processes that exited (each is restarted unless the "
                      "supervisor stops), by kind and exit status: 0 is a planned exit (recycling).",
                      ["kind", "status"], registry=registry),
        completions_refused=Counter("pgqueue_completions_refused", "Outcomes not written because the lease was "
                                    "gone (the job was rescued meanwhile).", registry=registry),
        stuck=Counter("pgqueue_jobs_stuck", "Attempts given up on past their timeout (their worker is replaced).",
                      ["task"], registry=registry),
        relayed=Counter("pgqueue_outbox_relayed_events", "Outbox events relayed to their subscribers.",
                        registry=registry),
        delivered=Counter("pgqueue_outbox_delivered_jobs", "Subscriber jobs the outbox relay enqueued.",
                          registry=registry),
        db_errors=Counter("pgqueue_database_errors", "Database errors a pgqueue process met and retried after "
                          "(each closes its connection): connect (no connection could be made), lost (the "
                          "connection broke) or pooler (a transaction pooler mixed sessions).", ["role", "kind"],
                          registry=registry),
    )


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Create this process's metrics (once; in prometheus-client's default registry unless one is given)
    and subscribe them to the engine's events. Called when the app is ready."""
    global _installed
    if _installed is None:
        from prometheus_client import REGISTRY

        _installed = _create(REGISTRY if registry is None else registry)
        for event, handler in HANDLERS.items():
            events.subscribe(event, handler)
    return _installed


def install_multiprocess(path: str) -> Metrics:
    """Count in prometheus-client's multi-process files under `path` from now on, in this process and every
    process it forks (the supervisor calls this before forking its children)."""
    global _installed
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _installed = _create(None)  # multi-process values are read from the files, not from a registry
    for event, handler in HANDLERS.items():
        events.subscribe(event, handler)
    return _installed


def uninstall() -> None:
    """Stop counting in this process (pgqueue_worker without --metrics-port: nobody could read them)."""
    global _installed
    for event, handler in HANDLERS.items():
        events.unsubscribe(event, handler)
    _installed = None


# -- event handlers --------------------------------------------------------------------------------------

def _enqueued(tasks: dict[tuple[str, str], int] | None = None, **_: Any) -> None:
    if _installed is not None and tasks:
        for (queue, task), n in tasks.items():
            _installed.enqueued.labels(queue, task).inc(n)


def _enqueue_refused(queue: str, reason: str, **_: Any) -> None:
    if _installed is not None:
        _installed.refused.labels(queue, reason).inc()


def _leased(jobs: list[Any] | None = None, **_: Any) -> None:
    if _installed is None or not jobs:
        return
    for job in jobs:
        _installed.started.labels(job.queue, job.task).inc()
        if job.run_at is not None:
            _installed.pickup.labels(job.queue).observe(max(0.0, (job.started_at - job.run_at).total_seconds()))


def _finished(queue: str, task: str, outcome: str, state: str, applied: bool, duration: float, **_: Any) -> None:
    if _installed is None:
        return
    if not applied:
        _installed.completions_refused.inc()
        return
    label = outcome_label(outcome, state)
    _installed.finished.labels(queue, task, label).inc()
    _installed.duration.labels(queue, task, label).observe(max(0.0, duration))


def _rescued(count: int, status: int | None = None, **_: Any) -> None:
    if _installed is not None:
        _installed.rescued.labels("lease_expired" if status is None else "process_exit").inc(count)


def _child_exited(kind: str, status: int, **_: Any) -> None:
    if _installed is not None:
        _installed.exits.labels(kind, status_label(status)).inc()


def _stuck(task: str, **_: Any) -> None:
    if _installed is not None:
        _installed.stuck.labels(task).inc()


def _relayed(events: int, jobs: int, **_: Any) -> None:
    if _installed is not None:
        _installed.relayed.inc(events)
        _installed.delivered.inc(jobs)


def status_label(status: int) -> str:
    """A process's exit status as a label value: "0", "1", "SIGKILL"."""
    if status < 0:
        word = exit_status(status)  # "signal 9 (SIGKILL)"
        return word[word.find("(") + 1:-1] if "(" in word else f"signal {-status}"
    return str(status)


def _db_error(role: str, kind: str, **_: Any) -> None:
    if _installed is not None:
        _installed.db_errors.labels(role, kind).inc()


HANDLERS: dict[str, events.Handler] = {
    "job_enqueued": _enqueued,
    "job_enqueue_refused": _enqueue_refused,
    "job_leased": _leased,
    "job_finished": _finished,
    "job_rescued": _rescued,
    "child_exited": _child_exited,
    "job_stuck": _stuck,
    "outbox_relayed": _relayed,
    "db_reconnect": _db_error,
}


# -- gauges from the database ----------------------------------------------------------------------------

class DatabaseCollector:
    """Gauges read at scrape time from pgqueue.monitor.snapshot: a few index-bounded statements."""

    def __init__(self, runner: Runner | None = None, settings: Settings | None = None) -> None:
        self.runner = runner
        self.settings = settings

    def describe(self) -> list[Metric]:
        return []  # no registration-time scrape of the database

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        snap = monitor.snapshot(self.runner, self.settings)
        jobs = GaugeMetricFamily("pgqueue_queue_jobs", "Jobs per queue and state now (dead: within retention).",
                                 labels=["queue", "state"])
        lag = GaugeMetricFamily("pgqueue_queue_lag_seconds", "Age of the oldest ready job per queue (0: none).",
                                labels=["queue"])
        paused = GaugeMetricFamily("pgqueue_queue_paused", "1 while the queue is paused.", labels=["queue"])
        breaker = GaugeMetricFamily("pgqueue_queue_breaker_open", "1 while the queue's circuit breaker is "
                                    "tripped (queues with a breaker only).", labels=["queue"])
        workers = GaugeMetricFamily("pgqueue_queue_workers", "Live worker processes serving the queue.",
                                    labels=["queue"])
        for q in snap.queues:
            for state, count in q.counts.items():
                jobs.add_metric([q.name, state], count)
            lag.add_metric([q.name], q.lag_seconds)
            paused.add_metric([q.name], 1.0 if q.paused else 0.0)
            if q.breaker != "none":
                breaker.add_metric([q.name], 1.0 if q.breaker == "open" else 0.0)
            workers.add_metric([q.name], q.workers)
        yield from (jobs, lag, paused, breaker, workers)
        processes = GaugeMetricFamily("pgqueue_processes", "Live pgqueue processes by kind.", labels=["kind"])
        for kind in ("supervisor", "worker", "maintenance", "scheduler", "metrics"):
            processes.add_metric([kind], len(snap.live(kind)))
        yield processes
        t = snap.totals
        yield _gauge("pgqueue_expired_leases", "Running jobs whose lease expired (maintenance rescues them).",
                     t.expired_leases)
        yield _gauge("pgqueue_outbox_pending", "Outbox events not relayed yet.", t.outbox_pending)
        yield _gauge("pgqueue_outbox_lag_seconds", "Age of the oldest outbox event not relayed yet.",
                     snap.outbox_lag_seconds)
        locks = GaugeMetricFamily("pgqueue_locks", "Uniqueness keys held and idempotency keys kept.",
                                  labels=["kind"])
        locks.add_metric(["unique"], t.unique_keys)
        locks.add_metric(["idempotency"], t.idempotency_keys)
        yield locks
        slots = GaugeMetricFamily("pgqueue_semaphore_slots", "Semaphore slots (concurrency and ordering keys, "
                                  "queue limits), held or free.", labels=["state"])
        slots.add_metric(["held"], t.slots_held)
        slots.add_metric(["free"], t.slots - t.slots_held)
        yield slots
        rows = GaugeMetricFamily("pgqueue_table_rows_estimated", "The planner's row estimate of a history table.",
                                 labels=["table"])
        rows.add_metric(["pgqueue_job"], t.job_rows or 0)  # 0 until the table is first analysed
        rows.add_metric(["pgqueue_attempt"], t.attempt_rows or 0)
        yield rows
        yield CounterMetricFamily(
            "pgqueue_job_ids_issued", "Job ids the database has issued: every job inserted by any process (web, "
            "commands, workers, pgqueue itself), and inserts later rolled back; rate() is the true enqueue rate.",
            value=t.job_ids_issued)
        yield _gauge("pgqueue_collector_duration_seconds", "How long reading these gauges took.",
                     time.perf_counter() - started)


def process_memory(pid: int) -> tuple[int, int] | None:
    """A process's (PSS, USS) in bytes from /proc/PID/smaps_rollup (Linux): its share of the pages it shares,
    and the pages only it holds. None where that cannot be read (gone, another OS)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    fields[name] = int(parts[0]) * 1024
    except (OSError, ValueError):
        return None
    return fields.get("Pss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def process_tree(root: int) -> list[int]:
    """A process and its children (one level: a supervisor's forked processes), from /proc (Linux)."""
    try:
        with open(f"/proc/{root}/task/{root}/children") as children:
            return [root, *map(int, children.read().split())]
    except (OSError, ValueError):
        return [root]


class MemoryCollector:
    """The memory of the supervisor whose metrics process serves the scrape, and of each of its processes:
    PSS (what each costs the host, shared pages split between their users) and USS (what only it holds)."""

    def __init__(self, supervisor: int) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        pss = GaugeMetricFamily("pgqueue_process_pss_bytes", "Proportional set size of each process of this "
                                "supervisor (the supervisor's own pid included).", labels=["pid"])
        uss = GaugeMetricFamily("pgqueue_process_uss_bytes", "Memory only this process holds (private pages), "
                                "for each process of this supervisor.", labels=["pid"])
        total = 0
        for pid in process_tree(self.supervisor):
            memory = process_memory(pid)
            if memory is not None:
                pss.add_metric([str(pid)], memory[0])
                uss.add_metric([str(pid)], memory[1])
                total += memory[0]
        yield pss
        yield uss
        yield _gauge("pgqueue_supervisor_pss_bytes", "Proportional set size of this supervisor and all its "
                     "processes: what the tree costs the host.", total)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def exposition(runner: Runner | None = None, settings: Settings | None = None, *,
               supervisor: int | None = None) -> bytes:
    """The text a scrape gets: the database gauges, the memory of `supervisor`'s processes (the metrics
    process of a supervisor passes its pid), then the counters: every process's under
    PROMETHEUS_MULTIPROC_DIR when it is set, else this process's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(runner, settings))
    if supervisor is not None:
        registry.register(MemoryCollector(supervisor))
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(registry) + generate_latest(REGISTRY)


# -- access ----------------------------------------------------------------------------------------------

def token_problem(token: str) -> str | None:
    """Why METRICS_TOKEN cannot protect metrics served to the network, or None if it can."""
    if not token:
        return "it is empty"
    if token.strip().lower() in PLACEHOLDER_TOKENS:
        return f"{token!r} is a placeholder, not a secret"
    if len(token) < TOKEN_MIN_LENGTH:
        return f"it is {len(token)} characters long; use at least {TOKEN_MIN_LENGTH} random characters"
    return None


def bearer_ok(authorization: str | None, settings: Settings | None = None) -> bool:
    """Whether an Authorization header carries METRICS_TOKEN (compared in constant time); never with an
    empty token."""
    token = (settings or get_settings()).METRICS_TOKEN
    if not token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
