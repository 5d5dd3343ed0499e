"""The hot statements' work per job, counted by PostgreSQL (rows each plan node handles, buffers it touches),
under the generic plans a worker keeps, made from statistics that lie: counted empty by a VACUUM before a
burst, or counted full of ready jobs. Counts do not depend on the machine's speed, so a plan that walks a
whole set per job fails here whatever CI runs on (W1 lost a third of its speed to three such plans: a
nested loop over the completion's input, a lease joined to a scan of the table, a walk of every uniqueness
key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection

import pgqueue
from pgqueue import db, sql
from pgqueue.db import connection_kwargs
from pgqueue.types import LeasedJob
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

BACKLOG = 20_000
# Work per job a statement may do: rows its plan nodes handle (filters and join filters included) and
# buffers it touches. Today's plans do about a quarter of each (15 rows, 10 to 16 buffers); the plans they
# replaced did 15x to 2,000x that on these tables.
ROWS_PER_JOB = 60
BUFFERS_PER_JOB = 40
# The hand-off pairs each slot given up with each slot and blocked job of its key (10 x 10 here: ~80 rows a
# job); walking a key's blocked jobs in a kept plan made it 1,800.
HAND_OFF_ROWS_PER_JOB = 200


def numbered(text: str) -> tuple[str, list[str]]:
    """A statement with its %(name)s parameters written $1, $2, ... and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", number, text).replace("%%", "%"), names


def work(node: dict[str, Any]) -> int:
    """Rows a plan node and its children handled: returned, and removed by filters, over all loops."""
    loops = node.get("Actual Loops", 1) or 1
    here = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Join Filter", 0)) * loops
    return int(here) + sum(work(child) for child in node.get("Plans", []))


class Explained:
    def __init__(self, plan: dict[str, Any], jobs: int) -> None:
        root = plan["Plan"]
        self.jobs = jobs
        self.rows = work(root)
        self.buffers = root.get("Shared Hit Blocks", 0) + root.get("Shared Read Blocks", 0)
        self.text = json.dumps(plan)[:3000]

    def check(self, rows_per_job: int = ROWS_PER_JOB) -> None:
        assert self.rows <= rows_per_job * self.jobs, f"{self.rows} rows for {self.jobs} jobs: {self.text}"
        assert self.buffers <= BUFFERS_PER_JOB * self.jobs, f"{self.buffers} buffers for {self.jobs} jobs: {self.text}"


@pytest.fixture
def worker_conn() -> Iterator[psycopg.Connection[Any]]:
    """A connection planning as a worker's does: one generic plan per prepared statement."""
    with psycopg.connect(**connection_kwargs(), autocommit=True) as conn:
        conn.execute(sql.QUERIES["session_generic_plans"])
        yield conn


def explain(conn: psycopg.Connection[Any], name: str, jobs: int, **params: Any) -> Explained:
    """EXPLAIN ANALYZE statement `name` as a kept generic plan, rolled back afterwards."""
    text, names = numbered(sql.QUERIES[name])
    conn.execute("DEALLOCATE ALL")
    conn.execute(f"PREPARE hot AS {text}")
    cursor = psycopg.ClientCursor(conn)  # the arguments become literals of EXECUTE; the plan stays generic
    with conn.transaction(force_rollback=True):
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE hot({', '.join(['%s'] * len(names))})",
                       [params[n] for n in names])
        return Explained(cursor.fetchone()[0][0], jobs)


def statistics(empty: bool) -> None:
    """Counted empty (VACUUM ANALYZE before the burst), or counted as it is now."""
    if empty:
        return
    with connection.cursor() as cur:
        cur.execute("ANALYZE pgqueue_job")


def backlog(n: int = BACKLOG, **options: Any) -> None:
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE pgqueue_job")
    for start in range(0, n, 5000):
        pgqueue.enqueue_many([jobs.noop.options(**options).call() for _ in range(start, min(n, start + 5000))])


def lease(conn: psycopg.Connection[Any], limit: int, queue: str = "default") -> list[LeasedJob]:
    with conn.cursor() as cur:
        return db.run(cur, sql.job_lease, queues=[queue], limit=limit, worker="w", lease_seconds=30)


