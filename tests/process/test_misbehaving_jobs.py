"""Jobs that misbehave, run by real worker processes: each is recorded truthfully and harms no other job.

Open transactions, exceptions that cannot be formatted, results that cannot be stored, event loops
blocked past a timeout, modules that fail to import, processes killed mid-job, and jobs that complete in
their own transaction.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.db.models import Count

import pgqueue
from pgqueue.models import Attempt, Job, WorkerProcess
from tests.conftest import wait_for
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

FINISHED = ("succeeded", "dead", "cancelled")


def all_finished(*handles: pgqueue.JobHandle) -> bool:
    return Job.objects.filter(pk__in=[h.id for h in handles], state__in=FINISHED).count() == len(handles)


def attempts(handle: pgqueue.JobHandle) -> list[tuple]:
    return list(Attempt.objects.filter(job_id=handle.id).order_by("id")
                .values_list("outcome", "error_class", "message", "exit_code"))


def no_worker_crashed(worker) -> bool:
    """No process crashed and nothing of pgqueue's own raised: a traceback appears only inside the log
    record of a job that went dead (pgqueue.jobs logs those with the job's traceback)."""
    out = worker.output()
    own, in_job_record = [], False
    for line in out.splitlines():
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \d+ ", line):  # a new log record starts
            in_job_record = " pgqueue.jobs " in line
        if not in_job_record:
            own.append(line)
    rest = "\n".join(own)
    return "crashed" not in rest and "died with" not in rest and "Traceback" not in rest


@pytest.mark.parametrize("conn_max_age", ["0", "60"])
def test_a_job_that_leaves_a_transaction_open_fails_and_later_jobs_commit(start_worker, conn_max_age) -> None:
    bad = [jobs.leaves_atomic_open.enqueue("atomic"), jobs.raw_begin.enqueue("begin"),
           jobs.autocommit_off.enqueue("autocommit")]
    after = [jobs.mark.options(queue="misbehave").enqueue(f"after-{i}") for i in range(3)]
    worker = start_worker("--queues", "misbehave", "--concurrency", "1",
                          env={"PGQUEUE_TEST_CONN_MAX_AGE": conn_max_age})
    wait_for(lambda: all_finished(*bad, *after), what="all six jobs")
    for handle, problem in zip(bad, ["left a transaction.atomic() block open",
                                     "left a transaction open (BEGIN without COMMIT)",
                                     "turned autocommit off"], strict=True):
        job = Job.objects.get(pk=handle.id)
        assert (job.state, job.reason_code, job.error_class) == ("dead", "max_attempts", "pgqueue.TransactionLeftOpen")
        assert problem in job.last_error and "did not happen" in job.last_error
        assert job.result is None
    assert not Mark.objects.filter(label__in=["atomic", "begin", "autocommit"]).exists()  # rolled back
    # the same thread (concurrency 1) runs the next jobs on a clean connection: their writes commit
    assert set(Mark.objects.filter(label__startswith="after-").values_list("label", flat=True)) == {
        "after-0", "after-1", "after-2"}
    assert set(Job.objects.filter(pk__in=[h.id for h in after]).values_list("state", flat=True)) == {"succeeded"}
    assert no_worker_crashed(worker)


def test_exceptions_that_cannot_be_formatted_and_base_exceptions_are_recorded(start_worker) -> None:
    unformattable = jobs.unformattable.enqueue("bad-str")
    system_exit = jobs.raises_system_exit.enqueue("exit")
    long_path = jobs.raises_long_class_path.enqueue("long")
    fine = jobs.mark.options(queue="misbehave").enqueue("fine")
    worker = start_worker("--queues", "misbehave", "--concurrency", "2")
    wait_for(lambda: all_finished(unformattable, system_exit, long_path, fine), what="the four jobs")
    job = Job.objects.get(pk=unformattable.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "max_attempts", 2)
    assert job.error_class == "tests.testapp.jobs.BadStr"
    assert "<str() of the exception raised RuntimeError>" in job.last_error
    assert [a[0] for a in attempts(unformattable)] == ["failed", "failed"]
    assert Mark.objects.filter(label="bad-str").count() == 2
    job = Job.objects.get(pk=system_exit.id)
    assert (job.state, job.error_class, job.last_error) == ("dead", "SystemExit", "SystemExit: 4")
    job = Job.objects.get(pk=long_path.id)
    assert job.state == "dead" and len(job.error_class) == 255 and job.error_class.startswith("tests.testapp.jobs.EEE")
    assert Job.objects.get(pk=fine.id).state == "succeeded"
    assert sorted(WorkerProcess.objects.filter(kind="worker").values_list("state", flat=True)) == ["running"]
    assert no_worker_crashed(worker)


def test_results_that_cannot_be_stored_never_rerun_the_job(start_worker) -> None:
    huge_int = jobs.returns_huge_int.enqueue("huge-int")
    deep = jobs.returns_deep_list.enqueue("deep")
    too_big = jobs.returns_big_result.enqueue("too-big", 5_000)
    fits = jobs.returns_big_result.enqueue("fits", 100)
    worker = start_worker("--queues", "misbehave", "--concurrency", "2", env={"PGQUEUE_MAX_RESULT_BYTES": "2000"})
    wait_for(lambda: all_finished(huge_int, deep, too_big, fits), what="the four jobs")
    job = Job.objects.get(pk=huge_int.id)
    assert job.state == "succeeded" and job.result == {"repr": "<int that cannot be shown>"}
    job = Job.objects.get(pk=deep.id)
    assert job.state == "succeeded" and "repr" in job.result
    job = Job.objects.get(pk=too_big.id)
    assert (job.state, job.reason_code, job.error_class) == ("dead", "result_too_large", "pgqueue.ResultTooLarge")
    assert "over PGQUEUE['MAX_RESULT_BYTES'] = 2000" in job.last_error and job.result is None
    assert Job.objects.get(pk=fits.id).result == "x" * 100
    # each ran exactly once: a finished job is never turned into a re-run
    counts = dict(Mark.objects.values_list("label").annotate(n=Count("id")))
    assert counts == {"huge-int": 1, "deep": 1, "too-big": 1, "fits": 1}
    assert Attempt.objects.count() == 4
    assert no_worker_crashed(worker)


def test_an_async_job_blocking_its_event_loop_times_out_and_the_worker_is_replaced(start_worker) -> None:
    blocker = jobs.blocks_event_loop.enqueue()
    worker = start_worker("--queues", "misbehave", "--concurrency", "2")
    wait_for(lambda: all_finished(blocker), what="the blocking job to time out")
    job = Job.objects.get(pk=blocker.id)
    assert (job.state, job.reason_code) == ("dead", "max_attempts")
    (attempt,) = attempts(blocker)
    assert attempt[0] == "timeout" and "timed out after 0.5 s" in attempt[2]
    duration = Attempt.objects.get(job_id=blocker.id).duration
    assert duration < 3.5  # enforced from outside the blocked loop, not when the job's sleep ended
    wait_for(lambda: "exited to be replaced" in worker.output(), what="the blocked worker to be replaced")
    after = jobs.async_add.options(queue="misbehave").enqueue(1, 2)
    wait_for(lambda: all_finished(after), what="the replacement worker to run async jobs")
    assert Job.objects.get(pk=after.id).result == 3


def test_a_blocked_event_loop_does_not_hold_its_neighbours_and_retry_for_the_drain(start_worker) -> None:
    """Issue #18, class 5: the async jobs beside a job that blocks the event loop for a minute, and that job's
    own retry, waited for the replaced worker's whole drain (--shutdown-timeout, 30 s by default)."""
    import time

    blocker = jobs.blocks_event_loop_long.enqueue()
    neighbour = jobs.async_waits.enqueue(2.0)
    began = time.monotonic()
    worker = start_worker("--queues", "misbehave", "--concurrency", "4")
    wait_for(lambda: all_finished(blocker, neighbour), timeout=40, what="both jobs to finish")
    took = time.monotonic() - began
    assert took < 15, f"{took:.1f} s: the drain was waited for"
    assert Job.objects.get(pk=neighbour.id).state == "succeeded"
    blocked = Job.objects.get(pk=blocker.id)
    assert (blocked.state, blocked.reason_code, blocked.attempts) == ("dead", "max_attempts", 2)
    assert [a[0] for a in attempts(blocker)] == ["timeout", "timeout"]
    outcomes = [a[0] for a in attempts(neighbour)]
    assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) <= {"lost"}, outcomes
    assert no_worker_crashed(worker)


