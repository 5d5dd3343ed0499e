"""Guardrails on a real PostgreSQL: the per-queue enqueue rate limit (cluster-wide bucket, refused calls write
nothing), refusals counted by metrics and recorded as rows that survive the caller's rollback, and the
admin's list of them."""

from __future__ import annotations

import threading
import time

import pytest
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.test import Client, override_settings

from pgqueue import events
from pgqueue.enqueuing import guardrails
from pgqueue.exceptions import EnqueueRefused, PayloadTooLarge
from pgqueue.models import Job, RateLimit, Refusal
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)
LIMITED = {"ENQUEUE_RATE_LIMITS": {"emails": {"rate": 3, "per": 60}}}


@pytest.fixture
def refusals():
    seen: list[dict] = []

    def handler(**data: object) -> None:
        seen.append(data)

    events.subscribe("job_enqueue_refused", handler)
    yield seen
    events.unsubscribe("job_enqueue_refused", handler)


@override_settings(PGQUEUE=LIMITED)
def test_a_limited_queue_refuses_past_its_rate_and_writes_nothing(refusals) -> None:
    for _ in range(3):
        jobs.noop.options(queue="emails").enqueue()
    with pytest.raises(EnqueueRefused) as refused:
        jobs.noop.options(queue="emails").enqueue()
    message = str(refused.value)
    assert message.startswith("Enqueue refused: queue 'emails' takes at most 3 jobs per 60 s "
                              "(PGQUEUE['ENQUEUE_RATE_LIMITS']); 1 more would go over it. Retry in ")
    assert message.endswith(" s. Nothing was written.")
    assert (refused.value.queue, refused.value.reason) == ("emails", "rate_limit")
    assert 0 < refused.value.retry_after <= 20.5  # one token takes 20 s to come back
    assert Job.objects.filter(queue="emails").count() == 3
    jobs.noop.enqueue()  # other queues are not limited
    assert Job.objects.count() == 4
    assert refusals == [{"queue": "emails", "task": "tests.testapp.jobs.noop", "reason": "rate_limit",
                         "message": message}]
    assert not Refusal.objects.exists()  # RECORD_REFUSALS is off
    bucket = RateLimit.objects.get(key="pgqueue:enqueue:emails")
    assert (bucket.limit, bucket.window) == (3, 60.0) and bucket.tokens < 1


@override_settings(PGQUEUE={"ENQUEUE_RATE_LIMITS": {"emails": {"rate": 5, "per": 60}}})
def test_a_bulk_enqueue_is_taken_whole_or_refused_whole() -> None:
    jobs.noop.enqueue_many([jobs.noop.call() for _ in range(2)])  # default queue: free
    calls = [jobs.noop.options(queue="emails").call() for _ in range(4)]
    jobs.noop.enqueue_many(calls)
    with pytest.raises(EnqueueRefused, match="; 2 more would go over it"):
        jobs.noop.enqueue_many(calls[:2])
    with pytest.raises(EnqueueRefused, match=r"^Enqueue refused: queue 'emails' takes at most 5 jobs per 60 s "
                                             r"\(PGQUEUE\['ENQUEUE_RATE_LIMITS'\]\) and this call enqueues 6 at "
                                             r"once. Nothing was written.$"):
        jobs.noop.enqueue_many([jobs.noop.options(queue="emails").call() for _ in range(6)])
    jobs.noop.options(queue="emails").enqueue()  # the one token left
    assert Job.objects.filter(queue="emails").count() == 5


@override_settings(PGQUEUE={"ENQUEUE_RATE_LIMITS": {"emails": {"rate": 2, "per": 0.2}}})
def test_the_bucket_refills_at_its_rate() -> None:
    jobs.noop.options(queue="emails").enqueue()
    jobs.noop.options(queue="emails").enqueue()
    with pytest.raises(EnqueueRefused) as refused:
        jobs.noop.options(queue="emails").enqueue()
    time.sleep(refused.value.retry_after + 0.05)
    jobs.noop.options(queue="emails").enqueue()
    assert Job.objects.filter(queue="emails").count() == 3


