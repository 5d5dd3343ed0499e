"""The rules SQL applies in many statements are SQL functions (migration 0021) with Python twins in
pgqueue.lifecycle: each pair gives the same answers, the planner inlines the functions, and every statement
that decides where a runnable job goes or what a bucket holds calls them instead of writing its own CASE."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection

from pgqueue import sql
from pgqueue.lifecycle import bucket_tokens, lease_rescuable, process_silent, runnable_state

pytestmark = pytest.mark.django_db

SECOND = dt.timedelta(seconds=1)


def sql_now() -> dt.datetime:
    with connection.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


@pytest.mark.parametrize(("run_at_offset", "key", "slot"), [
    (-60, None, None), (0, None, None), (60, None, None),
    (-60, "k", None), (0, "k", None), (60, "k", None),
    (-60, "k", 3), (60, "k", 3), (-60, None, 3),
])
def test_runnable_state_in_sql_and_python_agree(run_at_offset: int, key: str | None, slot: int | None) -> None:
    now = sql_now()  # now() is the transaction's start: the same for every statement of this test
    run_at = now + run_at_offset * SECOND
    with connection.cursor() as cur:
        cur.execute("SELECT pgqueue_runnable_state(%s, %s, %s)", [run_at, key, slot])
        in_sql = cur.fetchone()[0]
    assert in_sql == runnable_state(run_at, now, key, slot).value


@pytest.mark.parametrize(("tokens", "elapsed", "limit", "window"), [
    (0.0, 0.0, 10, 1.0), (0.0, 0.05, 10, 1.0), (2.5, 10.0, 10, 1.0), (-3.0, 1.0, 2, 60.0),
    (1.0, 0.0004, 1_000_000, 0.001), (0.0, 31_536_000.0, 5, 31_536_000.0), (4.0, 86_400.0, 7, 3_600.0),
])
def test_bucket_tokens_in_sql_and_python_agree(tokens: float, elapsed: float, limit: int, window: float) -> None:
    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with connection.cursor() as cur:
        cur.execute("SELECT pgqueue_bucket_tokens(%s, %s, %s, %s, %s)",
                    [tokens, since, limit, window, since + dt.timedelta(seconds=elapsed)])
        in_sql = cur.fetchone()[0]
    assert in_sql == pytest.approx(bucket_tokens(tokens, elapsed, limit, window), rel=1e-12, abs=1e-9)


def test_the_wake_payload_names_the_queue_and_marks_rated_jobs() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT pgqueue_wake_payload('emails', NULL), pgqueue_wake_payload('emails', 'k')")
        assert cur.fetchone() == ("emails", ",rated:emails")


@pytest.mark.parametrize(("heartbeat", "vouched"), [
    (-5, None), (-50, None), (-50, -5), (-5, -50), (-50, -40), (None, None), (None, -50),
])
def test_process_silent_in_sql_and_python_agree(heartbeat: int | None, vouched: int | None) -> None:
    now = sql_now()
    at = [None if s is None else now + s * SECOND for s in (heartbeat, vouched)]
    with connection.cursor() as cur:
        cur.execute("SELECT pgqueue_process_silent(%s, %s, 30, now())", at)
        in_sql = cur.fetchone()[0]
    assert bool(in_sql) == process_silent(at[0], at[1], now, 30)


@pytest.mark.parametrize(("state", "expires", "heartbeat"), [
    ("running", 10, -5), ("running", -10, -20), ("running", -10, -5), ("running", -10, None), ("stopping", -10, -5),
    ("dead", 10, -5), ("stopped", 10, None), (None, -10, None), (None, 10, None), ("running", None, -5),
])
def test_lease_rescuable_in_sql_and_python_agree(state: str | None, expires: int | None, heartbeat: int | None) -> None:
    now = sql_now()
    lease, beat = (None if s is None else now + s * SECOND for s in (expires, heartbeat))
    with connection.cursor() as cur:
        cur.execute("SELECT pgqueue_lease_rescuable(%s, %s, %s, %s, now())", [state, lease, beat, state is not None])
        in_sql = cur.fetchone()[0]
    assert bool(in_sql) == lease_rescuable(state, lease, beat, now)


def test_the_planner_inlines_the_rule_functions() -> None:
    with connection.cursor() as cur:
        cur.execute("""EXPLAIN VERBOSE SELECT pgqueue_runnable_state(run_at, concurrency_key, slot),
                           pgqueue_bucket_tokens(1.0, run_at, 5, 1.0, now()), pgqueue_wake_payload(queue, rate_key),
                           pgqueue_process_silent(run_at, run_at, 30, now()),
                           pgqueue_lease_rescuable(state, lease_expires_at, run_at, true, now()),
                           pgqueue_batch_may_settle(run_at, run_at, run_at, args)
                       FROM pgqueue_job""")
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "CASE" in plan and "LEAST" in plan, plan
    assert "pgqueue_runnable_state" not in plan and "pgqueue_bucket_tokens" not in plan, plan
    assert "pgqueue_wake_payload" not in plan and "pgqueue_process_silent" not in plan, plan
    assert "pgqueue_lease_rescuable" not in plan and "pgqueue_batch_may_settle" not in plan, plan


def test_no_statement_writes_the_rules_out_again() -> None:
    """The rule's shapes (a CASE on a semaphore slot, a refill with EXTRACT ... * limit / window, the
    ',rated:' payload) appear in no statement: they call the functions."""
    text = "\n".join(re.sub(r"--[^\n]*", "", body) for body in sql.QUERIES.values())
    assert not re.search(r"slot IS NULL THEN 'blocked'", text)
    assert not re.search(r"\bELSE 'scheduled'|THEN 'scheduled'", text)
    assert not re.search(r"EXTRACT\(EPOCH FROM [^)]*updated_at[^)]*\)\s*\*", text)
    assert "',rated:' ||" not in text
    assert not re.search(r"greatest\([^)]*last_heartbeat[^)]*\)\s*<", text, re.I)  # pgqueue_process_silent's
    assert not re.search(r"lease_expires_at\s*<\s*\w+\.last_heartbeat", text)  # pgqueue_lease_rescuable's
    assert [n for n, text in sql.QUERIES.items() if "interval '1 hour'" in text] == ["batch_unsettled"]
    assert {n for n, text in sql.QUERIES.items() if "pgqueue_batch_may_settle(" in text} == {"job_prune", "job_prune_count"}
    users = {name for name, text in sql.QUERIES.items() if "pgqueue_runnable_state(" in text}
    assert users >= {"job_insert_many", "job_insert", "job_replace_waiting_many", "job_release_waiting_many",
                     "job_stage_due", "job_retry_many"}
