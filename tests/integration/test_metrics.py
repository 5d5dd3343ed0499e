"""Metrics, health and log lines on a real PostgreSQL: the database gauges after a known setup, the /metrics
view's access rules, the health view's verdicts and status codes, the structured attempt log line."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from pgqueue import db, events, operations, sql
from pgqueue.lifecycle import outcome_label
from pgqueue.models import Job, OutboxEvent, WorkerProcess
from pgqueue.ops import health, logs, metrics, monitor
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "s3cr3t-token-for-the-tests-0123456789"


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def register_worker(worker_id: str, queues: str, *, age: float = 0.0) -> None:
    db.run_in_django(sql.workerprocess_register, id=worker_id, kind="worker", supervisor="s", hostname="h", pid=1,
                     queues=queues, concurrency=4, connections=3)
    if age:
        WorkerProcess.objects.filter(id=worker_id).update(last_heartbeat=timezone.now() - dt.timedelta(seconds=age))


def test_database_gauges_after_a_known_setup() -> None:
    for _ in range(3):
        jobs.noop.enqueue()
    jobs.noop.options(queue="later", run_at=timezone.now() + dt.timedelta(hours=1)).enqueue()
    Job.objects.filter(queue="default").update(run_at=timezone.now() - dt.timedelta(seconds=90))
    leased = db.run_in_django(sql.job_lease, queues=["default"], limit=1, worker="w-test", lease_seconds=30)
    assert len(leased) == 1
    dead = jobs.give_up.options(queue="graveyard").enqueue()
    Job.objects.filter(pk=dead.id).update(state="dead", finished_at=timezone.now(), reason_code="max_attempts")
    register_worker("w-live", "default,other")
    register_worker("w-silent", "default", age=60)
    operations.pause(["later"])
    OutboxEvent.objects.create(topic="order.paid", payload={})

    samples = scrape(metrics.exposition().decode())

    assert value(samples, "pgqueue_queue_jobs", queue="default", state="ready") == 2
    assert value(samples, "pgqueue_queue_jobs", queue="default", state="running") == 1
    assert value(samples, "pgqueue_queue_jobs", queue="later", state="scheduled") == 1
    assert value(samples, "pgqueue_queue_jobs", queue="graveyard", state="dead") == 1
    assert value(samples, "pgqueue_queue_jobs", queue="graveyard", state="ready") == 0
    lag = value(samples, "pgqueue_queue_lag_seconds", queue="default")
    assert lag is not None and 89 <= lag < 150
    assert value(samples, "pgqueue_queue_lag_seconds", queue="later") == 0
    assert value(samples, "pgqueue_queue_paused", queue="later") == 1
    assert value(samples, "pgqueue_queue_paused", queue="default") == 0
    assert value(samples, "pgqueue_queue_workers", queue="default") == 1  # the silent one does not count
    assert value(samples, "pgqueue_queue_workers", queue="other") == 1
    assert value(samples, "pgqueue_processes", kind="worker") == 1
    assert value(samples, "pgqueue_outbox_pending") == 1
    assert value(samples, "pgqueue_expired_leases") == 0
    assert value(samples, "pgqueue_locks", kind="unique") == 0
    assert value(samples, "pgqueue_collector_duration_seconds") is not None


def test_counters_follow_the_events_of_this_process() -> None:
    before = scrape(metrics.exposition().decode())
    jobs.add.enqueue(1, 2)
    jobs.add.enqueue(3, 4)
    events.emit("job_finished", worker="w", job_id=1, queue="default", task="tests.testapp.jobs.add", attempt=1,
                outcome="failed", state="scheduled", applied=True, duration=0.25, error_class="RuntimeError")
    events.emit("job_enqueue_refused", queue="default", task="tests.testapp.jobs.add", reason="rate_limit",
                message="too fast")
    after = scrape(metrics.exposition().decode())

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("pgqueue_jobs_enqueued_total", queue="default", task="tests.testapp.jobs.add") == 2
    assert delta("pgqueue_jobs_total", queue="default", task="tests.testapp.jobs.add", outcome="retried") == 1
    assert delta("pgqueue_attempt_duration_seconds_count", queue="default", task="tests.testapp.jobs.add",
                 outcome="retried") == 1
    assert delta("pgqueue_attempt_duration_seconds_bucket", queue="default", task="tests.testapp.jobs.add",
                 outcome="retried", le="0.1") == 0
    assert delta("pgqueue_attempt_duration_seconds_bucket", queue="default", task="tests.testapp.jobs.add",
                 outcome="retried", le="0.25") == 1
    assert delta("pgqueue_enqueue_refused_total", queue="default", reason="rate_limit") == 1


def test_job_ids_issued_counts_what_no_event_in_this_process_saw() -> None:
    """The enqueue counter sees only this process's enqueue path; the database's id counter sees every insert
    (here a replay, which pgqueue makes itself, and a raw INSERT as another program would)."""
    before = scrape(metrics.exposition().decode())
    dead = jobs.noop.enqueue()
    jobs.noop.enqueue()
    Job.objects.filter(pk=dead.id).update(state="dead", finished_at=timezone.now(), reason_code="max_attempts")
    operations.replay([dead.id])
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO pgqueue_job (queue, task, args, kwargs, state, priority, run_at, created_at, "
                       "attempts, max_attempts) SELECT queue, task, args, kwargs, 'ready', priority, now(), now(), 0, "
                       "max_attempts FROM pgqueue_job WHERE id = %s", [dead.id])
    after = scrape(metrics.exposition().decode())
    issued = (value(after, "pgqueue_job_ids_issued_total") or 0) - (value(before, "pgqueue_job_ids_issued_total") or 0)
    enqueued = ((value(after, "pgqueue_jobs_enqueued_total", queue="default", task="tests.testapp.jobs.noop") or 0)
                - (value(before, "pgqueue_jobs_enqueued_total", queue="default", task="tests.testapp.jobs.noop") or 0))
    assert (issued, enqueued) == (4, 2)
    assert value(after, "pgqueue_job_ids_issued_total") == Job.objects.order_by("-id").values_list("id", flat=True)[0]


@pytest.mark.parametrize(("outcome", "state", "label"), [
    ("succeeded", "succeeded", "succeeded"), ("failed", "dead", "dead"), ("failed", "scheduled", "retried"),
    ("timeout", "ready", "retried"), ("cancelled", "cancelled", "cancelled"), ("lost", "ready", "lost"),
    ("lost", "dead", "dead"), ("released", "ready", "released"), ("failed", "blocked", "retried"),
])
def test_outcome_labels(outcome: str, state: str, label: str) -> None:
    assert outcome_label(outcome, state) == label


@override_settings(PGQUEUE={"METRICS_TOKEN": TOKEN})
def test_metrics_view_needs_the_token_or_a_staff_login() -> None:
    client = Client()
    response = client.get("/pgqueue/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/pgqueue/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/pgqueue/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    ok = client.get("/pgqueue/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200
    assert ok["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "pgqueue_queue_jobs" in ok.content.decode()
    assert client.post("/pgqueue/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405

    User.objects.create_user("clerk", password="pw")
    User.objects.create_user("ops", password="pw", is_staff=True)
    clerk, ops = Client(), Client()
    clerk.login(username="clerk", password="pw")
    ops.login(username="ops", password="pw")
    assert clerk.get("/pgqueue/metrics").status_code == 401
    assert ops.get("/pgqueue/metrics").status_code == 200


def test_an_empty_or_placeholder_token_opens_nothing_unless_debug() -> None:
    with override_settings(PGQUEUE={"METRICS_TOKEN": ""}):
        assert Client().get("/pgqueue/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
        assert not metrics.bearer_ok("Bearer ")
    with override_settings(PGQUEUE={"METRICS_TOKEN": "changeme"}):
        assert Client().get("/pgqueue/metrics", HTTP_AUTHORIZATION="Bearer changeme").status_code == 401
        with override_settings(DEBUG=True):
            assert Client().get("/pgqueue/metrics", HTTP_AUTHORIZATION="Bearer changeme").status_code == 200


@pytest.mark.parametrize(("token", "problem"), [
    ("", "it is empty"), ("changeme", "'changeme' is a placeholder, not a secret"),
    ("Secret", "'Secret' is a placeholder, not a secret"),
    ("short-token", "it is 11 characters long; use at least 16 random characters"), (TOKEN, None),
])
def test_token_problems(token: str, problem: str | None) -> None:
    assert metrics.token_problem(token) == problem


def test_health_is_ok_when_queues_are_served_and_fresh() -> None:
    register_worker("w-live", "default")
    jobs.noop.enqueue()
    response = Client().get("/pgqueue/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert [c["name"] for c in body["checks"]] == ["database", "migrations", "queues"]
    assert body["queues"]["default"] == {"ok": True, "ready": 1, "running": 0, "lag_seconds": pytest.approx(0, abs=5),
                                         "max_lag_seconds": 300.0, "workers": 1, "paused": False, "problems": []}


def test_health_fails_for_an_unserved_or_lagging_queue_but_not_a_paused_one() -> None:
    jobs.noop.enqueue()  # default: ready, nobody serves it
    jobs.noop.options(queue="emails").enqueue()
    Job.objects.filter(queue="emails").update(run_at=timezone.now() - dt.timedelta(seconds=120))
    register_worker("w-emails", "emails")
    jobs.noop.options(queue="held").enqueue()
    operations.pause(["held"])
    with override_settings(PGQUEUE={"HEALTH_QUEUE_MAX_LAG_SECONDS": {"emails": 60}}):
        response = Client().get("/pgqueue/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    failing = {c["name"]: c["detail"] for c in body["checks"] if not c["ok"]}
    assert failing == {"queue default": "queue default: no live worker serves it",
                       "queue emails": "queue emails: its oldest ready job has waited 120 s, over 60 s"}
    assert body["queues"]["held"]["ok"] and body["queues"]["held"]["paused"]
    assert body["queues"]["emails"]["max_lag_seconds"] == 60


def test_health_scopes_and_a_bad_scope() -> None:
    jobs.noop.enqueue()  # unserved: only the "all" scope fails for it
    client = Client()
    live = client.get("/pgqueue/health?scope=live")
    assert live.status_code == 200 and [c["name"] for c in live.json()["checks"]] == ["database"]
    ready = client.get("/pgqueue/health?scope=ready")
    assert ready.status_code == 200 and [c["name"] for c in ready.json()["checks"]] == ["database", "migrations"]
    assert client.get("/pgqueue/health").status_code == 503
    assert client.get("/pgqueue/health/").status_code == 503  # the same view with a trailing slash, not a 404
    bad = client.get("/pgqueue/health?scope=deep")
    assert bad.status_code == 400 and bad.json()["error"] == "unknown scope 'deep'; use one of live, ready, all"


def test_health_reports_an_unreachable_database() -> None:
    from django.db import connections

    saved = dict(connections["default"].settings_dict)
    connections["default"].close()
    connections["default"].settings_dict["PORT"] = "1"  # nothing listens there
    try:
        result = health.report("live")
    finally:
        connections["default"].close()
        connections["default"].settings_dict.update(saved)
    assert not result.ok
    assert result.findings[0].name == "database"
    assert result.findings[0].detail.startswith("database 'default' is not reachable: ")


def test_snapshot_counts_blocked_and_waiting_jobs() -> None:
    first = jobs.noop.options(concurrency_key="k", concurrency_limit=1).enqueue()
    jobs.noop.options(concurrency_key="k", concurrency_limit=1).enqueue()
    jobs.noop.options(depends_on=[first]).enqueue()
    snap = monitor.snapshot()
    counts = snap.queue("default").counts
    assert (counts["ready"], counts["blocked"], counts["waiting"]) == (1, 1, 1)
    assert snap.totals.slots_held == 1 and snap.totals.slots == 1
    assert json.loads(json.dumps(snap.to_dict()))["semaphore_slots"] == {"held": 1, "total": 1}


def test_one_structured_line_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    logs.subscribe()
    try:
        with caplog.at_level(logging.INFO, logger="pgqueue.jobs"):
            events.emit("job_finished", worker="w1", job_id=42, queue="emails", task="app.jobs.send", attempt=2,
                        outcome="failed", state="dead", applied=True, duration=1.5, error_class="smtplib.SMTPError",
                        message="SMTPError: 550 mailbox unavailable",
                        traceback="Traceback (most recent call last):\n  ...\nsmtplib.SMTPError: 550 mailbox unavailable\n")
            events.emit("job_finished", worker="w1", job_id=43, queue="emails", task="app.jobs.send", attempt=1,
                        outcome="succeeded", state="succeeded", applied=False, duration=0.1, error_class="")
            events.emit("job_finished", worker="w1", job_id=44, queue="emails", task="app.jobs.send", attempt=1,
                        outcome="failed", state="scheduled", applied=True, duration=0.028,
                        error_class="ConnectionRefusedError", message="ConnectionRefusedError: [Errno 111] Connection refused",
                        run_at=dt.datetime(2026, 12, 4, 17, 20, 5, tzinfo=dt.UTC))
    finally:
        for event, handler in logs.HANDLERS.items():
            events.unsubscribe(event, handler)
    records = [r for r in caplog.records if r.name == "pgqueue.jobs"]
    assert len(records) == 2  # the refused completion has its own warning, not an outcome line
    record, retried = records
    assert retried.levelno == logging.INFO and retried.getMessage() == (
        "job 44 app.jobs.send attempt 1 on queue emails: failed in 0.028 s, next attempt at 2026-12-04 17:20:05 UTC "
        "(ConnectionRefusedError: [Errno 111] Connection refused)")
    assert record.levelno == logging.WARNING  # a dead job: with its traceback
    assert record.getMessage() == (
        "job 42 app.jobs.send attempt 2 on queue emails: dead in 1.500 s (smtplib.SMTPError: 550 mailbox unavailable)"
        "\nTraceback (most recent call last):\n  ...\nsmtplib.SMTPError: 550 mailbox unavailable")
    line = json.loads(logs.JsonFormatter().format(record))
    assert {k: line[k] for k in logs.JOB_FIELDS} == {
        "job_id": 42, "queue": "emails", "task": "app.jobs.send", "attempt": 2, "duration": 1.5, "outcome": "dead",
        "worker": "w1", "error_class": "smtplib.SMTPError"}
    assert line["level"] == "WARNING" and line["logger"] == "pgqueue.jobs"


RETRIED = {"worker": "w1", "job_id": 45, "queue": "emails", "task": "app.jobs.send", "attempt": 1, "outcome": "failed",
           "state": "scheduled", "applied": True, "duration": 0.5, "error_class": "KeyError", "message": "KeyError: 'x'",
           "traceback": "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n"}


@pytest.mark.parametrize(("verbosity", "level", "retry_traceback"),
                         [(0, logging.WARNING, False), (1, logging.INFO, False), (2, logging.INFO, True),
                          (3, logging.DEBUG, True)])
def test_worker_verbosity_sets_the_level_and_the_tracebacks(caplog: pytest.LogCaptureFixture, verbosity: int,
                                                             level: int, retry_traceback: bool) -> None:
    from django.core.management import CommandError, call_command

    logger = logging.getLogger("pgqueue")
    before = logger.level
    try:  # the command configures logging, then refuses the empty --queues before anything starts
        with pytest.raises(CommandError, match="--queues is empty"):
            call_command("pgqueue_worker", queues="", verbosity=verbosity)
        assert logger.level == level
        with caplog.at_level(logging.INFO, logger="pgqueue.jobs"):
            events.emit("job_finished", **RETRIED)
        (record,) = [r for r in caplog.records if r.name == "pgqueue.jobs"]
        assert ("\nTraceback (most recent call last):" in record.getMessage()) is retry_traceback
    finally:
        logger.setLevel(before)
        logs.subscribe()
        for event, handler in logs.HANDLERS.items():
            events.unsubscribe(event, handler)


def test_log_level_wins_over_verbosity() -> None:
    from django.core.management import CommandError, call_command

    logger = logging.getLogger("pgqueue")
    before = logger.level
    try:
        with pytest.raises(CommandError):
            call_command("pgqueue_worker", queues="", verbosity=0, log_level="debug")
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)
        for event, handler in logs.HANDLERS.items():
            events.unsubscribe(event, handler)
