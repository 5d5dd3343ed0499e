#!/usr/bin/env python
"""pgqueue benchmark: W1 throughput, W2 enqueue rate, W3 pickup latency (see DESIGN.md), plus a raw-SQL
reference. Median of --runs runs, written to benchmarks/results/latest.json.

    .venv/bin/python benchmarks/run.py [--runs 3] [--jobs 20000] [--out benchmarks/results/latest.json]

Uses DATABASE_URL if set, else the embedded PostgreSQL in .pgdata/ (database pgqueue_bench).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

import pgqueue  # noqa: E402
from benchmarks import jobs  # noqa: E402
from pgqueue import db, sql  # noqa: E402
from pgqueue.db import connection_kwargs  # noqa: E402
from pgqueue.models import Attempt, Job, Lock, OutboxEvent, WorkerProcess  # noqa: E402

PROCESSES, CONCURRENCY = 2, 10


def reset() -> None:
    with connection.cursor() as cur:
        cur.execute("TRUNCATE pgqueue_attempt, pgqueue_job, pgqueue_workerprocess, pgqueue_lock, pgqueue_semaphore, "
                    "pgqueue_semaphore_slot, pgqueue_batch, pgqueue_dependency, pgqueue_outbox, pgqueue_outbox_delivery "
                    "RESTART IDENTITY")
        cur.execute("VACUUM ANALYZE pgqueue_job")


METRICS_TOKEN = "benchmark-metrics-token-0123456789"
HISTORY = 1_000_000


def fill_history(n: int = HISTORY, *, age_hours: float = 1.0) -> int:
    """n finished jobs (queue 'history', succeeded, finished about `age_hours` ago, within the default
    retention) with one attempt row each, written in SQL; returns the highest history job id."""
    with connection.cursor() as cur:
        for start in range(0, n, 250_000):
            count = min(250_000, n - start)
            cur.execute(
                "WITH jobs AS (INSERT INTO pgqueue_job (queue, task, state, attempts, created_at, started_at, "
                "finished_at, run_at) SELECT 'history', 'benchmarks.jobs.noop', 'succeeded', 1, t, t, t, t "
                "FROM (SELECT now() - make_interval(secs => %s + random() * 600) AS t "
                "FROM generate_series(1, %s)) g RETURNING id, finished_at) "
                "INSERT INTO pgqueue_attempt (job_id, number, worker, started_at, finished_at, duration, outcome) "
                "SELECT id, 1, 'history', finished_at, finished_at, 0.001, 'succeeded' FROM jobs",
                [age_hours * 3600, count])
        cur.execute("VACUUM ANALYZE pgqueue_job")
        cur.execute("VACUUM ANALYZE pgqueue_attempt")
        cur.execute("SELECT max(id) FROM pgqueue_job")
        return cur.fetchone()[0] or 0


@contextlib.contextmanager
def pooled(*, listen: bool = True, pool_size: int = 4) -> Iterator[dict[str, str]]:
    """PgBouncer (Debian's 1.18) in transaction mode in front of the benchmark database, with `pool_size`
    server connections and its default reset (none after a transaction), and the environment that points a
    pgqueue_worker at it: POOLER 'transaction', and LISTEN_DATABASE the server itself (listen=False: none,
    the workers poll every POLL_SECONDS)."""
    from pgqueue import devdb

    folder = tempfile.mkdtemp(prefix="pgqueue-bench-pgbouncer-")
    direct = WorkerDirect.url()
    try:
        url = devdb.start_pooler(direct, folder, pool_size=pool_size, reset_always=False)
        env = {"DATABASE_URL": url, "PGQUEUE_POOLER": "transaction"}
        if listen:
            env |= {"PGQUEUE_LISTEN_DATABASE": "direct", "PGQUEUE_BENCH_DIRECT_URL": direct}
        yield env
    finally:
        devdb.stop_pooler(folder)
        shutil.rmtree(folder, ignore_errors=True)


class WorkerDirect:
    @staticmethod
    def url() -> str:
        """The benchmark database's URL, as the workers reach it without a pooler."""
        params = connection_kwargs()
        auth = urllib.parse.quote(params.get("user", ""), safe="")
        if params.get("password"):
            auth += ":" + urllib.parse.quote(params["password"], safe="")
        return f"postgres://{auth}@{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params['dbname']}"


class Worker:
    def __init__(self, *extra: str, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "pgqueue_worker", "--processes", str(PROCESSES), "--concurrency",
             str(CONCURRENCY), "--queues", "bench", "--log-level", "WARNING", *extra],
            cwd=ROOT, env=env, start_new_session=True,
        )

    def wait_ready(self) -> list[int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = list(WorkerProcess.objects.filter(kind="worker", state="running").values_list("pid", flat=True))
            if len(pids) == PROCESSES:
                return pids
            time.sleep(0.05)
        raise RuntimeError("workers did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def tree_memory(supervisor: int) -> dict[str, float]:
    """supervisor_pss_mib: the PSS of a supervisor and every child (what the tree really costs the host);
    worker_uss_mib: the largest private memory of one of its workers (the metrics port's own gauges)."""
    from pgqueue.ops.metrics import process_memory, process_tree

    workers = set(WorkerProcess.objects.filter(kind="worker", state="running").values_list("pid", flat=True))
    seen = {pid: process_memory(pid) or (0, 0) for pid in process_tree(supervisor)}
    return {"supervisor_pss_mib": sum(pss for pss, _ in seen.values()) / 2**20,
            "worker_uss_mib": max((uss for pid, (_, uss) in seen.items() if pid in workers), default=0) / 2**20}


def peak_rss_mib(pids: list[int]) -> float:
    peaks = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return max(peaks) if peaks else float("nan")


def _wal_and_commits() -> tuple[str, int]:
    """The WAL position and this database's committed transactions, read around a run (enqueue excluded)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()::text, xact_commit FROM pg_stat_database "
                    "WHERE datname = current_database()")
        lsn, commits = cur.fetchone()
        return lsn, commits


def _costs(prefix: str, before: tuple[str, int], n: int) -> dict[str, float]:
    """WAL bytes and commits per job since `before` (pg_stat_database lags a commit by up to its flush
    interval: the caller waits for it)."""
    after = _wal_and_commits()
    with connection.cursor() as cur:
        cur.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", [after[0], before[0]])
        wal = float(cur.fetchone()[0])
    return {f"{prefix}_wal_bytes_per_job": wal / n, f"{prefix}_commits_per_job": (after[1] - before[1]) / n}


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pids() -> list[int]:
    """The server processes of pgqueue's worker connections (their CPU is the database's share of W1)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgqueue %%'")
        return [row[0] for row in cur.fetchall()]


def w1_throughput(n: int, variant: str = "") -> dict[str, float]:
    """W1: n jobs enqueued in bulk (5,000 per call), then the worker runs them all. The variants run the
    same no-op under a semaphore (limit 5 on each of 10 keys), with a uniqueness key per job, with
    1,000,000 finished jobs of history in the tables ("history"), with the supervisor serving Prometheus
    metrics, every worker counting each job in the multi-process files ("metrics"), or with the workers
    behind PgBouncer in transaction mode ("pooled")."""
    reset()
    after = fill_history() if variant == "history" else 0
    enqueue_started = time.perf_counter()
    if variant in ("tasks", "single"):  # django.tasks has no bulk enqueue: one enqueue() each, 5,000 a transaction
        from benchmarks import tasks

        once = tasks.noop.enqueue if variant == "tasks" else jobs.noop.enqueue
        for start in range(0, n, 5000):
            with transaction.atomic():
                for _ in range(start, min(n, start + 5000)):
                    once()
    else:
        calls = {"": lambda i: jobs.noop.call(), "semaphore": lambda i: jobs.noop_limited.call(i % 10),
                 "unique": lambda i: jobs.noop_unique.call(i), "history": lambda i: jobs.noop.call(),
                 "metrics": lambda i: jobs.noop.call(), "pooled": lambda i: jobs.noop.call()}[variant]
        for start in range(0, n, 5000):
            pgqueue.enqueue_many([calls(i) for i in range(start, min(n, start + 5000))])
    enqueue_seconds = time.perf_counter() - enqueue_started
    extra = ("--metrics-port", "19464", "--metrics-address", "127.0.0.1") if variant == "metrics" else ()
    time.sleep(0.6)  # pg_stat_database counts the enqueue's commits within its flush interval (0.5 s)
    before = _wal_and_commits()
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(pooled()) if variant == "pooled" else {}
        return _w1_run(n, variant, after, enqueue_seconds, extra, before, env)


def _w1_run(n: int, variant: str, after: int, enqueue_seconds: float, extra: tuple[str, ...],
            before: tuple[str, int], env: dict[str, str]) -> dict[str, float]:
    worker = Worker(*extra, env={"PGQUEUE_METRICS_TOKEN": METRICS_TOKEN, **env})
    launched = time.monotonic()
    pids = worker.wait_ready()
    backends = _backend_pids()
    cpu_before = {pid: _cpu_seconds(pid) for pid in pids + backends}
    memory: dict[str, float] = {}
    while _unfinished():  # each probe reads a partial index: never the history (w1_history)
        if not memory and time.monotonic() - launched > 2.0:  # well into the run: every worker has run jobs
            memory = tree_memory(worker.proc.pid)
        time.sleep(0.05)
    wall = time.monotonic() - launched
    rss = peak_rss_mib(pids)
    memory = memory or tree_memory(worker.proc.pid)
    worker_cpu = sum(_cpu_seconds(pid) - cpu_before[pid] for pid in pids)
    db_cpu = sum(_cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in set(backends) | set(_backend_pids()))
    time.sleep(0.6)
    costs = _costs("w1", before, n) if not variant else {}
    scrape_ms = _scrape_ms(19464) if variant == "metrics" else None
    worker.stop()
    attempts = Attempt.objects.filter(job_id__gt=after)
    first = attempts.order_by("started_at").first().started_at
    last = attempts.order_by("-finished_at").first().finished_at
    assert attempts.count() == n, "every job must have exactly one attempt row"
    assert Job.objects.filter(queue="bench", state="succeeded").count() == n
    name = f"w1_{variant}" if variant else "w1"
    if variant == "unique":
        assert not Lock.objects.filter(released=False).exists(), "every key is released with its job"
        name = "w1_unique_enqueue"
    if variant == "history":
        name = "w1_with_history"
    result = {f"{name}_jobs_per_s": n / (last - first).total_seconds(),
              f"{name}_bulk_enqueue_per_s": n / enqueue_seconds}
    if not variant:
        result |= {"w1_wall_jobs_per_s": n / wall, "worker_rss_mib": rss, **costs, **memory,
                   "w1_worker_cpu_us_per_job": worker_cpu / n * 1e6, "w1_db_cpu_us_per_job": db_cpu / n * 1e6}
    if scrape_ms is not None:
        result["metrics_port_scrape_ms"] = scrape_ms
    return result


UNFINISHED = """
SELECT EXISTS (SELECT FROM pgqueue_job WHERE state = 'ready' AND rate_key IS NULL AND queue = 'bench')
    OR EXISTS (SELECT FROM pgqueue_job WHERE state = 'ready' AND rate_key IS NOT NULL AND queue = 'bench')
    OR EXISTS (SELECT FROM pgqueue_job WHERE state = 'running')
    OR EXISTS (SELECT FROM pgqueue_job WHERE state = 'blocked')
"""


def _unfinished() -> bool:
    """Whether any bench job is left: one statement, so one snapshot (three probes in a row could miss a job
    that a completion moved from running to the next one's ready between them, or one waiting for a slot
    while none is ready or running). Each EXISTS reads a partial index, never the history (w1_history)."""
    with connection.cursor() as cur:
        cur.execute(UNFINISHED)
        return bool(cur.fetchone()[0])


def _scrape_ms(port: int, times: int = 10) -> float:
    """Median time of a scrape of the supervisor's metrics port (multi-process counters + database gauges)."""
    import urllib.request

    spent = []
    for _ in range(times):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        spent.append((time.perf_counter() - started) * 1000)
        assert b"pgqueue_jobs_total" in body
    return statistics.median(spent)


def collector_cost(times: int = 20) -> dict[str, float]:
    """The database gauges' scrape cost (pgqueue.metrics.DatabaseCollector) on tables holding 1,000,000
    finished jobs with their attempts, plus 20,000 ready, 5,000 scheduled, 2,000 dead jobs in 4 queues:
    the median time of one collection, and the same on empty tables."""
    from pgqueue.ops import metrics

    def timed() -> float:
        spent = []
        for _ in range(times):
            started = time.perf_counter()
            metrics.exposition()
            spent.append((time.perf_counter() - started) * 1000)
        return statistics.median(spent)

    reset()
    timed()
    empty = timed()
    fill_history()
    with connection.cursor() as cur:
        cur.execute("INSERT INTO pgqueue_job (queue, task, state, run_at) SELECT 'q' || (i % 4), 't', "
                    "CASE WHEN i <= 20000 THEN 'ready' WHEN i <= 25000 THEN 'scheduled' ELSE 'dead' END, "
                    "CASE WHEN i <= 20000 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END "
                    "FROM generate_series(1, 27000) i")
        cur.execute("VACUUM ANALYZE pgqueue_job")
    full = timed()
    return {"metrics_collect_ms": full, "metrics_collect_empty_ms": empty}


def prune_latency(n_history: int = HISTORY, n: int = 200, gap: float = 0.02) -> dict[str, float]:
    """Pickup latency (W3's enqueues) with 1,000,000 finished jobs in the tables, idle, then while
    `pgqueue_prune` deletes them all with their attempts (batches of 1,000) as the workers run: the p99 of
    each and their ratio, and the prune's rate."""
    reset()
    fill_history(n_history, age_hours=2.0)
    worker = Worker()
    worker.wait_ready()
    time.sleep(1.0)
    idle = _pickups(_enqueue_spaced(n, gap))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    prune = subprocess.Popen([sys.executable, "-m", "django", "pgqueue_prune", "--older-than", "30m"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, text=True)
    busy: list[float] = []
    while prune.poll() is None and len(busy) < 5 * n:
        busy += _pickups(_enqueue_spaced(n, gap))
    out, _ = prune.communicate(timeout=600)
    seconds = time.monotonic() - started
    worker.stop()
    assert out.startswith(f"pruned {n_history} job(s) and {n_history} attempt(s)"), out
    idle_p99 = _quantiles("x", idle)["x_p99_ms"]
    busy_p99 = _quantiles("x", busy)["x_p99_ms"]
    return {"prune_idle_p99_ms": idle_p99, "prune_busy_p99_ms": busy_p99,
            "prune_busy_vs_idle_p99_ratio": busy_p99 / idle_p99, "prune_jobs_per_s": n_history / seconds}


def _pickups(committed: dict[int, float]) -> list[float]:
    """Wait for the stamp jobs to finish; each one's start minus its commit, in ms."""
    ids = list(committed)
    while Job.objects.filter(id__in=ids).exclude(state="succeeded").exists():
        time.sleep(0.05)
    return [(result - committed[job_id]) * 1000
            for job_id, result in Job.objects.filter(id__in=ids).values_list("id", "result")]


def batch_10k(n: int = 10_000) -> dict[str, float]:
    """A batch of n no-op jobs enqueued (one enqueue_many in pgqueue.batch()) to running, idle workers, timed
    from the enqueue to the end of its success callback; and the same n jobs without a batch, timed from
    the enqueue to the last job's end (the same-run reference)."""
    timings = {}
    for name in ("plain", "batch"):
        reset()
        worker = Worker()
        worker.wait_ready()
        started = time.monotonic()
        if name == "batch":
            with pgqueue.batch(on_success=jobs.noop.call()) as batch:
                pgqueue.enqueue_many([jobs.noop.call() for _ in range(n)])
            done = Job.objects.filter(callback_of_id=batch.id, state="succeeded")
        else:
            pgqueue.enqueue_many([jobs.noop.call() for _ in range(n)])
            done = Job.objects.filter(state="succeeded")
        target = 1 if name == "batch" else n
        while done.count() < target:
            time.sleep(0.01)
        timings[name] = time.monotonic() - started
        worker.stop()
    assert Job.objects.filter(state="succeeded").count() == n + 1, "every job and the callback succeeded, once"
    return {"batch_10k_s": timings["batch"], "plain_10k_s": timings["plain"],
            "batch_10k_vs_plain_ratio": timings["batch"] / timings["plain"]}


def outbox_relay(n: int = 20_000) -> dict[str, float]:
    """n events published in bulk (publish_many, 5,000 per call, committed) while the workers run; timed
    from the first publish to the moment the maintenance leader has relayed them all into their two
    subscribers' jobs (2 x n jobs)."""
    reset()
    worker = Worker()
    worker.wait_ready()
    started = time.monotonic()
    for start in range(0, n, 5000):
        pgqueue.publish_many([("bench.event", {"n": i}) for i in range(start, min(n, start + 5000))])
    while OutboxEvent.objects.filter(relayed_at__isnull=True).exists():
        time.sleep(0.01)
    seconds = time.monotonic() - started
    worker.stop()
    assert Job.objects.filter(queue="bench-outbox").count() == 2 * n, "one job per (event, subscriber)"
    return {"outbox_events_per_s": n / seconds}


def w2_enqueue(n: int = 2000, block: int = 100, *, tasks: bool = False) -> dict[str, float]:
    """A view's enqueue in autocommit (its own transaction), in an explicit atomic block, and the raw
    ceiling of this machine: psycopg inserting one bare row per committed transaction. The three take
    turns in blocks of `block`, so a drift of the machine's speed (fsync time swings 2x within minutes
    here) hits all three alike and their ratio holds. With `tasks`, a fourth turn enqueues through the
    django.tasks API (Task.enqueue() in autocommit): w2_tasks_enqueues_per_s."""
    reset()

    def autocommit() -> None:
        jobs.noop.enqueue()

    def atomic() -> None:
        with transaction.atomic():
            jobs.noop.enqueue()

    spent = {"w2_enqueues_per_s": 0.0, "w2_atomic_enqueues_per_s": 0.0, "raw_w2_inserts_per_s": 0.0}
    with psycopg.connect(**connection_kwargs(), autocommit=True) as conn:

        def raw() -> None:
            conn.execute("INSERT INTO pgqueue_job (queue, task) VALUES ('raw', 'raw')")

        turns: tuple[tuple[str, Any], ...] = (("w2_enqueues_per_s", autocommit), ("raw_w2_inserts_per_s", raw),
                                              ("w2_atomic_enqueues_per_s", atomic))
        if tasks:
            from benchmarks import tasks as bench_tasks

            turns += (("w2_tasks_enqueues_per_s", bench_tasks.noop.enqueue),)
            spent["w2_tasks_enqueues_per_s"] = 0.0
        for _ in range(n // block):
            for key, once in turns:
                started = time.perf_counter()
                for _ in range(block):
                    once()
                spent[key] += time.perf_counter() - started
    return {key: (n // block) * block / seconds for key, seconds in spent.items()}


def _enqueue_spaced(n: int, gap: float, *, tasks: bool = False) -> dict[int, float]:
    """Enqueue n stamp jobs (or django.tasks stamp tasks) one transaction each, `gap` s apart; their commit
    times by job id."""
    committed: dict[int, float] = {}
    if tasks:
        from benchmarks import tasks as bench_tasks
    for _ in range(n):
        with transaction.atomic():
            job_id = int(bench_tasks.stamp.enqueue().id) if tasks else jobs.stamp.enqueue().id
        committed[job_id] = time.time()
        time.sleep(gap)
    return committed


def _quantiles(prefix: str, latencies: list[float]) -> dict[str, float]:
    q = statistics.quantiles(sorted(latencies), n=100, method="inclusive")
    return {f"{prefix}_p50_ms": q[49], f"{prefix}_p95_ms": q[94], f"{prefix}_p99_ms": q[98]}


def w3_latency(n: int = 200, gap: float = 0.02, *, env: dict[str, str] | None = None,
               prefix: str = "w3", tasks: bool = False) -> dict[str, float]:
    reset()
    worker = Worker(env=env)
    worker.wait_ready()
    time.sleep(1.0)  # let the workers settle into their idle wait
    committed = _enqueue_spaced(n, gap, tasks=tasks)
    while Job.objects.filter(state="succeeded").count() < n:
        time.sleep(0.05)
    worker.stop()
    return _quantiles(prefix, [(result - committed[job_id]) * 1000
                               for job_id, result in Job.objects.values_list("id", "result")])


def tasks_beside_native(n: int) -> dict[str, float]:
    """W1, W2 and W3 through the django.tasks API (Django 6.0+), each beside the native API in the same run:
    w1_tasks_jobs_per_s after w1_jobs_per_s and w1_single_jobs_per_s (native jobs enqueued one enqueue() call
    each, as the tasks are), W2's turns with a fourth (Task.enqueue()), W3 then W3 with stamp tasks."""
    results = {**w1_throughput(n), **w1_throughput(n, "single"), **w1_throughput(n, "tasks"),
               **w2_enqueue(tasks=True), **w3_latency(), **w3_latency(prefix="w3_tasks", tasks=True)}
    # the same jobs enqueued the same way (one enqueue() each), native and through django.tasks
    results["w1_tasks_vs_w1_single_ratio"] = results["w1_tasks_jobs_per_s"] / results["w1_single_jobs_per_s"]
    results["w2_tasks_vs_w2_ratio"] = results["w2_tasks_enqueues_per_s"] / results["w2_enqueues_per_s"]
    for q in ("p50", "p99"):
        results[f"w3_tasks_{q}_over_w3_ms"] = results[f"w3_tasks_{q}_ms"] - results[f"w3_{q}_ms"]
    return results


def w3_pooled(*, listen: bool) -> dict[str, float]:
    """W3 with the workers behind PgBouncer: LISTEN on LISTEN_DATABASE (w3_pooled_*), or none (the workers
    poll every POLL_SECONDS, 1 s: w3_pooled_poll_*)."""
    with pooled(listen=listen) as env:
        return w3_latency(env=env, prefix="w3_pooled" if listen else "w3_pooled_poll")


def _raw_pickup(params: dict[str, Any], n: int, ready: Any, out: Any) -> None:
    """The least a pickup can do: wake on the NOTIFY, lease the job durably, note the time."""
    picked: dict[int, float] = {}
    with psycopg.connect(**params, autocommit=True) as listen, psycopg.connect(**params, autocommit=True) as conn:
        listen.execute('LISTEN "pgqueue"')
        ready.set()
        with conn.cursor() as cur:
            while len(picked) < n:
                for _note in listen.notifies(timeout=1.0, stop_after=1):
                    break
                while True:
                    rows = db.run(cur, sql.job_lease, queues=["bench"], limit=10, worker="raw", lease_seconds=30)
                    now = time.time()
                    picked.update((r.id, now) for r in rows)
                    if not rows:
                        break
    out.send(picked)


def raw_w3_latency(n: int = 200, gap: float = 0.02) -> dict[str, float]:
    """W3's reference in the same run: a psycopg loop that LISTENs and leases (one durable commit per
    pickup), on the same enqueues; pgqueue's pickup adds its worker loop and the hand-off to a job thread."""
    reset()
    ctx = multiprocessing.get_context("fork")
    ready, (receive, send) = ctx.Event(), ctx.Pipe(duplex=False)
    connection.close()
    proc = ctx.Process(target=_raw_pickup, args=(connection_kwargs(), n, ready, send))
    proc.start()
    ready.wait(30)
    time.sleep(1.0)
    committed = _enqueue_spaced(n, gap)
    picked = receive.recv()
    proc.join(30)
    return _quantiles("raw_w3", [(picked[job_id] - at) * 1000 for job_id, at in committed.items()])


def _raw_loop(params: dict[str, Any], worker: str, limit: int) -> None:
    """The worker's lease and completion statements with as little Python as possible around them."""
    with psycopg.connect(**params, autocommit=True) as conn, conn.cursor() as cur:
        db.run(cur, sql.session_generic_plans)  # as a worker's connection does
        while True:
            rows = db.run(cur, sql.job_lease, queues=["bench"], limit=limit, worker=worker, lease_seconds=30)
            if not rows:
                return
            now = dt.datetime.now(dt.UTC).isoformat()
            transitions = json.dumps([[r.id, str(r.lease_token), "succeeded", False, None, "", "null", r.attempt, 0, 0,
                                       None, None, r.attempt, "succeeded", worker, now, "", "", "", None, False,
                                       False, None] for r in rows])
            db.run(cur, sql.job_set_state_if_running_many, transitions=transitions, worker=worker, channel="pgqueue")


def raw_reference(n: int, limit: int = 100) -> dict[str, float]:
    """psycopg only: the same lease and finish statements, `limit` jobs at a time, 2 processes. With 100 (the
    bare loop, raw_w1_*) it shows what the statements cost; with 10 (raw10_w1_*, W1's free slots a lease),
    the most any worker leasing at most its 10 free slots could do with them on this machine."""
    reset()
    for start in range(0, n, 5000):
        jobs.noop.enqueue_many([() for _ in range(min(5000, n - start))])
    params = connection_kwargs()
    ctx = multiprocessing.get_context("fork")
    time.sleep(0.6)
    before = _wal_and_commits()
    connection.close()
    started = time.perf_counter()
    procs = [ctx.Process(target=_raw_loop, args=(params, f"raw{i}", limit)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    assert Job.objects.filter(state="succeeded").count() == n
    time.sleep(0.6)
    name = "raw_w1" if limit == 100 else f"raw{limit}_w1"
    return {f"{name}_jobs_per_s": n / elapsed, **_costs(name, before, n)}


PEER_VENV = ROOT / ".venv-peer"
PEER_REQUIREMENTS = ROOT / "benchmarks" / "peer" / "requirements.txt"


def _peer_python() -> Path:
    """The peer's own virtualenv (.venv-peer), made on first use from benchmarks/peer/requirements.txt."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / "requirements.txt"
    if not python.exists() or not stamp.exists() or stamp.read_text() != PEER_REQUIREMENTS.read_text():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                        str(PEER_REQUIREMENTS)], check=True)
        stamp.write_text(PEER_REQUIREMENTS.read_text())
    return python


def peer_reference(n: int) -> dict[str, float]:
    """W1 on PgQueuer 1.6 with its CLI defaults (two `pgq run` processes, --batch-size 10, asyncpg) on the
    same server, in a database of its own (<bench database>_peer): the fastest Python peer measured here."""
    python = _peer_python()
    settings_dict = connection.settings_dict
    name = f"{settings_dict['NAME']}_peer"
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    params = connection_kwargs()
    auth = urllib.parse.quote(params.get("user", ""), safe="")
    if params.get("password"):
        auth += ":" + urllib.parse.quote(params["password"], safe="")
    host = params.get("host", "localhost")
    if host.startswith("/"):  # a socket directory (the embedded server): asyncpg takes it as ?host=
        dsn = f"postgresql://{auth}@/{name}?host={urllib.parse.quote(host)}&port={params.get('port', 5432)}"
    else:
        dsn = f"postgresql://{auth}@{host}:{params.get('port', 5432)}/{name}"
    out = subprocess.run([str(python), str(ROOT / "benchmarks" / "peer" / "pgqueuer_w1.py"), dsn, "--jobs", str(n),
                          "--processes", str(PROCESSES)], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"the PgQueuer reference failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    with connection.cursor() as cur:
        cur.execute("SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')")
        version, fsync, sync = cur.fetchone()
    return {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "django": django.get_version(), "psycopg": psycopg.__version__, "postgresql": version,
        "fsync": fsync, "synchronous_commit": sync,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latest.json"))
    parser.add_argument("--only", default="", help="comma-separated subset of w1,w1_semaphore,w1_unique,raw,raw10,peer,w2,"
                        "w3,raw_w3,batch,outbox,w1_history,w1_metrics,collector,prune,w1_pooled,w3_pooled,w3_pooled_poll,tasks (Django 6 only); prints "
                        "the medians and writes "
                        "nothing")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    workloads = {"w1": lambda: w1_throughput(args.jobs),
                 "w1_semaphore": lambda: w1_throughput(args.jobs, "semaphore"),
                 "w1_unique": lambda: w1_throughput(args.jobs, "unique"),
                 "raw": lambda: raw_reference(args.jobs), "raw10": lambda: raw_reference(args.jobs, 10),
                 "peer": lambda: peer_reference(args.jobs),
                 "w2": w2_enqueue, "w3": w3_latency, "raw_w3": raw_w3_latency, "batch": batch_10k,
                 "outbox": outbox_relay, "w1_history": lambda: w1_throughput(args.jobs, "history"),
                 "w1_metrics": lambda: w1_throughput(args.jobs, "metrics"), "collector": collector_cost,
                 "w1_pooled": lambda: w1_throughput(args.jobs, "pooled"),
                 "w3_pooled": lambda: w3_pooled(listen=True), "w3_pooled_poll": lambda: w3_pooled(listen=False),
                 "prune": prune_latency, "tasks": lambda: tasks_beside_native(args.jobs)}
    everything = [w for w in workloads if w != "tasks" or django.VERSION >= (6, 0)]
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or everything
    unknown = set(chosen) - set(workloads)
    if unknown:
        parser.error(f"--only: unknown workload(s) {', '.join(sorted(unknown))}")
    runs = []
    for i in range(args.runs):
        run: dict[str, float] = {}
        for name in chosen:
            run.update(workloads[name]())
        # ratios to the reference measured in the same run: the machine's speed drifts 1.5x in an hour
        if "w1_jobs_per_s" in run and "raw_w1_jobs_per_s" in run:
            run["w1_vs_raw_ratio"] = run["w1_jobs_per_s"] / run["raw_w1_jobs_per_s"]
        if "w1_jobs_per_s" in run and "raw10_w1_jobs_per_s" in run:
            run["w1_vs_raw10_ratio"] = run["w1_jobs_per_s"] / run["raw10_w1_jobs_per_s"]
        if "raw10_w1_jobs_per_s" in run and "peer_w1_jobs_per_s" in run:
            run["raw10_vs_peer_ratio"] = run["raw10_w1_jobs_per_s"] / run["peer_w1_jobs_per_s"]
        if "w1_jobs_per_s" in run and "peer_w1_jobs_per_s" in run:
            run["w1_vs_peer_ratio"] = run["w1_jobs_per_s"] / run["peer_w1_jobs_per_s"]
        for variant in ("w1_semaphore", "w1_unique_enqueue", "w1_with_history", "w1_metrics", "w1_pooled", "w1_tasks", "w1_single"):
            if f"{variant}_jobs_per_s" in run and "w1_jobs_per_s" in run:
                run[f"{variant}_vs_w1_ratio"] = run[f"{variant}_jobs_per_s"] / run["w1_jobs_per_s"]
        if "w2_enqueues_per_s" in run:
            run["w2_vs_raw_ratio"] = run["w2_enqueues_per_s"] / run["raw_w2_inserts_per_s"]
        runs.append(run)
        print(f"run {i + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in run.items()), flush=True)
    keys = runs[0].keys()
    medians = {k: round(statistics.median(r[k] for r in runs), 3 if k.endswith("_ratio") else 2) for k in keys}
    if args.only:
        print(json.dumps(medians, indent=2))
        return 0
    report = {
        **medians,
        "runs": runs,
        "workloads": {
            "w1": f"{args.jobs} no-op jobs enqueued in bulk, then {PROCESSES} processes x {CONCURRENCY} threads; "
                  "w1_jobs_per_s = jobs / (first attempt start .. last attempt end); w1_wall_jobs_per_s includes "
                  "worker start-up; supervisor_pss_mib is the PSS of the supervisor and all its children, "
                  "worker_uss_mib the largest private memory of a worker (/proc/PID/smaps_rollup, 2 s into the run)",
            "w1_semaphore": "W1's jobs, each under a semaphore of limit 5 on one of 10 keys (at most 50 ready or "
                            "running at once); *_vs_w1_ratio is each run's ratio to its own plain W1",
            "w1_unique": "W1's jobs, each with its own uniqueness key held until it finishes "
                         "(w1_unique_enqueue_jobs_per_s); *_bulk_enqueue_per_s time the enqueue_many calls",
            "raw_w1": "psycopg only, 2 processes, job_lease + job_set_state_if_running_many 100 jobs at a time",
            "raw10": "the bare loop leasing 10 jobs at a time and completing each lease's 10 (W1's free slots a "
                     "lease): raw10_w1_jobs_per_s bounds what a worker that leases at most its free slots could "
                     "do with these statements; w1_vs_raw10_ratio and raw10_vs_peer_ratio are per run",
            "peer": "PgQueuer 1.6.0 (benchmarks/peer, its own virtualenv .venv-peer) with its CLI defaults: two "
                    "`pgq run` processes, --batch-size 10, an async no-op entrypoint, on W1's 20,000 jobs enqueued "
                    "in bulk; peer_w1_jobs_per_s from its log table (first pick .. last success); "
                    "w1_vs_peer_ratio is each run's W1 over its own peer run",
            "costs": "w1_wal_bytes_per_job and w1_commits_per_job from pg_current_wal_lsn() and "
                     "pg_stat_database.xact_commit around the worker run (enqueue excluded), raw_w1_* the same around "
                     "the bare loop; w1_worker_cpu_us_per_job is the worker processes' CPU time per job, "
                     "w1_db_cpu_us_per_job their server processes' (from /proc)",
            "w2": "2000 single enqueues, one transaction each (autocommit, as a view without ATOMIC_REQUESTS), in "
                  "blocks of 100 taking turns with the atomic variant and the raw reference; "
                  "w2_atomic_enqueues_per_s wraps each in transaction.atomic(); raw_w2_inserts_per_s is a bare "
                  "psycopg INSERT per transaction into the same table (this machine's commit ceiling); the "
                  "*_ratio keys are medians of each run's ratio to its own reference",
            "batch": "a batch of 10,000 no-op jobs (one enqueue_many inside pgqueue.batch(on_success=...)) to "
                     "running idle workers: batch_10k_s from the enqueue to the end of the success callback; "
                     "plain_10k_s the same 10,000 jobs without a batch, to the last job's end (same run)",
            "outbox": "20,000 events published in bulk (publish_many, 5,000 per call) while the workers run, "
                      "each matching 2 subscribers: outbox_events_per_s = events / (first publish .. all relayed "
                      "into 40,000 subscriber jobs by the maintenance leader)",
            "w1_history": "W1 with 1,000,000 finished jobs (and their 1,000,000 attempts) of history in the "
                          "tables, written before the enqueue and VACUUM ANALYZEd: w1_with_history_jobs_per_s; "
                          "w1_with_history_vs_w1_ratio is each run's ratio to its own plain W1",
            "w1_metrics": "W1 with pgqueue_worker --metrics-port: every attempt counted in prometheus-client's "
                          "multi-process files; metrics_port_scrape_ms is the median scrape of the port afterwards "
                          "(counters of every process plus the database gauges)",
            "collector": "the database gauges of one scrape (pgqueue.metrics.exposition in the benchmark process) "
                         "with 1,000,000 finished jobs and attempts plus 27,000 ready/scheduled/dead jobs in 4 "
                         "queues: metrics_collect_ms (median of 20); metrics_collect_empty_ms on empty tables",
            "prune": "W3's enqueues (200, 20 ms apart) to idle workers with 1,000,000 finished jobs present: "
                     "prune_idle_p99_ms; then the same, repeated while pgqueue_prune --older-than 30m deletes "
                     "all 1,000,000 and their attempts: prune_busy_p99_ms, their ratio, prune_jobs_per_s",
            "w3": "200 jobs enqueued ~20 ms apart to idle workers; job start time minus commit time",
            "tasks": "Django 6 only (python3.12, `--only tasks`): W1, W2 and W3 through the django.tasks API "
                     "(pgqueue.tasks.PgQueueBackend), each beside the native API in the same run: "
                     "w1_tasks_jobs_per_s (20,000 Task.enqueue() calls, 5,000 per transaction, then the same "
                     "worker run as W1) and w1_tasks_vs_w1_ratio; w1_single_jobs_per_s, native jobs enqueued the "
                     "same way (jobs.noop.enqueue()), and w1_tasks_vs_w1_single_ratio; w2_tasks_enqueues_per_s (a fourth turn of W2: "
                     "Task.enqueue() in autocommit) and w2_tasks_vs_w2_ratio; w3_tasks_p50_ms / p99 (stamp tasks) "
                     "and w3_tasks_*_over_w3_ms, their difference to the same run's native W3",
            "w1_pooled": "W1 with the workers behind PgBouncer 1.18 in transaction mode (4 server connections, "
                         "POOLER 'transaction', no prepared statements, LISTEN on LISTEN_DATABASE, the server "
                         "itself): w1_pooled_jobs_per_s; w1_pooled_vs_w1_ratio is each run's ratio to its own W1",
            "w3_pooled": "W3 with the workers behind the same PgBouncer, LISTEN on LISTEN_DATABASE "
                         "(w3_pooled_*), and without LISTEN_DATABASE: the workers poll every POLL_SECONDS (1 s), "
                         "w3_pooled_poll_*",
            "raw_w3": "the same enqueues picked up by a psycopg loop that LISTENs and runs job_lease (one "
                      "durable commit per pickup): the least a pickup costs on this machine",
        },
        "machine": machine(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/run.py --runs " + str(args.runs),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    # kept from the other commands: benchmarks/admin_bench.py, and the tasks workload (Django 6: python3.12)
    # when this run did not measure it
    other = ("admin_", "tasks_run", "w1_tasks", "w1_single", "w2_tasks", "w3_tasks")
    kept = {k: v for k, v in previous.items() if k.startswith(other) and k not in report}
    out.write_text(json.dumps({**report, **kept}, indent=2) + "\n")
    print(json.dumps(medians, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
