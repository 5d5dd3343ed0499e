"""The lease/complete/rescue statements on a real PostgreSQL, with two connections to prove locking."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

import pgqueue
import pgqueue.operations
from pgqueue import db, sql
from pgqueue.conf import get_settings
from pgqueue.db import connection_kwargs
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, RetryPolicy, decide
from pgqueue.models import Attempt, Job, QueueState
from pgqueue.ops import retention
from pgqueue.types import JobState, LeasedJob, Outcome
from pgqueue.worker import rescue
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def connect() -> psycopg.Connection:
    return psycopg.connect(**connection_kwargs(), autocommit=True)


def lease(conn: psycopg.Connection, worker: str, limit: int, queues: tuple[str, ...] = ("default",)) -> list[LeasedJob]:
    with conn.cursor() as cur:
        return db.run(cur, sql.job_lease, queues=list(queues), limit=limit, worker=worker, lease_seconds=30)


def lease_suspect(conn: psycopg.Connection, worker: str, queues: tuple[str, ...] = ("default",)) -> list[LeasedJob]:
    with conn.cursor() as cur:
        return db.run(cur, sql.job_lease_suspect, queues=list(queues), worker=worker, lease_seconds=30)


POLICY = RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0)


def finish(conn: psycopg.Connection, worker: str, rows: list[LeasedJob], how: Ending = Ending.RETURNED,
           result: str | None = "1") -> set[int]:
    """Decide each attempt's transition as a worker would, and apply it with the guarded statement."""
    now = dt.datetime.now(dt.UTC)
    error = None if how is Ending.RETURNED else ErrorInfo(error_class="RuntimeError", message="RuntimeError: x")
    end = AttemptEnd(how=how, worker=worker, finished_at=now, result=result, error=error)
    transitions = [decide(r, end, POLICY) for r in rows]
    with conn.cursor() as cur:
        done = db.run(cur, sql.job_set_state_if_running_many, **db.transition_params(transitions), worker=worker,
                      channel="pgqueue")
    return {r.id for r in done}


def database() -> db.Database:
    return db.Database(connection_kwargs(), owner="test", role="test")


def test_a_statement_runs_with_exactly_its_parameters() -> None:
    """A missing or misspelt parameter is named before anything reaches the server (psycopg would ignore a
    keyword the statement does not use)."""
    job = jobs.add.enqueue(1, 2)
    with connect() as conn, conn.cursor() as cur:
        with pytest.raises(TypeError, match=r"statement job_lease takes \['lease_seconds', 'limit', 'queues', "
                                            r"'worker'\]; missing \['lease_seconds'\]; unknown \['lease_secs'\]"):
            db.run(cur, sql.job_lease, queues=["default"], limit=1, worker="w", lease_secs=30)
        assert cur.statusmessage is None  # nothing was sent on this cursor
        assert [r.id for r in lease(conn, "w", 1)] == [job.id]


def test_lease_takes_at_most_limit_in_priority_order() -> None:
    low = jobs.add.options(priority=-5).enqueue(0, 0)
    mid = [jobs.add.enqueue(i, i) for i in range(3)]
    high = jobs.add.options(priority=50).enqueue(9, 9)
    with connect() as conn:
        rows = lease(conn, "w1", 3)
    # every leased job starts at once, so only which jobs were picked matters, not RETURNING order
    assert {r.id for r in rows} == {high.id, mid[0].id, mid[1].id}
    assert all(Job.objects.get(pk=r.id).state == "running" for r in rows)
    assert Job.objects.get(pk=low.id).state == "ready"


def test_two_connections_never_lease_the_same_job() -> None:
    jobs.add.enqueue_many([(i, i) for i in range(10)])
    with connect() as a, connect() as b:
        a.autocommit = False  # hold the row locks of A's lease open
        first = lease(a, "A", 4)
        second = lease(b, "B", 10)  # must skip A's locked rows, not wait for them
        a.commit()
        third = lease(b, "B", 10)
    ids_a, ids_b = {r.id for r in first}, {r.id for r in second} | {r.id for r in third}
    assert len(ids_a) == 4 and len(ids_b) == 6 and not ids_a & ids_b


