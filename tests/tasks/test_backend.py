"""pgqueue's django.tasks backend without a worker: validation, enqueue in the caller's transaction, results
read back from pgqueue's history, signals, checks, pickling (Django 6.0+; skipped on 5.2)."""

from __future__ import annotations

import asyncio
import datetime as dt
import pickle

import django
import psycopg
import pytest

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6.0")

from asgiref.sync import sync_to_async  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.tasks import TaskResultStatus, task, task_backends  # noqa: E402
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch  # noqa: E402
from django.tasks.signals import task_enqueued  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from pgqueue.db import connection_kwargs  # noqa: E402
from pgqueue.exceptions import InvalidJob  # noqa: E402
from pgqueue.models import Attempt, Job  # noqa: E402
from pgqueue.tasks import STATUS, PgQueueBackend, PgQueueInvalidTask, PgQueueTask  # noqa: E402
from tests.testapp import tasks  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)
DJANGO_61 = django.VERSION >= (6, 1)


def backend() -> PgQueueBackend:
    found = task_backends["default"]
    assert isinstance(found, PgQueueBackend)
    return found


# -- the contract's flags and validation ----------------------------------------------------------------

def test_the_backend_supports_everything_the_contract_names() -> None:
    b = backend()
    assert (b.supports_defer, b.supports_async_task, b.supports_get_result, b.supports_priority) == (True,) * 4
    assert isinstance(tasks.add, PgQueueTask) and tasks.add.get_backend() is b


def test_django_rules_refuse_a_task_before_anything_is_written() -> None:
    with pytest.raises(InvalidTask, match="module level"):
        task(lambda: None)

    def nested() -> None:
        pass

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    with pytest.raises(InvalidTask, match="priority must be a whole number between -100 and 100"):
        tasks.add.using(priority=101)
    with pytest.raises(InvalidTask, match="aware datetime"):
        tasks.add.using(run_after=dt.datetime(2030, 1, 1))
    with pytest.raises(InvalidTask, match="Queue 'elsewhere' is not valid for backend"):
        tasks.add.using(backend="declared", queue_name="elsewhere")
    tasks.add.using(queue_name="elsewhere")  # QUEUES: [] turns the queue check off
    assert Job.objects.count() == 0


def test_bad_calls_get_pgqueues_messages_as_invalid_task_and_write_nothing() -> None:
    with pytest.raises(PgQueueInvalidTask, match="cannot be stored as JSON") as info:
        tasks.add.enqueue({1, 2}, 3)
    assert isinstance(info.value, InvalidTask) and isinstance(info.value, InvalidJob)
    with pytest.raises(PgQueueInvalidTask, match=r"the arguments do not fit add\(a: 'int', b: 'int'\): missing a required argument: 'b'"):
        tasks.add.enqueue(1)
    with override_settings(PGQUEUE={"MAX_PAYLOAD_BYTES": 1_000}), \
            pytest.raises(PgQueueInvalidTask, match="MAX_PAYLOAD_BYTES"):
        tasks.add.enqueue("x" * 2_000, "y")
    with pytest.raises(PgQueueInvalidTask, match="NUL"):
        tasks.add.enqueue("a\x00b", "c")
    assert Job.objects.count() == 0


def test_pgqueue_options_of_a_task_are_checked_when_it_is_declared() -> None:
    from pgqueue.tasks import task as pgqueue_task

    def sample(x: int) -> int:
        return x

    sample.__module__ = tasks.__name__  # module level, as Django requires
    sample.__qualname__ = "sample"
    with pytest.raises(PgQueueInvalidTask, match=r"@task tests.testapp.tasks.sample: max_attempts must be an "
                                                 r"integer from 1 to"):
        pgqueue_task(max_attempts=0)(sample)
    with pytest.raises(PgQueueInvalidTask, match="timeout must be a number of seconds"):
        pgqueue_task(timeout="soon")(sample)
    with pytest.raises(TypeError, match="unknown option"):
        pgqueue_task(retries=3)
    if DJANGO_61:  # @task itself forwards them to the backend's task_class
        with pytest.raises(PgQueueInvalidTask, match="max_attempts must be an integer"):
            task(max_attempts=-1)(sample)
        made = task(max_attempts=4, timeout=30)(sample)
        assert backend().job_for(made).max_attempts == 4 and backend().job_for(made).timeout == 30


def test_backend_options_are_checked_when_the_backend_is_made() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"TASKS\['bad'\]\['OPTIONS'\] has unknown option\(s\) retries"):
        PgQueueBackend("bad", {"OPTIONS": {"retries": 3}})
    with pytest.raises(ImproperlyConfigured, match=r"TASKS\['bad'\]\['OPTIONS'\]: timeout must be"):
        PgQueueBackend("bad", {"OPTIONS": {"timeout": -1}})
    assert backend().job_for(tasks.add).max_attempts == 1  # this suite's OPTIONS


# -- enqueue --------------------------------------------------------------------------------------------