def test_a_module_that_fails_to_import_is_retried_then_runs(start_worker, tmp_path: Path) -> None:
    flag = tmp_path / "deployed"
    flag.touch()
    os.environ["PGQUEUE_TEST_IMPORT_FLAG"] = str(flag)
    try:
        handle = pgqueue.enqueue("tests.testapp.late_jobs.arrives_late")
        never = pgqueue.enqueue("tests.testapp.late_jobs.arrives_late")
    finally:
        del os.environ["PGQUEUE_TEST_IMPORT_FLAG"]
    Job.objects.filter(pk=never.id).update(task="tests.testapp.never_deployed.job")
    flag.unlink()  # this worker does not have the module yet
    worker = start_worker("--queues", "misbehave", env={"PGQUEUE_TEST_IMPORT_FLAG": str(flag),
                                                          "PGQUEUE_RETRY_BACKOFF": "0.5"})
    wait_for(lambda: Attempt.objects.filter(job_id=handle.id).exists(), what="the first failed attempt")
    flag.touch()  # the deploy reaches this worker
    wait_for(lambda: all_finished(handle, never), timeout=30, what="the retry, and the other job to die")
    job = Job.objects.get(pk=handle.id)
    assert (job.state, job.result) == ("succeeded", "deployed") and job.attempts >= 2
    first = attempts(handle)[0]
    assert first[0] == "failed" and "not deployed on this worker yet" in first[2]
    job = Job.objects.get(pk=never.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "unknown_task", 3)
    assert no_worker_crashed(worker)


