"""The plain path's cost per job, counted by PostgreSQL while a real worker runs 3,000 no-op jobs: statements,
rows and buffers per statement, commits and WAL bytes. These counts do not depend on the machine's speed,
so a change that makes every job dearer fails here before any benchmark runs (W1 lost 30% over four issues,
each "within noise" of the one before). docs/performance.md explains each budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

import pgqueue
from pgqueue.models import Job
from tests.conftest import wait_for
from tests.testapp import jobs

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

JOBS = 3_000
# Measured on this code (3,000 jobs, one process of 10): 0.11 leases a job, 0.008 completions, 0.17 commits,
# ~1,070 bytes of WAL without full-page images, 9 buffers a leased job and 23 a completed one.
LEASES_PER_JOB = 0.2  # a lease takes at most the free slots: never fewer than 1/concurrency
COMPLETIONS_PER_JOB = 0.1  # completions are written in batches (every 25 ms or 500)
COMMITS_PER_JOB = 0.3  # everything the worker's processes committed, maintenance included
WAL_BYTES_PER_JOB = 1_120  # full-page images left out (they depend on when checkpoints fall); ~5% over today
BUFFERS_PER_ROW = {"lease": 40, "completion": 40}


@pytest.fixture
def statements() -> Iterator[None]:
    with connection.cursor() as cur:
        cur.execute("SELECT current_setting('shared_preload_libraries') LIKE '%%pg_stat_statements%%'")
        if not cur.fetchone()[0]:
            pytest.skip("pg_stat_statements is not loaded in this server (the embedded one loads it)")
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        # The WAL counted is the server's: an autovacuum of pgqueue's tables that happens to fall inside the
        # run (3,000 inserts and updates cross its thresholds) would add a variable amount (one full run
        # measured 1,130 bytes a job against ~1,070 alone). Vacuuming is not the plain path's cost per job.
        cur.execute("SELECT quote_ident(relname) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'pgqueue%%' "
                    "AND relnamespace = 'public'::regnamespace")
        tables = [row[0] for row in cur.fetchall()]
        for table in tables:
            cur.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    try:
        yield
    finally:
        with connection.cursor() as cur:
            for table in tables:
                cur.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")


def snapshot() -> dict[str, Any]:
    """The WAL position and the database's commits (this session's own counted first)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT pg_current_wal_lsn()::text, xact_commit FROM pg_stat_database "
                    "WHERE datname = current_database()")
        lsn, commits = cur.fetchone()
    return {"lsn": lsn, "commits": commits}


def gone() -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgqueue %%'")
        return cur.fetchone()[0] == 0


def statement_totals() -> dict[str, tuple[int, int, int]]:
    """calls, rows and buffers of the lease and the completion since the reset."""
    kinds = {"lease": "WITH candidates AS%", "completion": "WITH input AS (%r->>%"}
    totals = {}
    with connection.cursor() as cur:
        for kind, pattern in kinds.items():
            cur.execute("SELECT COALESCE(sum(calls), 0), COALESCE(sum(rows), 0), "
                        "COALESCE(sum(shared_blks_hit + shared_blks_read), 0) FROM pg_stat_statements "
                        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                        "AND query LIKE %s", [pattern])
            totals[kind] = tuple(int(v) for v in cur.fetchone())
    return totals


def test_a_no_op_job_costs_what_the_budget_allows(statements: None, start_worker: Any) -> None:
    for _ in range(JOBS // 1000):
        pgqueue.enqueue_many([jobs.noop.call() for _ in range(1000)])
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset()")
    before = snapshot()
    worker = start_worker("--processes", "1", "--concurrency", "10", "--queues", "default", "--no-scheduler")
    wait_for(lambda: Job.objects.filter(state="succeeded").count() == JOBS, timeout=120, what="the jobs to run")
    worker.stop()
    wait_for(gone, what="the worker's sessions to end (each counts its commits as it ends)")
    after = snapshot()
    with connection.cursor() as cur:
        cur.execute("SELECT COALESCE(sum(combined_size - fpi_size), 0) FROM pg_get_wal_stats(%s::pg_lsn, %s::pg_lsn)",
                    [before["lsn"], after["lsn"]])
        wal = int(cur.fetchone()[0])
    totals = statement_totals()
    leases, _, lease_buffers = totals["lease"]  # a lease returns one row: its jobs as one JSON document
    completions, completed, completion_buffers = totals["completion"]
    report = (f"{leases} leases ({lease_buffers} buffers), {completions} completions of "
              f"{completed} ({completion_buffers} buffers), {after['commits'] - before['commits']} commits, "
              f"{wal} bytes of WAL without full pages, for {JOBS} jobs")
    assert completed == JOBS, report
    assert leases / JOBS <= LEASES_PER_JOB, report
    assert completions / JOBS <= COMPLETIONS_PER_JOB, report
    assert (after["commits"] - before["commits"]) / JOBS <= COMMITS_PER_JOB, report
    assert wal / JOBS <= WAL_BYTES_PER_JOB, report
    assert lease_buffers / JOBS <= BUFFERS_PER_ROW["lease"], report
    assert completion_buffers / completed <= BUFFERS_PER_ROW["completion"], report
