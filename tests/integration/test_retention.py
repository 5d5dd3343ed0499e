"""Retention on a real PostgreSQL: per state and per queue, the archive, pgqueue_prune (counts, --dry-run,
options, bad input), batches that skip rows another transaction holds, and the maintenance role's prune."""

from __future__ import annotations

import datetime as dt
import io
import threading

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from pgqueue.conf import get_settings
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import JobNotFound
from pgqueue.models import ArchivedJob, Attempt, Job
from pgqueue.ops import retention
from pgqueue.ops.explain import explain
from pgqueue.settle import InDjango
from pgqueue.worker.maintenance import Maintenance
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)
DAY = 86400


def finished(state: str, days_ago: float, queue: str = "default", attempts: int = 1) -> int:
    """A finished job (and its attempt rows) that finished `days_ago` days ago."""
    handle = jobs.noop.options(queue=queue).enqueue()
    when = timezone.now() - dt.timedelta(days=days_ago)
    Job.objects.filter(pk=handle.id).update(state=state, finished_at=when, attempts=attempts,
                                            reason_code="max_attempts" if state == "dead" else "")
    for number in range(1, attempts + 1):
        Attempt.objects.create(job_id=handle.id, number=number, worker="w", started_at=when, finished_at=when,
                               duration=0.1, outcome="succeeded" if state == "succeeded" else "failed")
    return handle.id


def left() -> set[int]:
    return set(Job.objects.values_list("id", flat=True))


def test_the_settings_retention_per_state() -> None:
    old_ok, new_ok = finished("succeeded", 2), finished("succeeded", 0.5)
    old_dead, new_dead = finished("dead", 20, attempts=3), finished("dead", 2)
    old_cancelled = finished("cancelled", 15, attempts=0)
    waiting = jobs.noop.enqueue().id  # not finished: never pruned
    Job.objects.filter(pk=waiting).update(created_at=timezone.now() - dt.timedelta(days=60))
    rules = retention.from_settings(get_settings())  # 1 day for succeeded, 14 days for dead and cancelled
    assert retention.count(InDjango("default"), rules) == {"cancelled": 1, "dead": 1, "succeeded": 1}
    assert retention.prune(InDjango("default"), rules) == (3, 4)
    assert left() == {new_ok, new_dead, waiting}
    assert set(Attempt.objects.values_list("job_id", flat=True)) == {new_ok, new_dead}
    assert old_ok and old_dead and old_cancelled


@override_settings(PGQUEUE={"RETENTION": {"audit": {"succeeded": 30 * DAY}, "noisy": {"dead": 3600}}})
def test_rules_per_queue_override_the_state_defaults() -> None:
    kept = finished("succeeded", 2, queue="audit")
    gone = finished("succeeded", 2, queue="default")
    noisy_dead = finished("dead", 0.5, queue="noisy")
    other_dead = finished("dead", 0.5, queue="default")
    retention.prune(InDjango("default"), retention.from_settings(get_settings()))
    assert left() == {kept, other_dead}
    assert gone and noisy_dead


@override_settings(PGQUEUE={"ARCHIVE": True, "ARCHIVE_KEEP_SECONDS": 7 * DAY})
def test_the_archive_keeps_each_job_with_its_attempts_then_lets_them_go() -> None:
    job_id = finished("dead", 20, attempts=2)
    Job.objects.filter(pk=job_id).update(last_error="RuntimeError: boom")
    runner = InDjango("default")
    assert retention.prune(runner, retention.from_settings(get_settings())) == (1, 2)
    assert not Job.objects.filter(pk=job_id).exists()
    archived = ArchivedJob.objects.get(pk=job_id)
    assert (archived.queue, archived.task, archived.state, archived.reason_code) == (
        "default", "tests.testapp.jobs.noop", "dead", "max_attempts")
    assert archived.job["last_error"] == "RuntimeError: boom" and archived.job["attempts"] == 2
    assert [a["number"] for a in archived.attempts] == [1, 2]
    retention.prune_archive(runner, get_settings())
    assert ArchivedJob.objects.filter(pk=job_id).exists()  # archived just now: kept 7 days
    ArchivedJob.objects.filter(pk=job_id).update(archived_at=timezone.now() - dt.timedelta(days=8))
    retention.prune_archive(runner, get_settings())
    assert not ArchivedJob.objects.exists()


@override_settings(PGQUEUE={"KEEP_SUCCEEDED_SECONDS": 2 * DAY, "RETENTION": {"audit": {"succeeded": 30 * DAY}},
                             "ARCHIVE": True})
