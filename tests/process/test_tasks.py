"""django.tasks tasks run by real `manage.py pgqueue_worker` processes (Django 6.0+; skipped on 5.2):
results, context, errors, signals, retries, shutdown, escapes, exactly-once, and rescue after SIGKILL."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6.0")

from django.tasks import TaskResultStatus  # noqa: E402

from pgqueue.models import Job  # noqa: E402
from tests.conftest import wait_for  # noqa: E402
from tests.testapp import tasks  # noqa: E402
from tests.testapp.models import Mark  # noqa: E402

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def finished(*results) -> bool:
    for result in results:
        result.refresh()
    return all(r.is_finished for r in results)


def test_results_context_errors_and_async_tasks_round_trip(start_worker) -> None:
    ok = tasks.add.enqueue(2, 3)
    aok = tasks.async_add.enqueue(4, 5)
    ctx = tasks.with_context.enqueue("ctx")
    bad = tasks.fails.enqueue("boom")
    deep = tasks.complex_value.enqueue()
    urgent = tasks.urgent.enqueue("u")
    start_worker("--queues", "default,tasks-b", "--processes", "1", "--concurrency", "4")
    wait_for(lambda: finished(ok, aok, ctx, bad, deep, urgent), timeout=30, what="the tasks")
    assert (ok.status, ok.return_value, aok.return_value) == (TaskResultStatus.SUCCESSFUL, 5, 9)
    assert ok.attempts == 1 and ok.worker_ids[0].startswith(ok.worker_ids[0].split("-w")[0])
    assert ok.enqueued_at <= ok.started_at == ok.last_attempted_at <= ok.finished_at
    value = ctx.return_value
    assert value["attempt"] == 1 and value["id"] == ctx.id and value["workers"] == ctx.worker_ids
    assert value["status"] == "RUNNING" and value["errors"] == []
    assert bad.status == TaskResultStatus.FAILED and len(bad.errors) == 1  # OPTIONS max_attempts: 1
    error = bad.errors[0]
    assert error.exception_class is ValueError and "ValueError: boom" in error.traceback
    assert "tests/testapp/tasks.py" in error.traceback and "in fails" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = bad.return_value
    assert deep.return_value == {"tuple": [1, 2], "nested": [{"a": [3]}], "none": None, "text": "é"}
    assert urgent.return_value == "u"
    assert Job.objects.get(pk=int(ok.id)).task == "tests.testapp.tasks.add"  # a pgqueue job like any other


def test_retries_give_one_error_and_one_worker_per_attempt(start_worker) -> None:
    retried = tasks.retried.enqueue("r")  # pgqueue.tasks.task(max_attempts=2)
    again = tasks.with_context.using().enqueue("fail-first")
    Job.objects.filter(pk=int(again.id)).update(max_attempts=2)
    start_worker("--queues", "default", "--processes", "1", "--concurrency", "2")
    wait_for(lambda: finished(retried, again), timeout=30, what="the retried tasks")
    assert retried.status == TaskResultStatus.SUCCESSFUL and retried.return_value == 2
    assert retried.attempts == 2 and len(retried.errors) == 1
    assert retried.errors[0].exception_class is RuntimeError and "try again" in retried.errors[0].traceback
    seen = again.return_value  # the second attempt's context saw the first one's error and worker
    assert seen["attempt"] == 2 and len(seen["workers"]) == 2 and seen["errors"] == ["builtins.RuntimeError"]


def test_signals_are_sent_in_the_worker_and_a_raising_receiver_changes_nothing(start_worker) -> None:
    good = tasks.signalled.enqueue(True)
    bad = tasks.signalled.enqueue(False)
    worker = start_worker("--queues", "default", "--processes", "1", "--concurrency", "2")
    wait_for(lambda: finished(good, bad), timeout=30, what="the signalled tasks")
    assert good.status == TaskResultStatus.SUCCESSFUL and good.return_value == "ok"  # despite the raising receiver
    assert bad.status == TaskResultStatus.FAILED and bad.errors[0].exception_class is ValueError
    labels = sorted(Mark.objects.filter(job_id=int(good.id)).values_list("label", flat=True))
    assert labels == ["finished:SUCCESSFUL", "started:RUNNING"]
    labels = sorted(Mark.objects.filter(job_id=int(bad.id)).values_list("label", flat=True))
    assert labels == ["finished:FAILED", "started:RUNNING"]
    log = worker.output()
    # Django's own receiver logs the failure with its traceback (sent from inside the except block)
    assert f"Task id={bad.id} path=tests.testapp.tasks.signalled state=FAILED" in log
    assert "ValueError: signalled failure" in log


def test_system_exit_and_keyboard_interrupt_inside_a_task_fail_it_and_the_worker_goes_on(start_worker) -> None:
    exits = tasks.escapes.enqueue("exit")
    interrupt = tasks.escapes.enqueue("interrupt")
    worker = start_worker("--queues", "default", "--processes", "1", "--concurrency", "2")
    wait_for(lambda: finished(exits, interrupt), timeout=30, what="the escaping tasks")
    assert exits.status == interrupt.status == TaskResultStatus.FAILED
    assert exits.errors[0].exception_class is SystemExit
    assert interrupt.errors[0].exception_class is KeyboardInterrupt
    after = tasks.add.enqueue(1, 1)
    wait_for(lambda: finished(after), timeout=30, what="a task after them")
    assert after.return_value == 2 and worker.proc.poll() is None


def test_sigterm_lets_a_running_task_finish_and_a_second_sigint_hands_it_back(start_worker) -> None:
    slow = tasks.mark.enqueue("slow", 2.0)
    worker = start_worker("--queues", "default", "--processes", "1", "--concurrency", "1")
    wait_for(lambda: Mark.objects.filter(label="slow").exists(), what="the task to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert finished(slow) and slow.status == TaskResultStatus.SUCCESSFUL
    assert Mark.objects.filter(label="slow:done").count() == 1

    long = tasks.mark.enqueue("long", 30.0)
    worker = start_worker("--queues", "default", "--processes", "1", "--concurrency", "1")
    wait_for(lambda: Mark.objects.filter(label="long").exists(), what="the long task to start")
    worker.signal(signal.SIGINT)
    time.sleep(0.5)
    worker.signal(signal.SIGINT)  # the second one: exit now, handing the task back
    worker.wait(30)
    long.refresh()
    assert long.status == TaskResultStatus.READY and long.attempts == 0  # handed back: not an attempt used
    assert not Mark.objects.filter(label="long:done").exists()


def test_three_workers_run_thirty_tasks_exactly_once(start_worker) -> None:
    results = [tasks.mark.enqueue(f"once-{i}") for i in range(30)]
    start_worker("--queues", "default", "--processes", "3", "--concurrency", "4")
    wait_for(lambda: Mark.objects.filter(label__endswith=":done").count() >= 30, timeout=60, what="30 tasks")
    wait_for(lambda: finished(*results), timeout=30, what="their results")
    runs = list(Mark.objects.exclude(label__endswith=":done").values_list("label", flat=True))
    assert sorted(runs) == sorted(f"once-{i}" for i in range(30))  # each once
    assert all(r.status == TaskResultStatus.SUCCESSFUL and r.attempts == 1 for r in results)
    assert len({r.return_value for r in results}) >= 2  # spread over the processes


def test_a_sigkilled_workers_task_is_rescued_and_finishes(start_worker) -> None:
    victim = tasks.mark.enqueue("victim", 1.0)
    worker = start_worker("--queues", "default", "--processes", "1", "--concurrency", "1")
    wait_for(lambda: Mark.objects.filter(label="victim").exists(), what="the task to start")
    first_pid = Mark.objects.get(label="victim").pid
    victim.refresh()
    assert victim.status == TaskResultStatus.RUNNING and victim.attempts == 1
    Job.objects.filter(pk=int(victim.id)).update(max_attempts=3)  # a lost attempt has its own budget anyway
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: finished(victim), timeout=60, what="the rescued task")
    assert victim.status == TaskResultStatus.SUCCESSFUL and victim.return_value != first_pid
    assert victim.attempts == 2 and len(victim.errors) == 1
    assert victim.errors[0].exception_class_path == "pgqueue.WorkerDied"
    assert "died with signal 9 (SIGKILL)" in victim.errors[0].traceback
    assert worker.proc.poll() is None


def test_priority_and_run_after_order_the_runs(start_worker) -> None:
    from datetime import timedelta

    from django.utils import timezone

    later = tasks.urgent.using(queue_name="default", priority=100,
                               run_after=timezone.now() + timedelta(seconds=5)).enqueue("later")
    for label, priority in (("low", -50), ("high", 50), ("middle", 0)):
        tasks.urgent.using(queue_name="default", priority=priority).enqueue(label)
    start_worker("--queues", "default", "--processes", "1", "--concurrency", "1")
    wait_for(lambda: finished(later), timeout=30, what="the deferred task")
    order = list(Mark.objects.order_by("id").values_list("label", flat=True))
    assert order == ["high", "middle", "low", "later"]  # by priority; the deferred one only from its run_after
    assert later.started_at >= later.enqueued_at + timedelta(seconds=4.9)


def test_an_async_tasks_first_attempt_carries_no_other_tasks_errors(start_worker) -> None:
    failing = tasks.async_context.using(priority=10).enqueue(True)
    clean = tasks.async_context.enqueue(False)
    start_worker("--queues", "default", "--processes", "1", "--concurrency", "1")
    wait_for(lambda: finished(failing, clean), timeout=30, what="the async tasks")
    assert failing.status == TaskResultStatus.FAILED and failing.errors[0].exception_class is ValueError
    assert clean.return_value == []  # the failure before it in the same process left nothing in its context