def test_lease_serves_several_queues_and_skips_paused_ones() -> None:
    a = jobs.add.options(queue="a").enqueue(1, 1)
    b = jobs.add.options(queue="b", priority=3).enqueue(1, 1)
    QueueState.objects.create(name="c", paused=True)
    jobs.add.options(queue="c", priority=99).enqueue(1, 1)
    with connect() as conn:
        rows = lease(conn, "w", 10, ("a", "b", "c"))
    assert {r.id for r in rows} == {a.id, b.id}
    with connect() as conn:
        assert [r.id for r in lease(conn, "w", 1, ("a", "b", "c"))] == []  # c is paused


def test_queues_take_turns_so_a_backlog_cannot_starve_a_queue() -> None:
    with connection.cursor() as cur:  # an hour-old backlog in "busy", with one urgent job among it
        cur.execute("""INSERT INTO pgqueue_job (queue, task, run_at, priority)
                       SELECT 'busy', 'x.y', now() - interval '1 hour' + g * interval '1 ms', CASE WHEN g = 50 THEN 9 ELSE 0 END
                       FROM generate_series(1, 100) g""")
    fresh = [jobs.add.options(queue="quiet").enqueue(i, i).id for i in range(3)]
    with connect() as conn:
        rows = lease(conn, "w", 4, ("busy", "quiet"))
    by_queue = {q: [r.id for r in rows if r.queue == q] for q in ("busy", "quiet")}
    assert len(by_queue["busy"]) == 2 and by_queue["quiet"] == fresh[:2]
    urgent = Job.objects.get(queue="busy", priority=9).id
    assert urgent in by_queue["busy"]  # within a queue, priority first


@pytest.mark.parametrize("statement", ["job_lease", "job_lease_limited"])
def test_one_job_leases_alternate_queues_as_the_worker_rotates_them(statement: str) -> None:
    """Within a turn the queue named first goes first (not the oldest or most urgent job): a worker leasing
    one job at a time, the busy queue's jobs older and of higher priority, still gets the quiet queue's
    jobs as it rotates the names."""
    with connection.cursor() as cur:
        cur.execute("""INSERT INTO pgqueue_job (queue, task, run_at, priority)
                       SELECT 'busy', 'x.y', now() - interval '1 hour' + g * interval '1 ms', 5
                       FROM generate_series(1, 100) g""")
    fresh = [jobs.add.options(queue="quiet").enqueue(i, i).id for i in range(3)]
    taken = []
    with connect() as conn, conn.cursor() as cur:
        for names in [("busy", "quiet"), ("quiet", "busy")] * 3:
            taken += db.run(cur, sql.STATEMENTS[statement], queues=db.text_array(names), limit=1, worker="w",
                            lease_seconds=30)
    assert [r.queue for r in taken] == ["busy", "quiet"] * 3
    assert [r.id for r in taken if r.queue == "quiet"] == fresh


@pytest.mark.parametrize(("statement", "indexes"), [
    ("job_lease", ["pgqueue_job_ready"]),
    ("job_lease_limited", ["pgqueue_job_ready", "pgqueue_job_rated", "pgqueue_job_rate_key"]),
])
def test_leases_use_the_partial_ready_indexes(statement: str, indexes: list[str]) -> None:
    with connection.cursor() as cur:
        cur.execute("""
            INSERT INTO pgqueue_job (queue, task, state, finished_at, attempts)
            SELECT 'default', 'x.y', 'succeeded', now(), 1 FROM generate_series(1, 50000)""")
        cur.execute("INSERT INTO pgqueue_job (queue, task) SELECT 'default', 'x.y' FROM generate_series(1, 2000)")
        cur.execute("INSERT INTO pgqueue_job (queue, task, rate_key) SELECT 'default', 'x.y', 'k' || (g % 7) "
                    "FROM generate_series(1, 2000) AS g")
        cur.execute("ANALYZE pgqueue_job")
        cur.execute("EXPLAIN " + sql.QUERIES[statement],
                    {"queues": ["default"], "limit": 10, "worker": "w", "lease_seconds": 30})
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert all(index in plan for index in indexes), plan
    assert "Seq Scan on pgqueue_job" not in plan, plan
    # Workers keep one generic plan per prepared statement (session_generic_plans): it must use the indexes too.
    if connection.pg_version >= 160000:  # EXPLAIN (GENERIC_PLAN) is new in PostgreSQL 16
        with connection.cursor() as cur:
            cur.execute("EXPLAIN (GENERIC_PLAN) " + numbered(sql.QUERIES[statement]))
            generic = "\n".join(r[0] for r in cur.fetchall())
        assert all(index in generic for index in indexes) and "Seq Scan on pgqueue_job" not in generic, generic