@pytest.mark.parametrize("empty", [True, False], ids=["counted-empty", "counted-full"])
def test_a_lease_works_per_job_not_per_backlog(worker_conn: psycopg.Connection[Any], empty: bool) -> None:
    backlog()
    statistics(empty)
    lease(worker_conn, 500)  # jobs that ran: their entries stay in the indexes until a vacuum
    explained = explain(worker_conn, "job_lease", 10, queues=["default"], limit=10, worker="w", lease_seconds=30)
    explained.check()


@pytest.mark.parametrize("empty", [True, False], ids=["counted-empty", "counted-full"])
def test_a_completion_works_per_job_not_per_job_squared(worker_conn: psycopg.Connection[Any], empty: bool) -> None:
    backlog()
    statistics(empty)
    leased = lease(worker_conn, 500)
    rows = [[j.id, str(j.lease_token), "succeeded", False, None, "", "null", j.attempt, 0, 0, None, None, j.attempt,
             "succeeded", "w", j.started_at.isoformat(), "", "", "", None, False, False, None] for j in leased]
    assert len(rows[0]) == len(db.TRANSITION_FIELDS)
    explained = explain(worker_conn, "job_set_state_if_running_many", 500, transitions=json.dumps(rows),
                        worker="w", channel="pgqueue-test")
    explained.check()


def test_a_heartbeat_works_per_running_job(worker_conn: psycopg.Connection[Any]) -> None:
    backlog()
    for _ in range(10):  # 5,000 jobs ran and finished: dead entries in the index of running rows
        leased = lease(worker_conn, 500)
        worker_conn.execute("UPDATE pgqueue_job SET state = 'succeeded', lease_token = NULL WHERE id = ANY(%s)",
                            [[j.id for j in leased]])
    running = lease(worker_conn, 200)
    explained = explain(worker_conn, "job_heartbeat", 200, worker="w", ids=[j.id for j in running],
                        tokens=[str(j.lease_token) for j in running], lease_seconds=30)
    explained.check()


@pytest.mark.parametrize("empty", [True, False], ids=["counted-empty", "counted-full"])
def test_a_lease_releases_a_key_per_job_not_per_key_held(worker_conn: psycopg.Connection[Any], empty: bool) -> None:
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE pgqueue_job")
        cur.execute("VACUUM ANALYZE pgqueue_lock")
    for start in range(0, BACKLOG, 5000):
        pgqueue.enqueue_many([jobs.unique_note.call(f"n{i}") for i in range(start, start + 5000)])
    if not empty:
        with connection.cursor() as cur:
            cur.execute("ANALYZE pgqueue_job")
            cur.execute("ANALYZE pgqueue_lock")
    explained = explain(worker_conn, "job_lease", 10, queues=["flow"], limit=10, worker="w", lease_seconds=30)
    explained.check()


@pytest.mark.parametrize("empty", [True, False], ids=["counted-empty", "counted-full"])
def test_a_hand_off_works_per_slot_not_per_blocked_job(worker_conn: psycopg.Connection[Any], empty: bool) -> None:
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE pgqueue_job")
        cur.execute("INSERT INTO pgqueue_job (queue, task, state, finished_at) "  # history ahead of them, by id
                    "SELECT 'default', 'x.y', 'succeeded', now() FROM generate_series(1, %s)", [BACKLOG])
    for start in range(0, BACKLOG, 5000):  # 10 keys of limit 1: 10 hold a slot, the rest wait 'blocked'
        pgqueue.enqueue_many([jobs.noop.options(concurrency_key=f"k{i % 10}", concurrency_limit=1).call()
                              for i in range(start, start + 5000)])
    statistics(empty)
    holders = lease(worker_conn, 10)
    assert len(holders) == 10
    worker_conn.execute("UPDATE pgqueue_job SET state = 'succeeded', lease_token = NULL WHERE id = ANY(%s)",
                        [[j.id for j in holders]])
    explained = explain(worker_conn, "semaphore_hand_off", 10, job_ids=[j.id for j in holders],
                        slot_keys=[j.concurrency_key for j in holders], slots=[j.slot for j in holders], keys=[],
                        channel="pgqueue-test")
    explained.check(HAND_OFF_ROWS_PER_JOB)
