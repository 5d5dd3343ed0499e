"""The operator's script commands on a real PostgreSQL: pgqueue_status (table and --json), pgqueue_pause,
pgqueue_resume and pgqueue_retry (by id, --dead/--cancelled with filters, --dry-run, bad input)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from pgqueue import db, sql
from pgqueue.models import AuditEntry, Job, QueueState
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def dead(queue: str = "default", task=jobs.give_up) -> int:
    handle = task.options(queue=queue).enqueue()
    Job.objects.filter(pk=handle.id).update(state="dead", finished_at=timezone.now(), reason_code="max_attempts",
                                            attempts=1)
    return handle.id


def test_status_table_and_json() -> None:
    for _ in range(3):
        jobs.noop.enqueue()
    Job.objects.filter(queue="default").update(run_at=timezone.now() - dt.timedelta(seconds=75))
    dead("emails")
    db.run_in_django(sql.workerprocess_register, id="host-1-w0", kind="worker", supervisor="host-1", hostname="host",
                     pid=4242, queues="default,emails", concurrency=8, connections=3)
    call_command("pgqueue_pause", "emails", stdout=io.StringIO())

    text = run("pgqueue_status")
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("QUEUE"))
    assert lines[header].split() == ["QUEUE", "SCHEDULED", "READY", "RUNNING", "BLOCKED", "WAITING", "DEAD", "LAG",
                                     "WORKERS", "STATE"]
    default = lines[header + 1].split()
    assert default[:7] == ["default", "0", "3", "0", "0", "0", "0"]
    assert default[7].startswith("1m1") and default[8:] == ["1", "(8", "threads)", "active"]
    assert lines[header + 2].split()[:7] == ["emails", "0", "0", "0", "0", "0", "1"]
    assert lines[header + 2].endswith("paused")
    assert "worker  host-1-w0  host  4242  default,emails            3" in text
    assert "database connections: 3 held by pgqueue's processes, up to 11 if every job thread uses the ORM" in text
    assert "expired leases: 0 · outbox: 0 pending" in text

    data = json.loads(run("pgqueue_status", "--json"))
    queues = {q["name"]: q for q in data["queues"]}
    assert queues["default"]["counts"]["ready"] == 3 and 74 <= queues["default"]["lag_seconds"] < 140
    assert queues["emails"]["paused"] and queues["emails"]["counts"]["dead"] == 1
    assert [p["id"] for p in data["processes"]] == ["host-1-w0"] and data["processes"][0]["alive"]
    assert data["processes"][0]["connections"] == 3 and data["connections"]["pgqueue"] == 3
    assert data["connections"]["usable"] > 0


def test_status_with_nothing_yet() -> None:
    text = run("pgqueue_status")
    assert "No queues yet." in text and "No pgqueue process is running." in text


def test_pause_and_resume_are_audited() -> None:
    assert run("pgqueue_pause", "emails", "sms") == "paused (workers lease nothing more from them): emails, sms\n"
    assert set(QueueState.objects.filter(paused=True).values_list("name", flat=True)) == {"emails", "sms"}
    assert run("pgqueue_resume", "sms") == "resumed: sms\n"
    assert list(QueueState.objects.filter(paused=True).values_list("name", flat=True)) == ["emails"]
    assert list(AuditEntry.objects.order_by("id").values_list("action", "object_ids")) == [
        ("pause_queue", ["emails", "sms"]), ("resume_queue", ["sms"])]
    with pytest.raises(CommandError, match="Invalid queue name 'a,b'"):
        run("pgqueue_pause", "a,b")
    assert QueueState.objects.count() == 2


def test_retry_dead_jobs_of_a_queue() -> None:
    emails = [dead("emails"), dead("emails")]
    other = dead("default")
    cancelled = jobs.noop.options(queue="emails").enqueue().id
    Job.objects.filter(pk=cancelled).update(state="cancelled", finished_at=timezone.now())
    assert run("pgqueue_retry", "--dead", "--queue", "emails", "--dry-run") == "would retry 2 job(s)\n"
    assert Job.objects.filter(state="dead").count() == 3
    assert run("pgqueue_retry", "--dead", "--queue", "emails") == "retried 2 job(s)\n"
    states = dict(Job.objects.values_list("id", "state"))
    assert [states[i] for i in emails] == ["ready", "ready"]
    assert states[other] == "dead" and states[cancelled] == "cancelled"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.count, sorted(entry.object_ids), entry.scope) == (
        "retry_job", 2, sorted(emails), "--queue=emails --dead")
    assert run("pgqueue_retry", "--cancelled", "--dead", "--task", "tests.testapp.jobs.noop") == "retried 1 job(s)\n"
    assert Job.objects.get(pk=cancelled).state == "ready"


def test_retry_by_id_and_the_limit() -> None:
    ids = [dead() for _ in range(3)]
    ok = jobs.noop.enqueue().id
    Job.objects.filter(pk=ok).update(state="succeeded", finished_at=timezone.now())
    assert run("pgqueue_retry", str(ids[0]), str(ok)) == (
        "retried 1 job(s); 1 could not be retried (running or already finished successfully, or gone)\n")
    assert run("pgqueue_retry", "--dead", "--limit", "1") == "retried 1 job(s)\n"
    assert Job.objects.filter(state="dead").count() == 1


def test_retry_counts_an_id_given_twice_once() -> None:
    job = dead()
    assert run("pgqueue_retry", str(job), str(job), "--dry-run") == "would retry 1 job(s)\n"
    assert run("pgqueue_retry", str(job), str(job)) == "retried 1 job(s)\n"
    assert AuditEntry.objects.get(action="retry_job").selected == 1


@pytest.mark.parametrize(("args", "message"), [
    ([], "pgqueue_retry needs job ids, or --dead and/or --cancelled (not both)."),
    (["5", "--dead"], "pgqueue_retry needs job ids, or --dead and/or --cancelled (not both)."),
    (["--dead", "--limit", "0"], "--limit must be at least 1, got 0."),
    (["--dead", "--queue", " padded "], "Invalid queue name ' padded ': it has spaces around it."),
    (["0"], "job id 0 is out of range: job ids are integers from 1 to 9223372036854775807."),
])
def test_retry_bad_input_changes_nothing(args: list[str], message: str) -> None:
    dead()
    with pytest.raises(CommandError) as error:
        run("pgqueue_retry", *args)
    assert str(error.value) == message
    assert Job.objects.get().state == "dead" and not AuditEntry.objects.exists()


def test_status_says_when_a_table_has_no_row_estimate_yet() -> None:
    from pgqueue.management.commands.pgqueue_status import estimate

    assert estimate(None, "jobs") == "jobs: not estimated yet (never analysed)"
    assert estimate(12_345, "attempts") == "12,345 attempts"
    with connection.cursor() as cur:
        cur.execute("ANALYZE pgqueue_job")
    out = io.StringIO()
    call_command("pgqueue_status", stdout=out)
    assert "rows (estimated): 0 jobs, " in out.getvalue()


def test_status_marks_a_queue_with_waiting_jobs_and_no_worker() -> None:
    jobs.mark.enqueue("waits")  # queue "marks": nobody serves it
    out = io.StringIO()
    call_command("pgqueue_status", stdout=out)
    line = next(li for li in out.getvalue().splitlines() if li.startswith("marks "))
    assert line.endswith("active, no worker serves it"), line


def test_a_worker_names_the_jobs_of_queues_it_does_not_serve() -> None:
    from pgqueue.conf import get_settings
    from pgqueue.worker.launch import unserved_jobs

    unserved = unserved_jobs(("default",), get_settings())
    assert "tests.testapp.jobs.mark" in unserved["marks"] and "default" not in unserved
    assert "marks" not in unserved_jobs(("default", "marks"), get_settings())