def test_a_worker_connection_makes_its_kept_plans_again_as_the_table_grows() -> None:
    """A plan kept from when the job table was empty would scan it whole once it has grown; the plans
    are made again every REPLAN_SECONDS."""
    database = db.Database(connection_kwargs(), owner="w", role="test")
    database.connect().prepare_threshold = 0  # prepared at once (a worker's are after a few runs)
    params = {"queues": ["nothing-here"], "limit": 10, "worker": "w", "lease_seconds": 30}

    def kept_plan() -> str:
        conn = database.connect()
        name = conn.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE %s",
                            ["%WITH candidates AS%"]).fetchone()[0]
        return "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE {name}('{{nothing-here}}', 10, 'w', 30)"))

    try:
        database.connect().execute("VACUUM ANALYZE pgqueue_job")  # counted empty, as after a TRUNCATE
        assert database.run(sql.job_lease, **params) == []  # planned with an empty table
        with connection.cursor() as cur:  # it grows; no ANALYZE (which would make the plans again)
            cur.execute("INSERT INTO pgqueue_job (queue, task, state, attempts) "
                        "SELECT 'q' || (g % 50), 'x.y', 'ready', 0 FROM generate_series(1, 20000) g")
        assert "Seq Scan on pgqueue_job" in kept_plan()
        database.replan_at = time.monotonic()  # REPLAN_SECONDS later
        assert database.run(sql.job_lease, **params) == []
        plan = kept_plan()
        assert "Seq Scan on pgqueue_job" not in plan and "pgqueue_job_ready" in plan, plan
        assert database.replan_at > time.monotonic() + db.REPLAN_SECONDS - 1
    finally:
        database.close()


def test_completion_finds_its_rows_by_primary_key_whatever_the_statistics() -> None:
    """Counted empty by a VACUUM, the partial index of running rows looks free to walk whole; it holds every
    row that ran since, so the completion must look its rows up by id (a walk per batch stalled W1)."""
    if connection.pg_version < 160000:
        pytest.skip("EXPLAIN (GENERIC_PLAN) is new in PostgreSQL 16")
    database = db.Database(connection_kwargs(), owner="w", role="test")
    try:
        conn = database.connect()
        conn.execute("VACUUM ANALYZE pgqueue_job")
        with connection.cursor() as cur:
            cur.execute("INSERT INTO pgqueue_job (queue, task, state, leased_by, attempts) "
                        "SELECT 'default', 'x.y', 'running', 'w', 1 FROM generate_series(1, 20000)")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (GENERIC_PLAN) " + numbered(sql.QUERIES["job_set_state_if_running_many"])).fetchall())
    finally:
        database.close()
    lookups = [line for line in plan.splitlines() if "Scan" in line and " on pgqueue_job " in line]
    assert lookups and all("pgqueue_job_pkey" in line for line in lookups), plan


def numbered(text: str) -> str:
    """A statement with its %(name)s parameters written $1, $2, ... (as a prepared statement has them)."""
    names: list[str] = []
    return re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}" if m[1] in names
                  else (names.append(m[1]) or f"${len(names)}"), text)


