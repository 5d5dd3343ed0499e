"""Real `manage.py pgqueue_worker` processes: running jobs, crashes, signals, recycling, database faults."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections
from django.db.models import Count, Sum

import pgqueue
from pgqueue.db import connection_kwargs
from pgqueue.models import Attempt, Job, QueueStat, WorkerProcess
from pgqueue.ops import doctor, monitor
from tests.conftest import ROOT, wait_for
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def states() -> dict[str, int]:
    return dict(Job.objects.values_list("state").annotate(n=Count("id")))


def finished(n: int):
    return lambda: Job.objects.filter(state__in=["succeeded", "dead", "cancelled"]).count() >= n


def worker_pids() -> list[int]:
    return list(WorkerProcess.objects.filter(kind="worker", state="running").values_list("pid", flat=True))


def test_runs_sync_async_retrying_and_failing_jobs(start_worker) -> None:
    ok = jobs.add.enqueue(2, 3)
    aok = jobs.async_add.enqueue(4, 5)
    flaky = jobs.flaky.enqueue("flaky", 2)
    dead = jobs.always_fails.enqueue("dead")
    fatal = jobs.fatal.enqueue("fatal")
    odd = jobs.returns_object.enqueue()
    atimeout = jobs.async_slow.enqueue()
    progress = jobs.with_progress.enqueue(4, "progress")
    nul_error, nul_result = jobs.returns_nul.enqueue(), jobs.result_with_nul.enqueue()
    start_worker("--queues", "default,marks", "--concurrency", "4")
    wait_for(finished(10), what="10 jobs to finish")
    rows = {j.id: j for j in Job.objects.all()}
    assert (rows[ok.id].state, rows[ok.id].result) == ("succeeded", 5)
    assert (rows[aok.id].state, rows[aok.id].result) == ("succeeded", 9)
    assert (rows[flaky.id].state, rows[flaky.id].attempts, rows[flaky.id].result) == ("succeeded", 3, "ok")
    assert (rows[dead.id].state, rows[dead.id].reason_code, rows[dead.id].attempts) == ("dead", "max_attempts", 3)
    assert rows[dead.id].last_error == "RuntimeError: boom dead"
    assert (rows[fatal.id].state, rows[fatal.id].reason_code, rows[fatal.id].attempts) == ("dead", "non_retryable", 1)
    assert rows[odd.id].state == "succeeded" and "repr" in rows[odd.id].result
    assert (rows[atimeout.id].state, rows[atimeout.id].reason_code) == ("dead", "max_attempts")
    assert rows[progress.id].progress == 100.0 and rows[progress.id].progress_message == "step 4 of 4"
    outcomes = list(Attempt.objects.filter(job_id=dead.id).values_list("number", "outcome", "error_class"))
    assert outcomes == [(1, "failed", "RuntimeError"), (2, "failed", "RuntimeError"), (3, "failed", "RuntimeError")]
    assert "Traceback" in Attempt.objects.filter(job_id=dead.id).first().traceback
    assert Attempt.objects.get(job_id=atimeout.id).outcome == "timeout"
    assert Mark.objects.filter(label="fatal").count() == 1
    # text PostgreSQL cannot store is made storable, never allowed to block the worker's completions
    assert rows[nul_result.id].state == "succeeded" and "repr" in rows[nul_result.id].result
    assert "bad\\x00byte" in rows[nul_error.id].last_error


def test_sync_timeout_is_recorded_retried_and_worker_replaced(start_worker) -> None:
    h = jobs.too_slow.enqueue("slow")
    worker = start_worker("--queues", "default,marks", "--concurrency", "2")
    wait_for(finished(1), what="the slow job to go dead")
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "max_attempts", 2)
    assert list(Attempt.objects.values_list("outcome", flat=True)) == ["timeout", "timeout"]
    wait_for(lambda: "exited to be replaced" in worker.output(), what="the stuck worker to be replaced")
    jobs.mark.enqueue("after")
    wait_for(lambda: Mark.objects.filter(label="after").exists(), what="the replacement worker to run jobs")


def test_a_stuck_jobs_retry_runs_in_the_replacement_while_the_old_worker_drains(start_worker) -> None:
    """The replacement of a worker with a job stuck past its timeout starts at once, not after the drain of
    the jobs still running well beside it (up to --shutdown-timeout)."""
    slow_neighbour = jobs.healthy.options(queue="marks").enqueue("neighbour", 8.0)
    stuck = jobs.too_slow.enqueue("stuck")
    worker = start_worker("--queues", "default,marks", "--concurrency", "2")
    wait_for(lambda: Mark.objects.filter(label="stuck").count() == 2, timeout=30, what="the retry to start")
    first, second = Mark.objects.filter(label="stuck").order_by("id")
    assert (second.created_at - first.created_at).total_seconds() < 4  # not after the neighbour's 8 s
    wait_for(lambda: Job.objects.get(pk=slow_neighbour.id).state == "succeeded", timeout=30,
             what="the neighbour to finish in the draining worker")
    assert list(Attempt.objects.filter(job_id=slow_neighbour.id).values_list("outcome", flat=True)) == ["succeeded"]
    wait_for(lambda: Job.objects.get(pk=stuck.id).state == "dead", what="the stuck job's second timeout")
    assert "starting its replacement now" in worker.output()


def test_sigkill_mid_job_runs_it_again_with_both_attempts(start_worker) -> None:
    h = jobs.mark.enqueue("victim", sleep=2.0)
    start_worker("--queues", "marks")
    first = wait_for(lambda: Mark.objects.filter(label="victim").first(), what="the job to start")
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: Job.objects.get(pk=h.id).state == "succeeded", timeout=30, what="the rerun to succeed")
    history = list(Attempt.objects.filter(job_id=h.id).values_list("number", "outcome"))
    assert history == [(1, "lost"), (2, "succeeded")]
    assert Mark.objects.filter(label="victim").count() == 2


def test_whole_supervisor_killed_then_maintenance_of_another_rescues(start_worker) -> None:
    h = jobs.mark.enqueue("orphan", sleep=30)
    first = start_worker("--queues", "marks")
    wait_for(lambda: Mark.objects.filter(label="orphan").exists(), what="the job to start")
    os.killpg(first.proc.pid, signal.SIGKILL)  # supervisor and children gone at once: nobody releases
    first.proc.wait(10)
    Job.objects.filter(pk=h.id).update(kwargs={"sleep": 0})  # let the rerun finish quickly
    start_worker("--queues", "marks")
    wait_for(lambda: Job.objects.get(pk=h.id).state == "succeeded", timeout=40, what="rescue and rerun")
    assert list(Attempt.objects.filter(job_id=h.id).values_list("outcome", flat=True)) == ["lost", "succeeded"]


def test_two_processes_run_2000_jobs_exactly_once(start_worker) -> None:
    handles = jobs.mark.enqueue_many([(f"bulk-{i}",) for i in range(2000)])
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "8")
    wait_for(finished(2000), timeout=120, what="2000 jobs")
    assert states() == {"succeeded": 2000}
    assert Mark.objects.count() == 2000
    assert Mark.objects.values("job_id").distinct().count() == 2000
    assert Attempt.objects.count() == 2000 and not Attempt.objects.exclude(outcome="succeeded").exists()
    assert len(set(Mark.objects.values_list("pid", flat=True))) == 2  # both processes took part
    assert {h.id for h in handles} == set(Mark.objects.values_list("job_id", flat=True))
    # the per-minute counts behind the admin's charts saw every outcome, one row per worker and minute
    assert QueueStat.objects.aggregate(n=Sum("succeeded"))["n"] == 2000


def test_with_shared_connections_two_processes_run_jobs_exactly_once_and_wake_at_once(start_worker) -> None:
    handles = jobs.mark.enqueue_many([(f"shared-{i}",) for i in range(1000)])
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "8", "--share-connections")
    wait_for(finished(1000), timeout=120, what="1000 jobs")
    assert Mark.objects.values("job_id").distinct().count() == Mark.objects.count() == 1000
    assert {h.id for h in handles} == set(Mark.objects.values_list("job_id", flat=True))
    assert len(set(Mark.objects.values_list("pid", flat=True))) == 2
    time.sleep(1.0)  # idle: each worker now waits on its pipe from the supervisor, polling every 0.5 s
    for i in range(5):  # a NOTIFY through the supervisor's pipe wakes a worker well before its next poll
        enqueued = time.monotonic()
        handle = jobs.mark.enqueue(f"woken-{i}")
        wait_for(lambda h=handle: Job.objects.get(pk=h.id).state == "succeeded", timeout=5, interval=0.005)
        assert time.monotonic() - enqueued < 0.3


def test_sigterm_drains_the_running_job(start_worker) -> None:
    h = jobs.mark_after.enqueue("drained", 1.5)
    worker = start_worker("--queues", "marks", "--shutdown-timeout", "20")
    wait_for(lambda: Job.objects.get(pk=h.id).state == "running", what="the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert Job.objects.get(pk=h.id).state == "succeeded"
    assert Mark.objects.filter(label="drained").count() == 1
    assert not WorkerProcess.objects.filter(state__in=["running", "stopping"]).exists()


def test_shutdown_timeout_releases_what_is_left(start_worker) -> None:
    h = jobs.mark_after.enqueue("released", 30)
    worker = start_worker("--queues", "marks", "--shutdown-timeout", "0.5")
    wait_for(lambda: Job.objects.get(pk=h.id).state == "running", what="the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.attempts) == ("ready", 0)
    assert list(Attempt.objects.values_list("outcome", flat=True)) == ["released"]


def test_second_sigint_exits_at_once_and_releases(start_worker) -> None:
    h = jobs.mark_after.enqueue("interrupted", 30)
    worker = start_worker("--queues", "marks", "--shutdown-timeout", "60")
    wait_for(lambda: Job.objects.get(pk=h.id).state == "running", what="the job to start")
    worker.signal(signal.SIGINT)
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    started = time.monotonic()
    worker.wait(20)
    assert time.monotonic() - started < 10
    assert Job.objects.get(pk=h.id).state == "ready"


def test_cancel_running_job_is_seen_at_heartbeat_and_not_retried(start_worker) -> None:
    h = jobs.cancellable.enqueue("cancel-me")
    a = jobs.async_cancellable.enqueue()
    start_worker("--queues", "default,marks", "--concurrency", "3")
    wait_for(lambda: Job.objects.filter(state="running").count() == 2, what="both jobs to start")
    assert pgqueue.cancel([h.id, a.id]) == {h.id: "cancelling", a.id: "cancelling"}
    wait_for(finished(2), what="cancellation")
    for job_id in (h.id, a.id):
        job = Job.objects.get(pk=job_id)
        assert (job.state, job.attempts) == ("cancelled", 1)
        assert list(Attempt.objects.filter(job_id=job_id).values_list("outcome", flat=True)) == ["cancelled"]


def test_max_jobs_recycles_workers(start_worker) -> None:
    jobs.mark.enqueue_many([(f"r{i}",) for i in range(30)])
    worker = start_worker("--queues", "marks", "--max-jobs", "10", "--concurrency", "2")
    wait_for(finished(30), what="30 jobs")
    assert len(set(Mark.objects.values_list("pid", flat=True))) >= 3
    assert "recycling after" in worker.output()


def test_killed_database_sessions_are_survived(start_worker) -> None:
    jobs.mark.enqueue_many([(f"a{i}",) for i in range(50)])
    worker = start_worker("--queues", "marks", "--processes", "2")
    wait_for(finished(50), what="first batch")
    pids = sorted(worker_pids())
    with psycopg.connect(**connection_kwargs(), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'pgqueue %%' AND pid <> pg_backend_pid()").fetchone()[0]
    assert killed == 8  # the supervisor's, maintenance's, and lease, listen and completer of each worker
    connections.close_all()
    jobs.mark.enqueue_many([(f"b{i}",) for i in range(50)])
    wait_for(finished(100), timeout=30, what="second batch after reconnect")
    assert states() == {"succeeded": 100}
    assert sorted(worker_pids()) == pids  # the same processes reconnected: none crashed and was replaced
    assert "crashed" not in worker.output() and "died with" not in worker.output()


@pytest.mark.parametrize(("share", "expected"), [
    (False, ["listener", "listener", "maintenance", "supervisor", "completer", "completer", "worker", "worker"]),
    (True, ["maintenance", "supervisor", "worker", "worker"]),
], ids=["own connections", "--share-connections"])
def test_the_connections_a_two_process_supervisor_holds_when_its_jobs_do_not_use_the_orm(
        start_worker, share: bool, expected: list[str]) -> None:
    jobs.noop.enqueue_many([() for _ in range(200)])
    start_worker("--queues", "default", "--processes", "2", "--concurrency", "4",
                 *(["--share-connections"] if share else []))
    wait_for(finished(200), what="200 jobs")
    database = connections["default"].settings_dict["NAME"]

    def sessions() -> list[str]:
        with psycopg.connect(**connection_kwargs(), autocommit=True) as admin:
            return [r[0] for r in admin.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'", [database]).fetchall()]

    jobs.noop.enqueue_many([() for _ in range(200)])
    wait_for(finished(400), what="200 more jobs")
    names = sorted(n.split(" ")[1] for n in sessions() if n.startswith("pgqueue "))
    assert sorted(names) == sorted(expected)  # and no scheduler: no schedule is declared
    # what the processes registered is what they hold: pgqueue_status and pgqueue_doctor add it up
    assert monitor.snapshot().connections == len(expected)
    budget = doctor.check_connections().detail.splitlines()[1]
    assert budget.startswith(f"1 live supervisor(s) hold {len(expected)} connection(s) when their jobs do not use "
                             f"the ORM, up to {len(expected) + 8} when every job thread does"), budget
    out = io.StringIO()
    call_command("pgqueue_status", stdout=out)
    assert f"database connections: {len(expected)} held by pgqueue's processes, up to {len(expected) + 8} if " \
           "every job thread uses the ORM" in out.getvalue()


@pytest.mark.skipif(not os.environ.get("PGQUEUE_TEST_DEVDB"), reason="restarting needs the embedded server")
def test_database_restart_under_load_loses_nothing(start_worker) -> None:
    from pgqueue import devdb

    jobs.mark.enqueue_many([(f"load{i}", 0.01) for i in range(600)])
    worker = start_worker("--queues", "marks", "--processes", "2", "--concurrency", "4")
    wait_for(lambda: Mark.objects.count() > 50, what="work to be under way")
    connections.close_all()
    devdb.restart(os.environ["PGQUEUE_TEST_DEVDB"])
    pids_before = None
    wait_for(finished(600), timeout=90, what="all jobs after the restart")
    assert states() == {"succeeded": 600}
    assert "crashed" not in worker.output()
    # at least once: every job ran; a job whose completion was cut off may have run twice
    assert Mark.objects.values("label").distinct().count() == 600
    pids_before = worker_pids()
    assert len(pids_before) == 2


@pytest.mark.skipif(not os.environ.get("PGQUEUE_TEST_DEVDB"), reason="stopping needs the embedded server")
def test_after_an_outage_maintenance_waits_before_taking_jobs_from_silent_processes(start_worker) -> None:
    """Everyone is silent during an outage, and the maintenance leader may be back before the others: it must
    give them WORKER_DEAD_AFTER (3 s here) to say they are alive before it counts them dead and takes
    their jobs, which they are still running. Here the supervisor and its workers are also paused
    (SIGSTOP) until 1.5 s after maintenance is back, when all of them have been silent for 3.5 s."""
    import psycopg

    from pgqueue import devdb

    h = jobs.mark.enqueue("through the outage", sleep=8.0)
    worker = start_worker("--queues", "marks", "--processes", "2")
    wait_for(lambda: Mark.objects.filter(label="through the outage").exists(), what="the job to start")
    paused = [worker.proc.pid, *WorkerProcess.objects.filter(kind="worker", state="running").values_list("pid", flat=True)]
    connections.close_all()
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        devdb.restart(os.environ["PGQUEUE_TEST_DEVDB"], down_for=2.0)

        def maintenance_is_back() -> bool:
            with psycopg.connect(**connection_kwargs(), autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE application_name LIKE 'pgqueue maintenance%%'").fetchone()[0] > 0

        wait_for(maintenance_is_back, timeout=15, what="maintenance to reconnect")
        time.sleep(1.5)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: Job.objects.get(pk=h.id).state == "succeeded", timeout=60, what="the job to finish")
    assert Mark.objects.filter(label="through the outage").count() == 1  # it ran once
    assert list(Attempt.objects.filter(job_id=h.id).values_list("outcome", flat=True)) == ["succeeded"]


def test_bad_command_line_arguments_are_clear() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    for args, message in [
        (["--processes", "0"], "--processes must be from 1 to 256"),
        (["--queues", "a,,b"], "Invalid queue name ''"),
        (["--concurrency", "x"], "invalid int value"),
        (["--max-jobs", "-1"], "--max-jobs must be greater than 0"),
    ]:
        result = subprocess.run([sys.executable, "-m", "django", "pgqueue_worker", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


def test_children_stop_when_their_supervisor_is_killed(start_worker) -> None:
    h = jobs.mark_after.enqueue("orphaned", 30)
    worker = start_worker("--queues", "marks", "--shutdown-timeout", "1")
    wait_for(lambda: Job.objects.get(pk=h.id).state == "running", what="the job to start")
    children = list(WorkerProcess.objects.exclude(kind="supervisor").values_list("pid", flat=True))
    os.kill(worker.proc.pid, signal.SIGKILL)  # only the supervisor: its children are orphaned
    worker.proc.wait(10)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(lambda: all(gone(pid) for pid in children), timeout=20, what="the orphaned children to stop")
    job = Job.objects.get(pk=h.id)
    assert (job.state, job.attempts) == ("ready", 0)  # handed back, not left running
    assert list(Attempt.objects.filter(job_id=h.id).values_list("outcome", flat=True)) == ["released"]


def test_a_database_error_of_pgqueues_own_statements_exits_4_and_blames_no_job(start_worker) -> None:
    """A statement of pgqueue's own refused (not a lost connection: here its table is briefly gone, as in a
    botched migration) stops the worker with exit code 4: restarted, its job given back as lost, not crashed."""
    slow = jobs.mark.enqueue("slow", 2.0)
    worker = start_worker("--queues", "marks", "--processes", "1", "--concurrency", "2")
    wait_for(lambda: Mark.objects.filter(label="slow").exists(), what="the job to start")
    first = Mark.objects.get(label="slow").pid
    connections.close_all()
    with psycopg.connect(**connection_kwargs(), autocommit=True) as admin:
        admin.execute("SET lock_timeout = '5s'")
        admin.execute("ALTER TABLE pgqueue_workerprocess RENAME TO pgqueue_workerprocess_away")
        try:
            wait_for(lambda: "stopped on a database error (its jobs are not blamed)" in worker.output(),
                     timeout=10, what="the worker to stop on the refused statement")
        finally:
            admin.execute("ALTER TABLE pgqueue_workerprocess_away RENAME TO pgqueue_workerprocess")
    wait_for(lambda: Job.objects.get(id=slow.id).state == "succeeded", timeout=30, what="the job to run again")
    job = Job.objects.get(id=slow.id)
    assert job.crashes == 0
    attempts = list(Attempt.objects.filter(job_id=slow.id).order_by("number").values_list("outcome", "exit_code"))
    assert attempts[0] == ("lost", 4) and attempts[-1][0] == "succeeded", attempts
    assert Mark.objects.filter(label="slow").exclude(pid=first).exists()  # run again by the restarted worker
    assert "crashed" not in worker.output() and "died with" not in worker.output()
    assert worker.proc.poll() is None  # the supervisor itself rode it out