@override_settings(PGQUEUE={"ENQUEUE_RATE_LIMITS": {"emails": {"rate": 20, "per": 3600}}})
def test_the_limit_holds_across_connections_and_open_transactions() -> None:
    """Four threads (each its own Django connection), each enqueueing inside a transaction it keeps open:
    exactly 20 jobs get in, and nobody waited for another's transaction."""
    results: list[str] = []
    barrier = threading.Barrier(4)

    def producer() -> None:
        try:
            with transaction.atomic():
                barrier.wait(10)
                for _ in range(10):
                    try:
                        jobs.noop.options(queue="emails").enqueue()
                        results.append("ok")
                    except EnqueueRefused:
                        results.append("refused")
                barrier.wait(10)  # every thread holds its transaction open until all are done
        finally:
            connections.close_all()

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("ok") == 20 and results.count("refused") == 20
    assert Job.objects.filter(queue="emails").count() == 20


@override_settings(PGQUEUE={**LIMITED, "RECORD_REFUSALS": True, "MAX_PAYLOAD_BYTES": 100})
def test_refusals_are_recorded_outside_the_callers_transaction() -> None:
    with transaction.atomic():
        for _ in range(3):
            jobs.noop.options(queue="emails").enqueue()
        for _ in range(2):
            with pytest.raises(EnqueueRefused):
                jobs.noop.options(queue="emails").enqueue()
        with pytest.raises(PayloadTooLarge):
            jobs.mark.enqueue("x" * 200)
        transaction.set_rollback(True)  # the caller gives up: its jobs go, the refusal records stay
    assert not Job.objects.exists()
    rows = {(r.queue, r.task, r.reason): (r.count, r.jobs) for r in Refusal.objects.all()}
    assert rows == {("emails", "tests.testapp.jobs.noop", "rate_limit"): (2, 2),
                    ("marks", "tests.testapp.jobs.mark", "payload_too_large"): (1, 1)}
    payload = Refusal.objects.get(reason="payload_too_large")
    assert payload.message.startswith("Job tests.testapp.jobs.mark: arguments are 206 bytes as JSON, over "
                                      "PGQUEUE['MAX_PAYLOAD_BYTES'] = 100.")

    User.objects.create_superuser("root", password="pw")
    client = Client()
    client.login(username="root", password="pw")
    page = client.get("/admin/pgqueue/refusal/")
    assert page.status_code == 200
    assert "payload_too_large" in page.content.decode() and "rate_limit" in page.content.decode()


@pytest.mark.parametrize(("limits", "message"), [
    ({"emails": {"rate": 0, "per": 1}}, "PGQUEUE['ENQUEUE_RATE_LIMITS']['emails']['rate'] must be at least 1, got 0.0."),
    ({"emails": {"rate": 5, "per": 0}}, "PGQUEUE['ENQUEUE_RATE_LIMITS']['emails']['per'] must be at least 0.001, "
                                        "got 0.0."),
    ({"emails": {"rate": 5, "per": 1e-300}}, "PGQUEUE['ENQUEUE_RATE_LIMITS']['emails']['per'] must be at least 0.001, "
                                             "got 1e-300."),
    ({"emails": {"rate": 5, "per": float("inf")}}, "settings.PGQUEUE['ENQUEUE_RATE_LIMITS'] has an invalid value "
                                                   "{'emails': {'rate': 5, 'per': inf}}: expected a finite number."),
    ({"emails": {"rate": 5}}, "PGQUEUE['ENQUEUE_RATE_LIMITS']['emails'] must be {'rate': jobs, 'per': seconds}, "
                              "got {'rate': 5.0}."),
    ({"bad,queue": {"rate": 5, "per": 1}}, "Invalid queue name 'bad,queue': it contains a comma, which separates "
                                           "queue names in --queues and PGQUEUE_QUEUES."),
])
def test_bad_limits_are_refused_by_the_settings(limits: dict, message: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from pgqueue.conf import load

    with pytest.raises(ImproperlyConfigured) as error:
        load({"ENQUEUE_RATE_LIMITS": limits})
    assert str(error.value) == message


def test_a_database_that_cannot_answer_the_bucket_lets_the_enqueue_through(caplog) -> None:
    """Fail open: the guardrail's own connection points at a port nothing listens on; the check logs and
    lets the enqueue (on Django's connection) decide."""
    from pgqueue import db
    from pgqueue.conf import load

    settings = load({**LIMITED})
    guardrails._database(settings)  # this thread's connection, then pointed at a dead port
    guardrails._local.database = db.Database({**db.connection_kwargs(), "port": "1"}, owner="t", role="guardrail")
    try:
        guardrails.check_rate([("emails", "t")] * 3, settings)
    finally:
        guardrails._local.database.close()
        guardrails._local.database = None
    assert "could not check the enqueue rate of queue 'emails'" in caplog.text