def test_a_crashing_job_is_found_and_its_neighbours_succeed(start_worker) -> None:
    healthy = [jobs.healthy.enqueue(f"healthy-{i}", 1.0) for i in range(3)]
    crasher = jobs.crashes_process.enqueue("crasher", 0.3)
    worker = start_worker("--queues", "crash", "--concurrency", "4")
    wait_for(lambda: all_finished(crasher, *healthy), timeout=60, what="the crasher to be found")
    job = Job.objects.get(pk=crasher.id)
    assert (job.state, job.reason_code, job.crashes) == ("dead", "crashed", 2)
    history = attempts(crasher)
    assert [a[0] for a in history] == ["lost", "lost"] and {a[3] for a in history} == {-9}
    assert "died with signal 9 (SIGKILL)" in history[-1][2]
    for handle in healthy:
        job = Job.objects.get(pk=handle.id)
        assert job.state == "succeeded", (job.state, attempts(handle))
        assert job.lost_attempts <= 1  # lost only in the first crash, beside the crasher
    assert Mark.objects.filter(label__startswith="healthy-").count() == 3
    assert "died with signal 9" in worker.output()


def test_complete_in_transaction_survives_a_kill_after_commit(start_worker) -> None:
    dies = jobs.completes_in_transaction.enqueue("dies", True)
    lives = jobs.completes_in_transaction.enqueue("lives", False)
    worker = start_worker("--queues", "misbehave", "--concurrency", "1")
    wait_for(lambda: all_finished(dies, lives), timeout=40, what="both jobs")
    wait_for(lambda: "died with signal 9" in worker.output(), what="the kill to be seen")
    for handle, label in ((dies, "dies"), (lives, "lives")):
        job = Job.objects.get(pk=handle.id)
        assert (job.state, job.result, job.attempts) == ("succeeded", {"label": label}, 1)
        assert [a[0] for a in attempts(handle)] == ["succeeded"]  # the kill after the commit re-ran nothing
        assert Mark.objects.filter(label=label).count() == 1
    assert "lease lost" not in worker.output()