def test_completion_is_guarded_by_lease_token() -> None:
    jobs.add.enqueue(1, 2)
    with connect() as conn:
        (row,) = lease(conn, "w1", 1)
        stale = row._replace(lease_token=uuid.uuid4())  # a zombie holding an old token
        assert finish(conn, "w1", [stale]) == set()
        assert Job.objects.get(pk=row.id).state == "running"
        assert finish(conn, "w1", [row]) == {row.id}
        assert finish(conn, "w1", [row]) == set()  # a second completion changes nothing
    job = Job.objects.get(pk=row.id)
    assert (job.state, job.result, job.leased_by) == ("succeeded", 1, None)
    assert list(Attempt.objects.values_list("outcome", "number", "worker")) == [("succeeded", 1, "w1")]


def test_rescue_after_worker_death_reruns_and_zombie_cannot_complete() -> None:
    jobs.add.enqueue(1, 2)
    jobs.add.enqueue(3, 4)
    database_ = database()
    with connect() as conn, connect() as listener:
        listener.execute('LISTEN "pgqueue"')
        rows = lease(conn, "dead-worker", 2)
        rescued = rescue.held_by_worker(database_, get_settings(), "dead-worker", -9)
        assert {r.id for r in rescued} == {r.id for r in rows}
        assert set(Job.objects.values_list("state", "crashes", "lost_attempts")) == {("ready", 1, 1)}
        # the workers of the queue hear that suspects wait, and suspects run alone: job_lease leaves them,
        # job_lease_suspect takes exactly one
        payloads = {n.payload for n in listener.notifies(timeout=1.0, stop_after=2)}
        assert payloads == {"default", ",suspects:default"}
        assert lease(conn, "busy", 5) == []
        (again,) = lease_suspect(conn, "new-worker")
        assert again.id in {r.id for r in rows} and again.attempt == 2 and again.crashes == 1
        stale = next(r for r in rows if r.id == again.id)
        assert finish(conn, "dead-worker", [stale]) == set()  # the zombie's late completion is refused
        assert finish(conn, "new-worker", [again]) == {again.id}
    database_.close()
    history = list(Attempt.objects.filter(job_id=again.id).values_list("number", "outcome", "worker", "exit_code"))
    assert history == [(1, "lost", "dead-worker", -9), (2, "succeeded", "new-worker", None)]
    lost = Attempt.objects.filter(job_id=again.id, outcome="lost").get()
    assert "died with signal 9 (SIGKILL) during attempt 1" in lost.message


def test_a_job_that_crashes_its_process_alone_again_is_dead_as_crashed() -> None:
    h = jobs.add.options(max_attempts=5).enqueue(1, 2)
    database_ = database()
    with connect() as conn:
        lease(conn, "w1", 1)
        rescue.held_by_worker(database_, get_settings(), "w1", -11)  # alone: a suspect, runs alone next
        (row,) = lease_suspect(conn, "w2")
        rescue.held_by_worker(database_, get_settings(), "w2", -11)  # alone again: the likely cause
    database_.close()
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.reason_code, job.crashes, job.attempts) == ("dead", "crashed", 2, 2)
    assert list(Attempt.objects.values_list("exit_code", flat=True)) == [-11, -11]


def test_expired_lease_is_rescued_and_lost_too_often_goes_dead() -> None:
    h = jobs.add.options(max_attempts=1).enqueue(1, 2)
    database_ = database()
    with connect() as conn, conn.cursor() as cur:
        for expected in ("ready", "dead"):
            lease(conn, "w", 1)
            cur.execute("UPDATE pgqueue_job SET lease_expires_at = now() - interval '1 second'")
            rescued = rescue.expired(database_, get_settings(), 100, by="m")
            assert [r.id for r in rescued] == [h.id]
            assert Job.objects.get(pk=h.id).state == expected
    database_.close()
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.reason_code, job.attempts, job.lost_attempts, job.crashes) == ("dead", "lost", 2, 2, 0)
    assert Attempt.objects.filter(job_id=h.id, outcome="lost", exit_code=None).count() == 2