def test_enqueue_writes_a_job_named_by_the_module_path_and_returns_a_ready_result() -> None:
    before = timezone.now()
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY and result.args == [2, 3] and result.kwargs == {}
    assert result.backend == "default" and result.task is tasks.add and before <= result.enqueued_at
    assert (result.started_at, result.finished_at, result.errors, result.worker_ids) == (None, None, [], [])
    job = Job.objects.get(pk=int(result.id))
    assert (job.task, job.queue, job.priority, job.state, job.args) == (
        "tests.testapp.tasks.add", "default", 0, "ready", [2, 3])
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value


def test_priority_queue_and_run_after_reach_the_job() -> None:
    later = timezone.now() + dt.timedelta(hours=1)
    result = tasks.urgent.using(run_after=later).enqueue("u")
    job = Job.objects.get(pk=int(result.id))
    assert (job.queue, job.priority, job.state) == ("tasks-b", 10, "scheduled")
    assert abs((job.run_at - later).total_seconds()) < 0.001
    low = tasks.add.using(priority=-100, queue_name="tasks-b").enqueue(1, 1)
    assert Job.objects.values_list("priority", "queue").get(pk=int(low.id)) == (-100, "tasks-b")
    assert get(result.id).status == TaskResultStatus.READY  # scheduled is READY


def test_enqueue_is_part_of_the_callers_transaction() -> None:
    with transaction.atomic():
        result = tasks.add.enqueue(1, 2)
        with psycopg.connect(**connection_kwargs(), autocommit=True) as other:
            seen = other.execute("SELECT count(*) FROM pgqueue_job WHERE id = %s", [int(result.id)]).fetchone()[0]
        assert seen == 0  # a second connection does not see it before the commit
    assert Job.objects.filter(pk=int(result.id)).exists()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = tasks.add.enqueue(3, 4)
        raise RuntimeError("the view failed")
    assert not Job.objects.filter(pk=int(rolled_back.id)).exists()
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(rolled_back.id)


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_another_databases_transaction_defers_the_job_to_its_commit() -> None:
    with transaction.atomic(using="other"):
        result = tasks.add.enqueue(5, 6)
        assert not Job.objects.filter(pk=int(result.id)).exists()
    assert Job.objects.get(pk=int(result.id)).args == [5, 6]
    with pytest.raises(RuntimeError), transaction.atomic(using="other"):
        never = tasks.add.enqueue(7, 8)
        raise RuntimeError("rolled back")
    assert not Job.objects.filter(pk=int(never.id)).exists()


def test_aenqueue_and_aget_result() -> None:
    async def scenario():
        result = await tasks.async_add.aenqueue(1, 2)
        again = await tasks.async_add.aget_result(result.id)
        await result.arefresh()
        await sync_to_async(connections.close_all)()  # the thread sync_to_async ran the queries in
        return result, again

    result, again = asyncio.run(scenario())
    assert again.id == result.id and again.status == TaskResultStatus.READY and again.args == [1, 2]
    assert result.status == TaskResultStatus.READY and Job.objects.filter(pk=int(result.id)).exists()


def test_task_enqueued_is_sent_and_a_raising_receiver_does_not_undo_the_enqueue() -> None:
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.id))
        raise RuntimeError("receiver broke")

    task_enqueued.connect(receiver)
    try:
        result = tasks.add.enqueue(1, 1)
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [(PgQueueBackend, result.id)]
    assert Job.objects.filter(pk=int(result.id)).exists()


# -- results --------------------------------------------------------------------------------------------

def get(result_id: str):
    return backend().get_result(result_id)


@pytest.mark.parametrize("bad", ["abc", "", "0", "-1", "1.5", " 1", "99999999999999999999", "١٢", None, 1.0,
                                 True, 10**30, "9223372036854775808"])
def test_unknown_or_malformed_ids_are_task_result_does_not_exist(bad) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        get(bad)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(bad)


def test_a_jobs_id_that_is_no_task_is_task_result_does_not_exist() -> None:
    from tests.testapp import jobs

    handle = jobs.add.enqueue(1, 2)
    with pytest.raises(TaskResultDoesNotExist, match="is not a task"):
        get(str(handle.id))
    with pytest.raises(TaskResultDoesNotExist):
        get("99999999")


def test_get_result_gives_the_same_task_and_refuses_another_tasks_id() -> None:
    result = tasks.add.enqueue(1, 2)
    found = tasks.add.get_result(result.id)
    assert found.task is tasks.add and found.task.func is tasks.add.func
    with pytest.raises(TaskResultMismatch):
        tasks.fails.get_result(result.id)
    moved = tasks.add.using(priority=7, queue_name="tasks-b").enqueue(1, 2)
    found = get(moved.id)
    assert (found.task.priority, found.task.queue_name, found.task.func) == (7, "tasks-b", tasks.add.func)


def test_every_job_state_maps_to_a_status() -> None:
    result = tasks.add.enqueue(1, 2)
    for state, status in STATUS.items():
        Job.objects.filter(pk=int(result.id)).update(state=state, leased_by="w-1" if state == "running" else None)
        found = get(result.id)
        assert found.status == status, state
        assert found.is_finished == (state in ("succeeded", "dead", "cancelled"))
    assert set(STATUS) == {s.value for s in __import__("pgqueue.types").types.JobState}


