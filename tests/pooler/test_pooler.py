"""pgqueue behind PgBouncer in transaction mode: the rig multiplexes; a worker set up for a direct connection
is refused at start; set up for the pooler, two supervisors run every job once (retries, dead letters,
cancel, schedule ticks), exactly one maintenance process leads at any time and another takes over when its
tree is killed; nothing pgqueue does leaks into the pool's other clients; without a LISTEN connection the
workers poll; a prepared statement the pooler lost is reported and never fails a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psycopg
import pytest

import pgqueue
from pgqueue import db, events, sql
from pgqueue.conf import get_settings
from pgqueue.models import Attempt, Job, ScheduleTick, WorkerProcess
from tests.conftest import ROOT, wait_for
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

EVERY_SECOND = json.dumps({"every-second": {"task": "tests.testapp.jobs.mark", "cron": "* * * * * *",
                                            "args": ["tick"]}})


def backend_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_the_rig_multiplexes_one_client_over_several_server_sessions(pooler) -> None:
    pool = pooler()
    with pool.connect() as a, pool.connect() as b, pool.connect() as c:
        first = backend_pid(a)
        # b and c hold both server connections in open transactions (the pool has two), one of them a's
        b.execute("BEGIN")
        c.execute("BEGIN")
        held = {backend_pid(b), backend_pid(c)}
        assert first in held and len(held) == 2
        (b if backend_pid(b) != first else c).execute("COMMIT")  # free the one a did not use
        assert backend_pid(a) != first  # a's next transaction ran in another server session
        for conn in (b, c):
            conn.execute("ROLLBACK")


def test_a_worker_set_up_for_a_direct_connection_is_refused_behind_the_pooler(pooler, start_worker) -> None:
    pool = pooler()
    worker = start_worker("--queues", "marks", env={"DATABASE_URL": pool.url})
    assert worker.wait(30) != 0
    out = worker.output()
    assert "did not reach a connection listening on it within" in out
    assert "Set PGQUEUE['POOLER'] = 'transaction'" in out


def test_two_supervisors_run_every_job_once_with_one_leader_through_the_pool(pooler, start_worker) -> None:
    pool = pooler()
    env = pool.env(PGQUEUE_SCHEDULES=EVERY_SECOND)
    # enqueued through the pool, as a web process behind it would: autocommit, atomic, many at once
    enqueue = ("import django; django.setup()\n"
               "from django.db import transaction\n"
               "from tests.testapp import jobs\n"
               "from tests.testapp.models import Order\n"
               "for i in range(100): jobs.mark.enqueue(f'auto-{i}')\n"
               "for i in range(100):\n"
               "    with transaction.atomic():\n"
               "        Order.objects.create(name=f'o{i}'); jobs.mark.enqueue(f'atomic-{i}')\n"
               "jobs.mark.enqueue_many([(f'many-{i}',) for i in range(200)])\n"
               "jobs.flaky.enqueue('flaky', 1); jobs.always_fails.enqueue('dead')\n"
               "print('enqueued')\n")
    done = subprocess.run([sys.executable, "-c", enqueue], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env})
    assert done.returncode == 0 and "enqueued" in done.stdout, done.stderr[-3000:]
    later = jobs.mark.options(delay=3600).enqueue("never")
    assert pgqueue.cancel(later.id) == {later.id: "cancelled"}

    first = start_worker("--queues", "marks,default", "--processes", "2", "--concurrency", "4", env=env)
    second = start_worker("--queues", "marks,default", "--processes", "2", "--concurrency", "4",
                          "--share-connections", env=env)  # one LISTEN for its workers, on LISTEN_DATABASE
    samples: list[tuple[str | None, int]] = []
    stop = threading.Event()

    def sample() -> None:  # who leads, every 50 ms, by the database's word
        with psycopg.connect(pool.direct, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT holder, token FROM pgqueue_leader WHERE role = 'maintenance' "
                                   "AND expires_at > now()").fetchone()
                samples.append((row[0], row[1]) if row else (None, 0))
                time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wait_for(lambda: Job.objects.filter(task__endswith="mark", state="succeeded").count() >= 400, timeout=90,
             what="400 jobs through the pool")
    wait_for(lambda: Job.objects.filter(task__endswith="always_fails", state="dead").exists(), timeout=30,
             what="the dead letter")
    wait_for(lambda: ScheduleTick.objects.count() >= 4, timeout=30, what="four ticks")

    # exactly one leader so far: one of the two maintenance processes, one token
    leaders = first.leads() + second.leads()
    assert len(leaders) == 1, leaders
    holder, token = leaders[0]
    assert {s for s in samples if s[0] is not None} == {(holder, token)}

    # kill the leader's whole tree: the other maintenance process takes over within the lead's length
    lead_seconds = get_settings().lead_seconds
    victim, survivor = (first, second) if first.leads() else (second, first)
    killed_at = time.monotonic()
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    wait_for(lambda: len(survivor.leads()) == 1, timeout=lead_seconds + 10, what="a new leader")
    took = time.monotonic() - killed_at
    assert took <= lead_seconds + 2 * get_settings().MAINTENANCE_SECONDS + 1.0, took
    new_holder, new_token = survivor.leads()[0]
    assert new_holder != holder and new_token == token + 1
    ticks_before = ScheduleTick.objects.count()
    wait_for(lambda: ScheduleTick.objects.count() >= ticks_before + 2, timeout=30, what="ticks after the kill")
    # the survivor takes the killed tree's jobs back (once its processes are silent for WORKER_DEAD_AFTER)
    # and runs them
    wait_for(lambda: not Job.objects.filter(task__endswith=".mark").exclude(state__in=["succeeded", "cancelled"])
             .exists(), timeout=60, what="the killed tree's jobs rescued and run")
    stop.set()
    sampler.join(5)
    survivor.stop()

    # never two leaders: each sample names at most the one holder of its time, tokens only go up
    live = [s for s in samples if s[0] is not None]
    assert [t for _, t in live] == sorted(t for _, t in live)
    assert {h for h, _ in live} <= {holder, new_holder}
    # every job ran to success, once, but for the attempts the kill interrupted (lost, then run again)
    marked = Mark.objects.exclude(label="tick").exclude(job_id=None)  # what the mark jobs recorded
    assert set(marked.values_list("label", flat=True)) == {f"auto-{i}" for i in range(100)} | \
        {f"atomic-{i}" for i in range(100)} | {f"many-{i}" for i in range(200)}
    lost = set(Attempt.objects.filter(outcome="lost").values_list("job_id", flat=True))
    runs = Counter(marked.values_list("job_id", flat=True))
    assert all(n == 1 or job_id in lost for job_id, n in runs.items()), runs.most_common(3)
    assert Job.objects.get(task__endswith="flaky").state == "succeeded"
    assert Job.objects.get(task__endswith="always_fails").attempts == 3
    assert Job.objects.get(id=later.id).state == "cancelled" and not Mark.objects.filter(label="never").exists()
    ticks = list(ScheduleTick.objects.values_list("tick", flat=True))
    assert len(ticks) == len(set(ticks))  # each tick once, by whichever scheduler
    assert not Job.objects.filter(state="dead", reason_code="crashed").exists()  # no pooler error blamed a job


def leaks(conn: psycopg.Connection) -> list[str]:
    """What a server session shows that a previous client of the pool left behind."""
    found = []
    row = conn.execute("SELECT current_setting('plan_cache_mode'), (SELECT count(*) FROM pg_listening_channels()), "
                       "(SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_locks WHERE "
                       "locktype = 'advisory' AND pid = pg_backend_pid())").fetchone()
    assert row is not None
    mode, channels, prepared, advisory = row
    if mode != "auto":
        found.append(f"plan_cache_mode = {mode}")
    if channels:
        found.append(f"{channels} listening channel(s)")
    if prepared:
        found.append(f"{prepared} prepared statement(s)")
    if advisory:
        found.append(f"{advisory} advisory lock(s)")
    return found


def test_nothing_pgqueue_does_leaks_into_the_pools_other_clients(pooler, start_worker, wait) -> None:
    # no reset after each transaction (PgBouncer's default in transaction mode): a leak would show
    pool = pooler(pool_size=2, reset_always=False)
    with pool.connect() as control:  # the detector sees a leak when there is one
        control.execute("SET plan_cache_mode = force_generic_plan")
        control.execute("LISTEN pgqueue_leak_test")
        with pool.connect() as plain:
            assert wait(lambda: leaks(plain), timeout=5, what="the control's leak seen by another client")
        control.execute("RESET plan_cache_mode")
        control.execute("UNLISTEN *")
    jobs.mark.enqueue_many([(f"leak-{i}",) for i in range(300)])
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "4", env=pool.env(listen=False))
    seen: set[str] = set()
    with pool.connect() as plain:
        while Job.objects.filter(state="succeeded").count() < 300:
            for _ in range(20):
                seen.update(leaks(plain))
        for _ in range(50):  # and once the workers idle between polls
            seen.update(leaks(plain))
    assert seen == set()


def test_without_a_listen_connection_workers_poll(pooler, start_worker) -> None:
    pool = pooler()
    start_worker("--queues", "marks", env=pool.env(listen=False))
    wait_for(lambda: WorkerProcess.objects.filter(kind="worker", state="running").exists(), timeout=30,
             what="a worker")
    time.sleep(1.0)
    waits = []
    for i in range(5):
        handle = jobs.mark.enqueue(f"poll-{i}")
        enqueued = time.monotonic()
        wait_for(lambda h=handle: Job.objects.get(id=h.id).state == "succeeded", timeout=10, interval=0.01)
        waits.append(time.monotonic() - enqueued)
    poll = get_settings().POLL_SECONDS
    assert max(waits) <= poll + 0.5, waits  # found by the next poll, not by a NOTIFY that never arrives


def test_a_prepared_statement_the_pooler_lost_is_reported_and_preparing_stops(pooler) -> None:
    pool = pooler(reset_always=True)  # DISCARD ALL after each statement: what psycopg prepared is gone
    seen: list[dict] = []

    def reconnect(**event: object) -> None:
        seen.append(event)

    events.subscribe("db_reconnect", reconnect)
    params = psycopg.conninfo.conninfo_to_dict(pool.url)
    database = db.Database(params, owner="test", role="test")  # set up as for a direct connection
    try:
        errors = []
        for _ in range(10):  # psycopg prepares a statement after five runs; the sixth meets the pooler
            try:
                database.run(sql.table_estimated_rows, table="pgqueue_job")
            except db.CONNECTION_ERRORS as exc:
                errors.append(exc)
        assert len(errors) == 1 and isinstance(errors[0], db.PoolerError)
        assert "a transaction pooler sits between pgqueue and PostgreSQL" in str(errors[0])
        assert "PGQUEUE['POOLER'] = 'transaction'" in str(errors[0])
        assert [e["kind"] for e in seen] == ["pooler"]
        assert database.conn is not None and database.conn.prepare_threshold is None  # it prepares no more
    finally:
        database.close()
        events.unsubscribe("db_reconnect", reconnect)