def test_lost_attempts_do_not_use_up_max_attempts() -> None:
    h = jobs.add.options(max_attempts=2).enqueue(1, 2)
    database_ = database()
    with connect() as conn, conn.cursor() as cur:
        lease(conn, "w", 1)
        cur.execute("UPDATE pgqueue_job SET lease_expires_at = now() - interval '1 second'")
        rescue.expired(database_, get_settings(), 100, by="m")
        rows = lease(conn, "w", 1)
        assert finish(conn, "w", rows, how=Ending.RAISED) == {h.id}  # failure 1 of 2: retried
        assert Job.objects.get(pk=h.id).state == "ready"
        rows = lease(conn, "w", 1)
        assert rows[0].attempt == 3
        assert finish(conn, "w", rows, how=Ending.RAISED) == {h.id}  # failure 2 of 2: dead
    database_.close()
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.reason_code, job.attempts, job.lost_attempts) == ("dead", "max_attempts", 3, 1)


def test_heartbeat_extends_leases_and_reports_cancel_requests() -> None:
    a, b = jobs.add.enqueue(1, 1), jobs.add.enqueue(2, 2)
    with connect() as conn, conn.cursor() as cur:
        rows = lease(conn, "w", 2)
        before = dict(Job.objects.values_list("id", "lease_expires_at"))
        assert pgqueue.cancel([b.id]) == {b.id: "cancelling"}
        beat = db.run(cur, sql.job_heartbeat, worker="w", ids=[r.id for r in rows], tokens=[r.lease_token for r in rows],
                          lease_seconds=300)
    assert {r.id: r.cancel_requested for r in beat} == {a.id: False, b.id: True}
    after = dict(Job.objects.values_list("id", "lease_expires_at"))
    assert all(after[i] > before[i] for i in (a.id, b.id))


def test_heartbeat_never_waits_for_a_row_a_completion_is_writing() -> None:
    a, b = jobs.add.enqueue(1, 1), jobs.add.enqueue(2, 2)
    with connect() as conn, connect() as completer, conn.cursor() as cur:
        rows = lease(conn, "w", 2)
        before = dict(Job.objects.values_list("id", "lease_expires_at"))
        with completer.transaction(), completer.cursor() as writing:
            writing.execute("SELECT id FROM pgqueue_job WHERE id = %s FOR UPDATE", (a.id,))  # a completion holds a
            cur.execute("SET statement_timeout = '3s'")  # waiting would fail the test, not hang it
            beat = db.run(cur, sql.job_heartbeat, worker="w", ids=[r.id for r in rows], tokens=[r.lease_token for r in rows],
                          lease_seconds=300)
    assert {r.id for r in beat} == {a.id, b.id}  # both still held: neither is reported lost
    after = dict(Job.objects.values_list("id", "lease_expires_at"))
    assert after[a.id] == before[a.id] and after[b.id] > before[b.id]  # the locked one was not extended


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
        assert db.run(cur, sql.job_stage_due, limit=100, channel="pgqueue")[0].staged == 1
    assert dict(Job.objects.values_list("id", "state")) == {due.id: "ready", later.id: "scheduled"}


def test_prune_deletes_old_finished_jobs_with_their_attempts() -> None:
    jobs.add.enqueue_many([(1, 1), (2, 2), (3, 3)])
    with connect() as conn, conn.cursor() as cur:
        rows = lease(conn, "w", 3)
        finish(conn, "w", rows[:2])
        cur.execute("UPDATE pgqueue_job SET finished_at = now() - interval '2 days' WHERE id = %s", (rows[0].id,))
        policy = retention.Policy(keep=dict.fromkeys(("succeeded", "dead", "cancelled"), 86400.0))
        pruned = db.run(cur, sql.job_prune, **policy.params(), limit=100, archive=False)
        assert (pruned[0].jobs, pruned[0].attempts) == (1, 1)
    assert set(Job.objects.values_list("id", flat=True)) == {rows[1].id, rows[2].id}
    assert set(Attempt.objects.values_list("job_id", flat=True)) == {rows[1].id}


