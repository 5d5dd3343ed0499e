"""pgqueue_doctor on a real PostgreSQL: every check ok on a healthy database, and each one finding what was
deliberately broken (a dropped or invalid index, dead rows, autovacuum off, an idle transaction, an
expired lease, a silent worker), then ok again once its own fix is applied."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from pgqueue import db
from pgqueue.db import connection_kwargs
from pgqueue.models import Job, Leader, WorkerProcess
from pgqueue.ops import doctor
from pgqueue.ops.doctor import Verdict
from tests.conftest import ROOT, wait_for
from tests.conftest import WorkerProcess as WorkerSubprocess
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


TUNED = "autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02"  # migration 0024


@pytest.fixture
def tuned_autovacuum() -> Iterator[None]:
    """pgqueue_job with the per-table autovacuum settings the autovacuum check asks for (migration 0024 sets
    them; a test that changes them puts them back)."""
    sql(f"ALTER TABLE pgqueue_job SET ({TUNED})")
    yield
    sql(f"ALTER TABLE pgqueue_job SET ({TUNED})")


@pytest.fixture
def lease_index() -> Iterator[None]:
    """The test may drop or break pgqueue_job_ready: it is made again, as its migration made it."""
    yield
    sql("DROP INDEX IF EXISTS pgqueue_job_ready")
    (index,) = [i for i in Job._meta.indexes if i.name == "pgqueue_job_ready"]
    with connection.schema_editor(atomic=False) as editor:
        editor.add_index(Job, index)


def fill_job_table() -> None:
    """A table worth an index: finished history and ready work, analyzed."""
    sql("INSERT INTO pgqueue_job (queue, task, state, finished_at, attempts) "
        "SELECT 'default', 'x.y', 'succeeded', now(), 1 FROM generate_series(1, 20000)")
    sql("INSERT INTO pgqueue_job (queue, task) SELECT 'default', 'x.y' FROM generate_series(1, 2000)")
    sql("ANALYZE pgqueue_job")


def test_every_check_is_ok_on_a_healthy_database(tuned_autovacuum: None) -> None:
    checks = doctor.run_checks()
    assert [c.name for c in checks] == [name for name, _ in doctor.CHECKS]
    assert {c.name: c.verdict for c in checks} == {name: Verdict.OK for name, _ in doctor.CHECKS}, \
        doctor.format_table(checks)
    assert all(c.fix == "" for c in checks)


def test_the_lease_plan_uses_the_ready_index_on_a_full_table(lease_index: None) -> None:
    fill_job_table()
    check = doctor.check_lease_plan()
    assert check.verdict is Verdict.OK, check
    assert "Index Scan using pgqueue_job_ready on pgqueue_job" in check.detail
    assert "Seq Scan on pgqueue_job" not in check.detail


def test_a_dropped_lease_index_is_reported_by_the_index_and_plan_checks_and_its_fix_restores_it(
        lease_index: None) -> None:
    fill_job_table()
    sql("DROP INDEX pgqueue_job_ready")

    indexes = doctor.check_indexes()
    assert indexes.verdict is Verdict.ERROR
    assert indexes.detail == "missing: pgqueue_job_ready on pgqueue_job"
    plan = doctor.check_lease_plan()
    assert plan.verdict is Verdict.ERROR
    assert "Seq Scan on pgqueue_job j" in plan.detail and "every lease scans the whole table" in plan.detail
    assert "pgqueue_job_ready is missing" in plan.fix

    (create,) = [line for line in indexes.fix.splitlines() if line.startswith("CREATE INDEX CONCURRENTLY")]
    sql(create)  # the fix, as an operator would paste it
    assert doctor.check_indexes().verdict is Verdict.OK
    assert doctor.check_lease_plan().verdict is Verdict.OK


def test_a_seq_scan_of_a_small_job_table_is_fine_while_its_index_exists() -> None:
    sql("VACUUM ANALYZE pgqueue_job")  # counted empty: the planner rightly prefers a scan
    check = doctor.check_lease_plan()
    assert check.verdict is Verdict.OK, check
    assert "Seq Scan on pgqueue_job j" in check.detail and "a scan is cheaper at this size" in check.detail


def test_an_invalid_index_is_reported_with_a_reindex(lease_index: None) -> None:
    """A CREATE INDEX CONCURRENTLY that fails (here: it may not wait for an old snapshot) leaves an
    invalid index behind, which no query uses."""
    sql("DROP INDEX pgqueue_job_ready")
    (index,) = [i for i in Job._meta.indexes if i.name == "pgqueue_job_ready"]
    create = str(index.create_sql(Job, connection.schema_editor(collect_sql=True), concurrently=True))
    with psycopg.connect(**connection_kwargs()) as old:
        old.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        old.execute("SELECT 1")  # holds a snapshot that CREATE INDEX CONCURRENTLY must wait out
        sql("SET lock_timeout = '100ms'")
        try:
            with pytest.raises(Exception, match="lock timeout"):
                sql(create)
        finally:
            sql("RESET lock_timeout")
    check = doctor.check_indexes()
    assert check.verdict is Verdict.ERROR
    assert check.detail == "invalid: pgqueue_job_ready on pgqueue_job"
    assert "REINDEX INDEX CONCURRENTLY pgqueue_job_ready;" in check.fix.splitlines()
    sql("REINDEX INDEX CONCURRENTLY pgqueue_job_ready")
    assert doctor.check_indexes().verdict is Verdict.OK


def test_dead_rows_warn_and_autovacuum_off_is_an_error_until_fixed() -> None:
    sql("ALTER TABLE pgqueue_job SET (autovacuum_enabled = false)")  # also keeps autovacuum off the dead rows
    try:
        off = doctor.check_autovacuum()
        assert off.verdict is Verdict.ERROR
        assert "autovacuum off for pgqueue_job" in off.detail
        assert off.fix == "ALTER TABLE pgqueue_job RESET (autovacuum_enabled);"

        sql("INSERT INTO pgqueue_job (queue, task) SELECT 'default', 'x.y' FROM generate_series(1, 3000)")
        sql("DELETE FROM pgqueue_job")
        if connection.pg_version >= 150000:
            sql("SELECT pg_stat_force_next_flush()")  # report the dead rows now, not within the next seconds
        check = wait_for(lambda: (c := doctor.check_tables(min_dead_rows=1000, dead_ratio=0.5)).verdict is
                         Verdict.WARNING and c, what="the dead rows counted")
        assert check.detail.startswith("dead rows make up 50% or more of pgqueue_job")
        assert "3000 dead rows (100%)" in check.detail
        assert "VACUUM (ANALYZE, VERBOSE) pgqueue_job;" in check.fix.splitlines()
        assert "KEEP_SUCCEEDED_SECONDS'] (now 86400)" in check.fix
        sql("VACUUM (ANALYZE) pgqueue_job")  # the fix
        assert doctor.check_tables(min_dead_rows=1000, dead_ratio=0.5).verdict is Verdict.OK
    finally:
        sql(off.fix)
    assert doctor.check_autovacuum().verdict is not Verdict.ERROR


def test_a_fresh_install_has_the_autovacuum_settings_the_doctor_asks_for() -> None:
    check = doctor.check_autovacuum()  # the test database is a fresh install: migrated, nothing else
    assert check.verdict is Verdict.OK, check
    assert "autovacuum_vacuum_scale_factor = 0.01 (table; server 0.2)" in check.detail.splitlines()


def test_autovacuum_left_at_the_server_defaults_is_a_warning_with_per_table_settings() -> None:
    sql("ALTER TABLE pgqueue_job RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)")
    check = doctor.check_autovacuum()
    assert check.verdict is Verdict.WARNING
    assert "autovacuum_vacuum_scale_factor = 0.2 (server)" in check.detail.splitlines()
    assert check.fix == ("ALTER TABLE pgqueue_job SET (autovacuum_vacuum_scale_factor = 0.01, "
                         "autovacuum_analyze_scale_factor = 0.02);")
    sql(check.fix)
    try:
        tuned = doctor.check_autovacuum()
        assert tuned.verdict is Verdict.OK
        assert "autovacuum_vacuum_scale_factor = 0.01 (table; server 0.2)" in tuned.detail.splitlines()
    finally:
        sql(f"ALTER TABLE pgqueue_job SET ({TUNED})")  # as migration 0024 left it


def test_an_idle_transaction_is_listed_then_an_error_and_gone_once_terminated() -> None:
    idle = psycopg.connect(**{**connection_kwargs(), "application_name": "doctor-test-idle"})
    try:
        idle.execute("SELECT txid_current()")  # psycopg opened a transaction: it now holds an xid, idle
        pid = idle.info.backend_pid

        def listed(**limits: float) -> doctor.Check | None:
            check = doctor.check_long_transactions(**limits)
            return check if f"pid {pid} " in check.detail else None

        warning = wait_for(lambda: listed(warn_after=0.1, error_after=3600), what="the idle transaction listed")
        assert warning.verdict is Verdict.WARNING
        (line,) = [x for x in warning.detail.splitlines() if x.startswith(f"pid {pid} ")]
        assert "application 'doctor-test-idle'): idle in transaction for" in line
        assert "holds back VACUUM; query: 'SELECT txid_current()'" in line
        assert str(pid) in warning.fix and "idle_in_transaction_session_timeout" in warning.fix

        error = wait_for(lambda: (c := listed(warn_after=0.1, error_after=0.5)) and c.verdict is Verdict.ERROR,
                         what="the transaction older than error_after")
        assert error

        sql("SELECT pg_terminate_backend(%s)", [pid])  # the fix, for this session only
        wait_for(lambda: not listed(warn_after=0.1, error_after=3600), what="the session gone")
    finally:
        idle.close()


def test_an_expired_lease_is_an_error_saying_maintenance_does_not_run() -> None:
    late = jobs.add.enqueue(1, 2)
    recent = jobs.add.enqueue(3, 4)
    now = timezone.now()
    Job.objects.filter(pk=late.id).update(state="running", leased_by="gone", attempts=1, lease_token=uuid.uuid4(),
                                          started_at=now - dt.timedelta(hours=2),
                                          lease_expires_at=now - dt.timedelta(hours=1))
    assert doctor.check_expired_leases().verdict is Verdict.ERROR
    Job.objects.filter(pk=late.id).update(state="succeeded", finished_at=now)
    Job.objects.filter(pk=recent.id).update(state="running", leased_by="w", attempts=1, lease_token=uuid.uuid4(),
                                            started_at=now, lease_expires_at=now - dt.timedelta(seconds=1))
    assert doctor.check_expired_leases().verdict is Verdict.OK  # maintenance has a few rounds to rescue it

    Job.objects.filter(pk=late.id).update(state="running", finished_at=None)
    check = doctor.check_expired_leases(grace=0)
    assert check.verdict is Verdict.ERROR
    assert check.detail.startswith("2 running job(s) whose lease expired, the oldest 60 min ago (jobs ")
    assert f"{late.id}, {recent.id}" in check.detail
    assert "no maintenance process leads (none holds an unexpired lead in pgqueue_leader)" in check.detail
    assert "Run pgqueue_worker" in check.fix
    # a leader whose lead still runs but who does not rescue them is named, and the fix says to read its log
    Leader.objects.create(role="maintenance", holder="host-1-m0", token=7, expires_at=now + dt.timedelta(seconds=5))
    check = doctor.check_expired_leases(grace=0)
    assert "maintenance process host-1-m0 leads (token 7) but has not rescued them" in check.detail
    assert "stuck or failing" in check.fix
    Leader.objects.filter(role="maintenance").update(expires_at=now - dt.timedelta(seconds=1))  # its lead ran out
    assert "no maintenance process leads" in doctor.check_expired_leases(grace=0).detail


def test_a_silent_worker_still_marked_running_is_an_error() -> None:
    now = timezone.now()
    WorkerProcess.objects.create(id="w-silent", kind="worker", hostname="box", pid=4242, state="running",
                                 last_heartbeat=now - dt.timedelta(minutes=5))
    WorkerProcess.objects.create(id="w-alive", kind="worker", hostname="box", pid=4343, state="running",
                                 last_heartbeat=now)
    WorkerProcess.objects.create(id="w-gone", kind="worker", hostname="box", pid=4444, state="dead",
                                 last_heartbeat=now - dt.timedelta(hours=1))
    job = jobs.add.enqueue(1, 1)
    Job.objects.filter(pk=job.id).update(state="running", leased_by="w-silent", attempts=1,
                                         lease_token=uuid.uuid4(), lease_expires_at=now + dt.timedelta(minutes=1))
    check = doctor.check_dead_workers()
    assert check.verdict is Verdict.ERROR
    lines = check.detail.splitlines()
    assert lines[0] == "worker w-silent (box pid 4242), running, silent for 5 min, holds 1 running job(s)"
    assert lines[1:] == ["no maintenance process leads (none holds an unexpired lead in pgqueue_leader)"]
    assert "kill -TERM <pid>" in check.fix and "Run pgqueue_worker" in check.fix
    WorkerProcess.objects.filter(pk="w-silent").update(state="dead")  # what maintenance does
    assert doctor.check_dead_workers().verdict is Verdict.OK


def test_clock_skew_is_measured_net_of_the_round_trip() -> None:
    check = doctor.check_clock_skew()
    assert check.verdict is Verdict.OK and "round trip" in check.detail
    behind = doctor.check_clock_skew(clock=lambda: time.time() - 5)  # this machine 5 s behind the server
    assert behind.verdict is Verdict.WARNING
    assert behind.detail.startswith("the database clock is 5.0")
    assert "ahead of this machine's" in behind.detail and "NTP" in behind.fix
    assert doctor.check_clock_skew(clock=lambda: time.time() + 30).verdict is Verdict.ERROR


def test_listen_notify_reaches_a_second_connection_on_the_real_server() -> None:
    check = doctor.check_listen()
    assert check.verdict is Verdict.OK, check
    assert check.detail.startswith("a NOTIFY sent through DATABASE 'default' reached a connection listening on "
                                   "DATABASE 'default' in ")


def test_a_notify_that_does_not_arrive_in_time_is_an_error_naming_the_pooler() -> None:
    check = doctor.check_listen(timeout=0)  # nothing arrives within no time at all
    assert check.verdict is Verdict.ERROR
    assert "did not reach a connection listening on DATABASE 'default' within 0 s" in check.detail
    assert "polling every POLL_SECONDS (0.5 s)" in check.detail
    assert "a transaction pooler (PgBouncer in transaction mode" in check.fix
    assert "PGQUEUE['POOLER'] = 'transaction'" in check.fix and "LISTEN_DATABASE" in check.fix


def test_behind_a_transaction_pooler_listen_goes_through_listen_database_or_workers_poll(settings: Any) -> None:
    settings.PGQUEUE = {**settings.PGQUEUE, "POOLER": "transaction"}
    check = doctor.check_listen()
    assert check.verdict is Verdict.WARNING
    assert "LISTEN_DATABASE is not set: workers do not listen; they poll every POLL_SECONDS (0.5 s)" in check.detail
    # a LISTEN_DATABASE on another database never hears the jobs' NOTIFYs ("other" is a database of its own)
    settings.PGQUEUE = {**settings.PGQUEUE, "LISTEN_DATABASE": "other"}
    check = doctor.check_listen(timeout=0.5)
    assert check.verdict is Verdict.ERROR
    assert "listening on LISTEN_DATABASE 'other'" in check.detail
    assert "must reach the same database as DATABASE 'default'" in check.fix


def test_settings_leaving_no_room_for_a_late_heartbeat_are_a_warning(settings: Any) -> None:
    settings.PGQUEUE = {"HEARTBEAT_SECONDS": 2.0, "LEASE_SECONDS": 5.0, "WORKER_DEAD_AFTER": 10.0}
    check = doctor.check_settings()
    assert check.verdict is Verdict.WARNING
    assert check.detail.splitlines()[0] == "LEASE_SECONDS (5 s) is under 3 x HEARTBEAT_SECONDS (2 s)"


def test_unapplied_and_unknown_migrations() -> None:
    recorder = MigrationRecorder(connection)
    last = max(name for app, name in recorder.applied_migrations() if app == "pgqueue")
    recorder.record_unapplied("pgqueue", last)
    try:
        check = doctor.check_migrations()
        assert check.verdict is Verdict.ERROR
        assert check.detail == f"not applied on database 'default': pgqueue.{last}"
        assert check.fix == "python manage.py migrate pgqueue --database default"
    finally:
        recorder.record_applied("pgqueue", last)
    recorder.record_applied("pgqueue", "9999_from_the_future")
    try:
        check = doctor.check_migrations()
        assert check.verdict is Verdict.WARNING and "9999_from_the_future" in check.detail
    finally:
        recorder.record_unapplied("pgqueue", "9999_from_the_future")


def test_the_command_prints_a_table_and_fails_on_errors_or_when_asked_on_warnings() -> None:
    out = io.StringIO()
    call_command("pgqueue_doctor", stdout=out)  # a fresh install: all ok
    assert out.getvalue().rstrip().endswith(f"{len(doctor.CHECKS)} checks: {len(doctor.CHECKS)} ok, 0 warning(s), "
                                            "0 error(s)")
    sql("ALTER TABLE pgqueue_job RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)")
    try:
        out = io.StringIO()
        call_command("pgqueue_doctor", stdout=out)  # the autovacuum warning alone: status 0
        text = out.getvalue()
        assert text.splitlines()[0].split() == ["VERDICT", "CHECK", "DETAIL", "/", "FIX"]
        assert "warning  autovacuum" in text and "fix: ALTER TABLE pgqueue_job SET (" in text
        assert text.rstrip().endswith(
            f"{len(doctor.CHECKS)} checks: {len(doctor.CHECKS) - 1} ok, 1 warning(s), 0 error(s)")
        with pytest.raises(CommandError, match=r"1 check\(s\) failed: autovacuum \(warning\)") as failed:
            call_command("pgqueue_doctor", "--fail-on-warning", stdout=io.StringIO())
        assert failed.value.returncode == 1
    finally:
        sql(f"ALTER TABLE pgqueue_job SET ({TUNED})")

    WorkerProcess.objects.create(id="w-silent", kind="worker", hostname="box", pid=1, state="running",
                                 last_heartbeat=timezone.now() - dt.timedelta(hours=1))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"dead_workers \(error\)") as failed:
        call_command("pgqueue_doctor", "--json", stdout=out)
    assert failed.value.returncode == 1
    rows = json.loads(out.getvalue())
    assert [r["name"] for r in rows] == [name for name, _ in doctor.CHECKS]
    assert set(rows[0]) == {"name", "verdict", "detail", "fix"}
    assert {r["name"]: r["verdict"] for r in rows if r["verdict"] != "ok"} == {"dead_workers": "error"}


def test_the_exit_status_of_manage_py_pgqueue_doctor(tuned_autovacuum: None) -> None:
    env = {**os.environ, "DATABASE_URL": WorkerSubprocess.database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings"}

    def doctor_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "django", "pgqueue_doctor", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    healthy = doctor_run("--json", "--fail-on-warning")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert {r["verdict"] for r in json.loads(healthy.stdout)} == {"ok"}
    WorkerProcess.objects.create(id="w-silent", kind="worker", hostname="box", pid=1, state="running",
                                 last_heartbeat=timezone.now() - dt.timedelta(hours=1))
    broken = doctor_run()
    assert broken.returncode == 1
    assert "error    dead_workers" in broken.stdout
    assert "CommandError: pgqueue_doctor: 1 check(s) failed: dead_workers (error)" in broken.stderr


def test_the_connection_budget_of_the_live_supervisors_against_max_connections() -> None:
    now = timezone.now()

    def supervisor(n: int, *, processes: int = 2, concurrency: int = 4, connections: int = 3,
                   silent: bool = False) -> None:
        seen = now - dt.timedelta(minutes=5) if silent else now
        WorkerProcess.objects.create(id=f"s{n}", kind="supervisor", hostname=f"host{n}", pid=n, last_heartbeat=seen)
        WorkerProcess.objects.create(id=f"s{n}-m", kind="maintenance", supervisor_id=f"s{n}", hostname=f"host{n}",
                                     pid=n + 1, last_heartbeat=seen)
        for w in range(processes):
            WorkerProcess.objects.create(id=f"s{n}-w{w}", kind="worker", supervisor_id=f"s{n}", hostname=f"host{n}",
                                         pid=n + 2 + w, concurrency=concurrency, connections=connections,
                                         last_heartbeat=seen)

    supervisor(1)
    supervisor(2, silent=True)  # a dead one opens nothing
    check = doctor.check_connections()
    assert check.verdict is Verdict.OK, check
    lines = check.detail.splitlines()
    assert lines[1].startswith("1 live supervisor(s) hold 8 connection(s) when their jobs do not use the ORM, up "
                               "to 16 when every job thread does")
    assert lines[2] == "supervisor s1 on host1: 2 worker(s), 8 job thread(s): 8 to 16"
    supervisor(3, connections=1)  # --share-connections: one per worker
    assert doctor.check_connections().detail.splitlines()[3] == \
        "supervisor s3 on host3: 2 worker(s), 8 job thread(s): 4 to 12"
    limit = db.run_in_django(doctor.CONNECTIONS)[0]
    usable = limit.max_connections - limit.reserved
    for n in range(10, 10 + usable // 16):  # every job thread using the ORM would take most of them
        supervisor(n * 10)
    check = doctor.check_connections()
    assert check.verdict is Verdict.WARNING and "Raise max_connections" in check.fix
    for n in range(1000, 1000 + usable // 8):  # even without the ORM they would not fit
        supervisor(n * 10, processes=2, concurrency=1)
    assert doctor.check_connections().verdict is Verdict.ERROR