def test_explain_says_when_a_job_is_pruned_by_the_rule_prune_applies_and_finds_it_archived() -> None:
    audit, plain = finished("succeeded", 1, queue="audit"), finished("succeeded", 1)
    facts = {i: explain(i).facts for i in (audit, plain)}
    for job_id, days in ((audit, 30), (plain, 2)):
        done = Job.objects.get(pk=job_id).finished_at
        assert facts[job_id]["pruned_after"] == (done + dt.timedelta(days=days)).isoformat()
        assert facts[job_id]["pruned_to"] == "the archive (pgqueue_archivedjob)"
    Job.objects.filter(pk__in=[audit, plain]).update(finished_at=timezone.now() - dt.timedelta(days=3))
    retention.prune(InDjango("default"), retention.from_settings(get_settings()))
    assert list(Job.objects.values_list("id", flat=True)) == [audit]  # kept by its queue's rule, as explain said
    with pytest.raises(JobNotFound, match=rf"^No job with id {plain}: it was archived at .* \(succeeded\), past its "
                                          "retention"):
        explain(plain)


def test_batches_skip_rows_another_transaction_holds() -> None:
    held, free = finished("succeeded", 3), finished("succeeded", 3)
    with psycopg.connect(**connection_kwargs()) as other:
        other.execute("SELECT id FROM pgqueue_job WHERE id = %s FOR UPDATE", [held])
        done = threading.Event()
        result: list[tuple[int, int]] = []

        def run() -> None:
            result.append(retention.prune(InDjango("default"), retention.from_settings(get_settings())))
            done.set()
            from django.db import connections

            connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        assert done.wait(10), "the prune waited for a locked row"
        thread.join()
        other.rollback()
    assert result == [(1, 1)]
    assert left() == {held}
    assert free


def test_prune_command_dry_run_then_prune() -> None:
    finished("succeeded", 2)
    finished("succeeded", 3)
    finished("dead", 30)
    kept = finished("dead", 2)
    out = io.StringIO()
    call_command("pgqueue_prune", "--dry-run", stdout=out)
    assert out.getvalue() == "would prune 3 job(s): 1 dead, 2 succeeded\n"
    assert len(left()) == 4
    out = io.StringIO()
    call_command("pgqueue_prune", "--batch", "1", stdout=out)
    assert out.getvalue().startswith("pruned 3 job(s) and 3 attempt(s) in ")
    assert left() == {kept}


def test_prune_command_state_age_and_queue() -> None:
    ok_default = finished("succeeded", 2)
    ok_emails = finished("succeeded", 2, queue="emails")
    dead_emails = finished("dead", 2, queue="emails")
    out = io.StringIO()
    call_command("pgqueue_prune", "--state", "dead", "--older-than", "1d", "--queue", "emails", stdout=out)
    assert out.getvalue().startswith("pruned 1 job(s) and 1 attempt(s)")
    assert left() == {ok_default, ok_emails}
    call_command("pgqueue_prune", "--older-than", "36h", "--archive", stdout=io.StringIO())
    assert left() == set()
    assert set(ArchivedJob.objects.values_list("id", flat=True)) == {ok_default, ok_emails}
    assert dead_emails


@pytest.mark.parametrize(("args", "message"), [
    (["--older-than", "soon"], "age 'soon' is not a duration: write seconds, or a number with s, m, h, d or w "
                               "(\"7d\", \"12h\")."),
    (["--older-than=-5d"], "age '-5d' is not a duration: write seconds, or a number with s, m, h, d or w "
                              "(\"7d\", \"12h\")."),
    (["--older-than", "999999w"], "age '999999w' is over 3153600000 seconds (100 years)."),
    (["--state", "ready"], "state 'ready' is not a finished state; prune one of succeeded, dead, cancelled."),
    (["--batch", "0"], "--batch must be from 1 to 100000, got 0."),
    (["--sleep", "-1"], "--sleep must be from 0 to 60 seconds, got -1.0."),
    (["--duty", "0"], "--duty must be from 0.05 to 1, got 0.0."),
    (["--duty", "nan"], "--duty must be from 0.05 to 1, got nan."),
    (["--queue", "bad,name"], "Invalid queue name 'bad,name': it contains a comma, which separates queue names in "
                              "--queues and PGQUEUE_QUEUES."),
])
def test_prune_command_bad_input_changes_nothing(args: list[str], message: str) -> None:
    finished("succeeded", 5)
    with pytest.raises(CommandError) as error:
        call_command("pgqueue_prune", *args, stdout=io.StringIO())
    assert str(error.value) == message
    assert len(left()) == 1


def test_the_maintenance_leader_prunes_by_the_settings() -> None:
    old, new = finished("succeeded", 2), finished("succeeded", 0.1)
    maintenance = Maintenance("m1", "s1", get_settings(), connection_kwargs())
    try:
        maintenance.tick()
    finally:
        maintenance.db.close()
    assert left() == {new}
    assert old
