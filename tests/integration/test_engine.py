"""The lease/complete/rescue statements on a real PostgreSQL, with two connections to prove locking."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

import pgqueue
import pgqueue.operations
from pgqueue import db
from pgqueue.db import connection_kwargs
from pgqueue.models import Attempt, Job, QueueState
from pgqueue.types import JobState, Outcome
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def connect() -> psycopg.Connection:
    return psycopg.connect(**connection_kwargs(), autocommit=True)


def lease(conn: psycopg.Connection, worker: str, limit: int, queues: tuple[str, ...] = ("default",)) -> list[tuple]:
    with conn.cursor() as cur:
        return db.run(cur, "job_lease", queues=list(queues), limit=limit, worker=worker, lease_seconds=30)


def finish(conn: psycopg.Connection, worker: str, rows: list[tuple], state: str = "succeeded",
           outcome: str = "succeeded", result: str | None = "1") -> set[int]:
    now = dt.datetime.now(dt.UTC)
    n = len(rows)
    with conn.cursor() as cur:
        done = db.run(
            cur, "job_finish_many", ids=[r[0] for r in rows], tokens=[r[8] for r in rows], states=[state] * n,
            outcomes=[outcome] * n, run_ats=[None] * n, results=[result] * n, error_classes=[""] * n,
            messages=[""] * n, tracebacks=[""] * n, reasons=[""] * n, attempts=[r[5] for r in rows],
            started=[r[9] for r in rows], finished=[now] * n, worker=worker, channel="pgqueue",
        )
    return {r[0] for r in done}


def test_lease_takes_at_most_limit_in_priority_order() -> None:
    low = jobs.add.options(priority=-5).enqueue(0, 0)
    mid = [jobs.add.enqueue(i, i) for i in range(3)]
    high = jobs.add.options(priority=50).enqueue(9, 9)
    with connect() as conn:
        rows = lease(conn, "w1", 3)
    # every leased job starts at once, so only which jobs were picked matters, not RETURNING order
    assert {r[0] for r in rows} == {high.id, mid[0].id, mid[1].id}
    assert all(Job.objects.get(pk=r[0]).state == "running" for r in rows)
    assert Job.objects.get(pk=low.id).state == "ready"


def test_two_connections_never_lease_the_same_job() -> None:
    jobs.add.enqueue_many([(i, i) for i in range(10)])
    with connect() as a, connect() as b:
        a.autocommit = False  # hold the row locks of A's lease open
        first = lease(a, "A", 4)
        second = lease(b, "B", 10)  # must skip A's locked rows, not wait for them
        a.commit()
        third = lease(b, "B", 10)
    ids_a, ids_b = {r[0] for r in first}, {r[0] for r in second} | {r[0] for r in third}
    assert len(ids_a) == 4 and len(ids_b) == 6 and not ids_a & ids_b


def test_lease_serves_several_queues_and_skips_paused_ones() -> None:
    a = jobs.add.options(queue="a").enqueue(1, 1)
    b = jobs.add.options(queue="b", priority=3).enqueue(1, 1)
    QueueState.objects.create(name="c", paused=True)
    jobs.add.options(queue="c", priority=99).enqueue(1, 1)
    with connect() as conn:
        rows = lease(conn, "w", 10, ("a", "b", "c"))
    assert {r[0] for r in rows} == {a.id, b.id}
    with connect() as conn:
        assert [r[0] for r in lease(conn, "w", 1, ("a", "b", "c"))] == []  # c is paused


def test_lease_uses_the_partial_ready_index() -> None:
    with connection.cursor() as cur:
        cur.execute("""
            INSERT INTO pgqueue_job (queue, task, state, finished_at, attempts)
            SELECT 'default', 'x.y', 'succeeded', now(), 1 FROM generate_series(1, 50000)""")
        cur.execute("INSERT INTO pgqueue_job (queue, task) SELECT 'default', 'x.y' FROM generate_series(1, 2000)")
        cur.execute("ANALYZE pgqueue_job")
        cur.execute("EXPLAIN " + db.QUERIES["job_lease"],
                    {"queues": ["default"], "limit": 10, "worker": "w", "lease_seconds": 30})
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "pgqueue_job_ready" in plan, plan
    assert "Seq Scan on pgqueue_job" not in plan, plan


def test_completion_is_guarded_by_lease_token() -> None:
    jobs.add.enqueue(1, 2)
    with connect() as conn:
        (row,) = lease(conn, "w1", 1)
        stale = (*row[:8], uuid.uuid4(), row[9])  # a zombie holding an old token
        assert finish(conn, "w1", [stale]) == set()
        assert Job.objects.get(pk=row[0]).state == "running"
        assert finish(conn, "w1", [row]) == {row[0]}
        assert finish(conn, "w1", [row]) == set()  # a second completion changes nothing
    job = Job.objects.get(pk=row[0])
    assert (job.state, job.result, job.leased_by) == ("succeeded", 1, None)
    assert list(Attempt.objects.values_list("outcome", "number", "worker")) == [("succeeded", 1, "w1")]


def test_rescue_after_worker_death_reruns_and_zombie_cannot_complete() -> None:
    jobs.add.enqueue(1, 2)
    with connect() as conn:
        (row,) = lease(conn, "dead-worker", 1)
        with conn.cursor() as cur:
            rescued = db.run(cur, "job_rescue", workers=["dead-worker"], dead_after=60, channel="pgqueue")
        assert [(r[0], r[1]) for r in rescued] == [(row[0], "ready")]
        (again,) = lease(conn, "new-worker", 1)
        assert again[0] == row[0] and again[5] == 2
        assert finish(conn, "dead-worker", [row]) == set()  # the zombie's late completion is refused
        assert finish(conn, "new-worker", [again]) == {row[0]}
    history = list(Attempt.objects.filter(job_id=row[0]).values_list("number", "outcome", "worker"))
    assert history == [(1, "lost", "dead-worker"), (2, "succeeded", "new-worker")]


def test_expired_lease_is_rescued_and_lost_too_often_goes_dead() -> None:
    h = jobs.add.options(max_attempts=1).enqueue(1, 2)
    with connect() as conn, conn.cursor() as cur:
        for expected in ("ready", "dead"):
            lease(conn, "w", 1)
            cur.execute("UPDATE pgqueue_job SET lease_expires_at = now() - interval '1 second'")
            rescued = db.run(cur, "job_rescue", workers=[], dead_after=60, channel="pgqueue")
            assert [r[1] for r in rescued] == [expected]
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "lost", 2)
    assert Attempt.objects.filter(job_id=h.id, outcome="lost").count() == 2


def test_heartbeat_extends_leases_and_reports_cancel_requests() -> None:
    a, b = jobs.add.enqueue(1, 1), jobs.add.enqueue(2, 2)
    with connect() as conn, conn.cursor() as cur:
        rows = lease(conn, "w", 2)
        before = dict(Job.objects.values_list("id", "lease_expires_at"))
        assert pgqueue.cancel([b.id]) == {b.id: "cancelling"}
        beat = db.run(cur, "job_heartbeat", worker="w", tokens=[r[8] for r in rows], lease_seconds=300)
    assert dict(beat) == {a.id: False, b.id: True}
    after = dict(Job.objects.values_list("id", "lease_expires_at"))
    assert all(after[i] > before[i] for i in (a.id, b.id))


def test_cancel_waiting_jobs_and_replay_dead_ones() -> None:
    ready, scheduled = jobs.add.enqueue(1, 1), jobs.add.options(delay=60).enqueue(2, 2)
    assert pgqueue.cancel([ready.id, scheduled.id, 999999]) == {ready.id: "cancelled", scheduled.id: "cancelled"}
    assert pgqueue.cancel(ready.id) == {}  # already finished: unchanged
    replayed = pgqueue.replay([ready.id])
    new = Job.objects.get(pk=replayed[ready.id])
    assert (new.state, new.replay_of_id, new.args, new.attempts) == ("ready", ready.id, [1, 1], 0)
    assert pgqueue.replay([new.id]) == {}  # only dead or cancelled jobs are replayed


def test_stage_due_makes_scheduled_jobs_ready() -> None:
    due = jobs.add.options(delay=60).enqueue(1, 1)
    later = jobs.add.options(delay=3600).enqueue(1, 1)
    Job.objects.filter(pk=due.id).update(run_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    with connect() as conn, conn.cursor() as cur:
        assert db.run(cur, "job_stage_due", limit=100, channel="pgqueue")[0][0] == 1
    assert dict(Job.objects.values_list("id", "state")) == {due.id: "ready", later.id: "scheduled"}


def test_prune_deletes_old_finished_jobs_with_their_attempts() -> None:
    jobs.add.enqueue_many([(1, 1), (2, 2), (3, 3)])
    with connect() as conn, conn.cursor() as cur:
        rows = lease(conn, "w", 3)
        finish(conn, "w", rows[:2])
        cur.execute("UPDATE pgqueue_job SET finished_at = now() - interval '2 days' WHERE id = %s", (rows[0][0],))
        db.run(cur, "job_prune", keep_succeeded=86400, keep_failed=86400, limit=100)
    assert set(Job.objects.values_list("id", flat=True)) == {rows[1][0], rows[2][0]}
    assert set(Attempt.objects.values_list("job_id", flat=True)) == {rows[1][0]}


def test_release_hands_jobs_back_without_using_an_attempt() -> None:
    h = jobs.add.enqueue(1, 1)
    with connect() as conn, conn.cursor() as cur:
        rows = lease(conn, "w", 1)
        db.run(cur, "job_release_many", ids=[h.id], tokens=[rows[0][8]], worker="w", channel="pgqueue")
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.attempts) == (JobState.READY, 0)
    assert list(Attempt.objects.values_list("outcome", flat=True)) == [Outcome.RELEASED]


def test_no_missing_migrations() -> None:
    call_command("makemigrations", "pgqueue", "--check", "--dry-run", verbosity=0)


def test_system_checks_pass_on_postgresql() -> None:
    from django.core import checks

    assert [m for m in checks.run_checks(databases=["default"]) if m.id and m.id.startswith("pgqueue")] == []


def test_migrate_and_check_run_with_pgqueue_checks() -> None:
    from pgqueue.checks import check_migrations

    call_command("migrate", verbosity=0)  # system checks run first and must not block migrate
    call_command("check", databases=["default"])
    assert check_migrations("default") == []
    call_command("migrate", "pgqueue", "zero", verbosity=0)
    try:
        (problem,) = check_migrations("default")
        assert problem.id == "pgqueue.E004" and "migrate pgqueue" in problem.hint
    finally:
        call_command("migrate", verbosity=0)


def test_drain_and_pause_pauses_once_nothing_is_ready() -> None:
    h = jobs.add.options(queue="q1").enqueue(1, 1)
    assert pgqueue.operations.drain_and_pause("q1") == ["q1"]
    with connect() as conn, conn.cursor() as cur:
        assert db.run(cur, "queuestate_pause_drained") == []  # a job is still ready
        Job.objects.filter(pk=h.id).update(state="succeeded")
        assert db.run(cur, "queuestate_pause_drained") == [("q1",)]
    state = QueueState.objects.get(name="q1")
    assert state.paused and not state.pause_when_empty


def test_a_cancel_request_wins_over_a_retry() -> None:
    h = jobs.add.enqueue(1, 1)
    with connect() as conn:
        (row,) = lease(conn, "w", 1)
        pgqueue.cancel([h.id])  # requested while running; the attempt then fails and asks for a retry
        assert finish(conn, "w", [row], state="scheduled", outcome="failed", result=None) == {h.id}
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.finished_at is not None) == ("cancelled", True)


def test_heartbeat_revives_a_worker_declared_dead() -> None:
    from pgqueue.models import WorkerProcess

    WorkerProcess.objects.create(id="w-back", kind="worker", hostname="h", pid=1, state="dead")
    with connect() as conn, conn.cursor() as cur:
        db.run(cur, "job_heartbeat", worker="w-back", tokens=[], lease_seconds=30)
    assert WorkerProcess.objects.get(pk="w-back").state == "running"