def test_release_hands_jobs_back_without_using_an_attempt() -> None:
    h = jobs.add.enqueue(1, 1)
    with connect() as conn:
        rows = lease(conn, "w", 1)
        assert finish(conn, "w", rows, how=Ending.RELEASED) == {h.id}
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
        assert db.run(cur, sql.queuestate_pause_drained) == []  # a job is still ready
        Job.objects.filter(pk=h.id).update(state="succeeded")
        assert [r.name for r in db.run(cur, sql.queuestate_pause_drained)] == ["q1"]
    state = QueueState.objects.get(name="q1")
    assert state.paused and not state.pause_when_empty


def test_a_cancel_request_wins_over_a_retry() -> None:
    h = jobs.add.enqueue(1, 1)
    with connect() as conn:
        (row,) = lease(conn, "w", 1)
        pgqueue.cancel([h.id])  # requested while running; the attempt then fails and asks for a retry
        assert finish(conn, "w", [row], how=Ending.RAISED, result=None) == {h.id}
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.finished_at is not None) == ("cancelled", True)


def test_heartbeat_revives_a_worker_declared_dead() -> None:
    from pgqueue.models import WorkerProcess

    WorkerProcess.objects.create(id="w-back", kind="worker", hostname="h", pid=1, state="dead")
    with connect() as conn, conn.cursor() as cur:
        db.run(cur, sql.job_heartbeat, worker="w-back", ids=[], tokens=[], lease_seconds=30)
    assert WorkerProcess.objects.get(pk="w-back").state == "running"


def test_an_expired_lease_is_rescued_only_when_its_worker_no_longer_holds_it() -> None:
    """Guarantee 2: a lease that ran out while its process lives silently (a job holding the interpreter
    starves the heartbeat) is not enough; the supervisor vouches for the process, and only the worker's own
    heartbeat after the expiry (it no longer holds the job) or its death lets maintenance take the job back."""
    from pgqueue.models import WorkerProcess

    now = dt.datetime.now(dt.UTC)
    settings = get_settings()
    WorkerProcess.objects.create(id="sup", kind="supervisor", hostname="h", pid=1)
    for wid in ("starved", "forgetful", "orphan"):
        WorkerProcess.objects.create(id=wid, kind="worker", supervisor_id="sup", hostname="h", pid=2,
                                     last_heartbeat=now - dt.timedelta(seconds=60))
    handles = [jobs.add.enqueue(i, i) for i in range(3)]
    with connect() as conn:
        for wid in ("starved", "forgetful", "orphan"):
            lease(conn, wid, 1)
    Job.objects.filter(id__in=[h.id for h in handles]).update(lease_expires_at=now - dt.timedelta(seconds=30))
    WorkerProcess.objects.filter(id="forgetful").update(last_heartbeat=now)  # beat since: the job is not its
    database_ = db.Database(connection_kwargs(), owner="m", role="test")
    try:
        # the supervisor's beat: two children alive (their own heartbeats silent), "orphan" reaped unrecorded
        database_.run(sql.supervisor_heartbeat, id="sup", children=["starved", "forgetful"])
        assert database_.run(sql.workerprocess_reap, dead_after=settings.WORKER_DEAD_AFTER) == []
        assert WorkerProcess.objects.get(id="orphan").state == "dead"
        taken = {Job.objects.get(id=h.id).leased_by: h.id for h in handles}
        rescued = {j.leased_by for j in rescue.expired(database_, settings, 100, by="m")}
        assert rescued == {"forgetful", "orphan"}
        assert Job.objects.get(id=taken["starved"]).state == "running"
        # once nobody vouches for it either, the silent process is dead and its job comes back
        WorkerProcess.objects.filter(id="starved").update(vouched_at=now - dt.timedelta(seconds=60))
        assert [r.id for r in database_.run(sql.workerprocess_reap, dead_after=settings.WORKER_DEAD_AFTER)] == ["starved"]
        assert [j.leased_by for j in rescue.expired(database_, settings, 100, by="m")] == ["starved"]
    finally:
        database_.close()