def test_fields_come_from_the_job_row_and_its_attempts() -> None:
    result = tasks.add.enqueue(1, 2)
    job_id = int(result.id)
    t0 = timezone.now() - dt.timedelta(minutes=5)
    rows = [("failed", "ZeroDivisionError", "ZeroDivisionError: division by zero", "Traceback ...zero"),
            ("released", "", "handed back", ""),
            ("lost", "pgqueue.WorkerDied", "worker w-2 died with signal 9 (SIGKILL) during attempt 2", ""),
            ("succeeded", "", "", "")]
    for number, (outcome, error_class, message, trace) in enumerate(rows, start=1):
        Attempt.objects.create(job_id=job_id, number=number, worker=f"w-{number}", outcome=outcome,
                               started_at=t0 + dt.timedelta(minutes=number), finished_at=t0 + dt.timedelta(minutes=number),
                               duration=0.1, error_class=error_class, message=message, traceback=trace)
    Job.objects.filter(pk=job_id).update(state="succeeded", result=3, started_at=t0 + dt.timedelta(minutes=4),
                                         finished_at=t0 + dt.timedelta(minutes=4, seconds=1))
    found = get(result.id)
    assert found.status == TaskResultStatus.SUCCESSFUL and found.return_value == 3
    assert found.worker_ids == ["w-1", "w-3", "w-4"] and found.attempts == 3  # the handed-back one not counted
    assert found.started_at == t0 + dt.timedelta(minutes=1) and found.last_attempted_at == t0 + dt.timedelta(minutes=4)
    assert found.finished_at == t0 + dt.timedelta(minutes=4, seconds=1)
    assert found.enqueued_at == Job.objects.get(pk=job_id).created_at
    assert [e.exception_class_path for e in found.errors] == ["builtins.ZeroDivisionError", "pgqueue.WorkerDied"]
    assert [e.exception_class for e in found.errors] == [ZeroDivisionError, __import__("pgqueue").WorkerDied]
    assert found.errors[0].traceback == "Traceback ...zero"
    assert "died with signal 9 (SIGKILL)" in found.errors[1].traceback  # a lost attempt says its process died
    Job.objects.filter(pk=job_id).update(state="dead", result=None)
    with pytest.raises(ValueError, match="Task failed"):
        _ = get(result.id).return_value


def test_refresh_reloads_the_result() -> None:
    result = tasks.add.enqueue(1, 2)
    Job.objects.filter(pk=int(result.id)).update(state="succeeded", result=3, finished_at=timezone.now())
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3


# -- checks and pickling --------------------------------------------------------------------------------

def test_check_reports_a_database_that_is_not_postgresql() -> None:
    assert backend().check() == []
    with override_settings(PGQUEUE={"DATABASE": "nowhere"}):
        messages = backend().check()
    assert [m.id for m in messages] == ["pgqueue.E011"]
    assert "database 'nowhere' (PGQUEUE['DATABASE']), and that is not configured, not PostgreSQL" in messages[0].msg


def test_check_reports_pgqueue_missing_from_installed_apps(monkeypatch) -> None:
    from django.apps import apps

    monkeypatch.setattr(apps, "is_installed", lambda name: name != "pgqueue")
    messages = backend().check()
    assert [m.id for m in messages] == ["pgqueue.E010"] and "'pgqueue' is not in INSTALLED_APPS" in messages[0].msg


@pytest.mark.skipif(not DJANGO_61, reason="Task and TaskResult pickle from Django 6.1")
def test_tasks_and_results_pickle() -> None:
    result = tasks.add.enqueue(1, 2)
    copy = pickle.loads(pickle.dumps(result))
    assert copy.id == result.id and copy.task.func is tasks.add.func and copy.args == [1, 2]
    assert pickle.loads(pickle.dumps(tasks.retried)).max_attempts == 2


def test_a_task_of_another_backend_runs_here_with_using() -> None:
    from pgqueue.enqueuing import registry

    assert tasks.elsewhere.enqueue(4).return_value == 8  # Django's immediate backend ran it
    moved = tasks.elsewhere.using(backend="default").enqueue(5)
    assert moved.backend == "default" and Job.objects.get(pk=int(moved.id)).task == "tests.testapp.tasks.elsewhere"
    del registry._registry["tests.testapp.tasks.elsewhere"]  # as in a fresh worker process
    found = registry.get("tests.testapp.tasks.elsewhere")  # the registry asks the backend for the Task there
    assert found.task.func is tasks.elsewhere.func


def test_two_pgqueue_backends_take_turns_with_one_task() -> None:
    there = tasks.fails.using(backend="declared").enqueue("x")  # registers its own job (other OPTIONS)
    here = tasks.fails.enqueue("y")  # the default backend's cached job was replaced: it registers again
    assert there.backend == "declared" and here.backend == "default"
    assert Job.objects.filter(pk__in=[int(there.id), int(here.id)]).count() == 2