def test_a_job_starving_its_process_heartbeat_runs_once_and_is_not_rescued(start_worker) -> None:
    # 9 s holding the interpreter: past LEASE_SECONDS (5) and WORKER_DEAD_AFTER (3) of the test settings, with
    # another process idle beside it that would run a rescued copy at once
    starved = jobs.holds_interpreter.enqueue("starved", 9)
    worker = start_worker("--queues", "misbehave", "--processes", "2", "--concurrency", "2")
    wait_for(lambda: all_finished(starved), timeout=40, what="the starving job to finish")
    job = Job.objects.get(pk=starved.id)
    assert (job.state, job.attempts, job.lost_attempts) == ("succeeded", 1, 0)
    assert [a[0] for a in attempts(starved)] == ["succeeded"]
    assert Mark.objects.filter(label="starved").count() == 1  # started once: no second copy ran beside it
    assert Mark.objects.filter(label="starved:end").count() == 1
    assert no_worker_crashed(worker) and "job_rescued" not in worker.output()


def test_a_job_holding_the_interpreter_past_its_timeout_is_ended_by_the_supervisor(start_worker) -> None:
    hog = jobs.holds_interpreter_past_timeout.enqueue("hog")
    beside = jobs.healthy.options(queue="misbehave").enqueue("beside", 1.0)
    worker = start_worker("--queues", "misbehave", "--concurrency", "2")
    began = wait_for(lambda: Mark.objects.filter(label="hog").first(), what="the hog to start")
    wait_for(lambda: all_finished(hog, beside), timeout=40, what="the hog's timeout to be recorded")
    job = Job.objects.get(pk=hog.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "max_attempts", 1)
    [(outcome, error_class, message, exit_code)] = attempts(hog)
    assert (outcome, error_class, exit_code) == ("timeout", "TimeoutError", -9)
    assert "held its process's interpreter" in message
    took = (job.finished_at - began.created_at).total_seconds()
    assert took < 2 + 5 + 4, took  # its timeout, STALL_GRACE, a supervisor round
    assert Mark.objects.filter(label="hog").count() == 1
    # the job beside it lost its process, and ran again in the replacement
    assert Job.objects.get(pk=beside.id).state == "succeeded"
    assert "killing the process" in worker.output()


def test_an_idle_worker_is_not_taken_for_a_stalled_one_after_a_job_with_a_timeout(start_worker) -> None:
    """The beacon keeps the deadline of a job that ended until the loop shows it again: a loop asleep until
    its next heartbeat (8 s here) must wake to do so, or its supervisor would see a stall and kill it."""
    slow_beat = {"PGQUEUE_HEARTBEAT_SECONDS": "8", "PGQUEUE_LEASE_SECONDS": "20", "PGQUEUE_WORKER_DEAD_AFTER": "30",
                 "PGQUEUE_POLL_SECONDS": "30"}
    first = jobs.add.options(queue="misbehave", timeout=0.5).enqueue(1, 2)
    worker = start_worker("--queues", "misbehave", env=slow_beat)
    wait_for(lambda: all_finished(first), what="the quick job")
    pid = WorkerProcess.objects.get(kind="worker", state="running").pid
    import time

    time.sleep(8)  # past its deadline + STALL_GRACE (5 s), asleep
    assert "killing the process" not in worker.output()
    assert WorkerProcess.objects.get(kind="worker", state="running").pid == pid
    later = jobs.add.options(queue="misbehave").enqueue(3, 4)
    wait_for(lambda: all_finished(later), what="the same worker to run the next job")
