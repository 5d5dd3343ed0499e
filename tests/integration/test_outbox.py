"""The transactional outbox on a real PostgreSQL: events published in the caller's transaction, relayed
into one job per matching subscriber, once (also when relays run twice or at the same time), in key
order for ordered subscribers, pruned after their retention."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

import pgqueue
from pgqueue import db, outbox
from pgqueue.conf import get_settings
from pgqueue.db import connection_kwargs
from pgqueue.enqueuing import registry
from pgqueue.models import Delivery, Job, OutboxEvent
from pgqueue.worker.maintenance import Maintenance
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = pytest.mark.django_db(transaction=True)

PAID = "tests.testapp.jobs.on_order_paid"
ANY_ORDER = "tests.testapp.jobs.on_any_order"


def relay() -> int:
    database = db.Database(connection_kwargs(), owner="relay", role="test")
    try:
        return outbox.relay(database, get_settings())
    finally:
        database.close()


def subscriber_jobs() -> list[tuple[str, int]]:
    return sorted((task.rsplit(".", 1)[1], args[0]) for task, args in Job.objects.values_list("task", "args"))


def run(job: Job) -> object:
    """Run a job's function as a worker would (its stored arguments, JSON round trip included)."""
    return registry.get(job.task).func(*job.args, **job.kwargs)


def test_an_event_published_in_a_rolled_back_transaction_is_never_delivered() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        pgqueue.publish("order.paid", {"order": 1})
        raise RuntimeError("the payment failed after all")
    assert relay() == 0
    assert not OutboxEvent.objects.exists() and not Job.objects.exists()


def test_each_matching_subscriber_gets_one_job_with_the_event() -> None:
    with transaction.atomic():
        paid = pgqueue.publish("order.paid", {"order": 7, "total": "12.50"}, key="order:7")
        shipped = pgqueue.publish("order.shipped", None)
        nobody = pgqueue.publish("invoice.sent", [1, 2])
    assert relay() == 3
    assert subscriber_jobs() == [("on_any_order", paid), ("on_any_order", shipped), ("on_order_paid", paid)]
    relayed = dict(OutboxEvent.objects.values_list("id", "deliveries"))
    assert relayed == {paid: 2, shipped: 1, nobody: 0}
    assert not OutboxEvent.objects.filter(relayed_at__isnull=True).exists()
    job = Job.objects.get(task=PAID)
    assert (job.queue, job.state) == ("marks", "ready")
    published = run(job)
    mark = Mark.objects.get()
    assert mark.label == "paid:order.paid:order:7:{'order': 7, 'total': '12.50'}" and mark.job_id == paid
    assert published == OutboxEvent.objects.get(pk=paid).created_at.isoformat()
    assert set(Delivery.objects.values_list("event_id", "subscriber", "job_id")) == {
        (e, s, j) for j, s, e in ((j.id, j.task, j.args[0]) for j in Job.objects.all())}


def test_a_relay_run_again_never_delivers_twice() -> None:
    ids = pgqueue.publish_many([("order.paid", {"n": i}) for i in range(10)])
    assert relay() == 10
    OutboxEvent.objects.update(relayed_at=None)  # as if the events had not been marked: relay again
    assert relay() == 10
    assert Job.objects.count() == 20 and Delivery.objects.count() == 20
    assert sorted(Job.objects.filter(task=PAID).values_list("args", flat=True)) == sorted(
        Job.objects.filter(task=PAID).values_list("args", flat=True).distinct())
    assert {a[0] for a in Job.objects.filter(task=PAID).values_list("args", flat=True)} == set(ids)


def test_two_relays_at_once_deliver_each_event_once() -> None:
    pgqueue.publish_many([("relay.test", i) for i in range(3000)])
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def run_relay() -> None:
        barrier.wait(10)
        while (n := relay()) > 0:
            counts.append(n)

    threads = [threading.Thread(target=run_relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 3000  # each event claimed by one relay
    assert Job.objects.filter(task="tests.testapp.jobs.relay_first").count() == 3000
    assert Job.objects.filter(task="tests.testapp.jobs.relay_second").count() == 3000
    assert Delivery.objects.values("event_id", "subscriber").distinct().count() == 6000


def test_an_ordered_subscriber_runs_one_keys_events_one_at_a_time_in_publish_order() -> None:
    ids = pgqueue.publish_many([("shipment.created.eu", 1, "parcel-1"), ("shipment.moved", 2, "parcel-1"),
                                ("shipment.moved", 1, "parcel-2"), ("shipment.delivered", 3, "parcel-1")])
    relay()
    rows = list(Job.objects.order_by("id").values_list("args", "state", "concurrency_key"))
    assert [(args[0], state) for args, state, _ in rows] == [
        (ids[0], "ready"), (ids[1], "blocked"), (ids[2], "ready"), (ids[3], "blocked")]
    assert {key for _, _, key in rows} == {"outbox:tests.testapp.jobs.on_shipment:parcel-1",
                                          "outbox:tests.testapp.jobs.on_shipment:parcel-2"}


def test_maintenance_relays_and_prunes_relayed_events_after_their_retention() -> None:
    old = pgqueue.publish("order.paid", 1)
    maintenance = Maintenance("m1", "s1", get_settings(), connection_kwargs())
    try:
        maintenance.tick()
        assert Job.objects.filter(task=PAID).count() == 1
        with connection.cursor() as cur:
            cur.execute("UPDATE pgqueue_outbox SET relayed_at = now() - interval '8 days' WHERE id = %s", [old])
        new = pgqueue.publish("order.paid", 2)
        maintenance.next_prune = 0.0
        maintenance.tick()
    finally:
        maintenance.db.close()
    assert list(OutboxEvent.objects.values_list("id", flat=True)) == [new]
    assert set(Delivery.objects.values_list("event_id", flat=True)) == {new}  # its two subscribers


def test_the_relay_lag_counts_pending_events_and_the_oldest_age() -> None:
    assert outbox.pending_lag() == (0, None)
    pgqueue.publish("order.paid", 1)
    pending, lag = outbox.pending_lag()
    assert pending == 1 and lag is not None and 0 <= lag < 60
    relay()
    assert outbox.pending_lag() == (0, None)


@pytest.mark.parametrize(("pattern", "topic", "matches"), [
    ("order.*", "order.paid", True), ("order.*", "order.paid.late", False), ("order.*", "order", False),
    ("order.**", "order.paid.late", True), ("order.**", "order", False), ("*.paid", "invoice.paid", True),
    ("order.paid", "order.paid", True), ("order.paid", "order.paid2", False), ("a-b.c_d", "a-b.c_d", True),
])
def test_patterns_match_word_by_word(pattern: str, topic: str, matches: bool) -> None:
    assert (outbox._regex([pattern]).fullmatch(topic) is not None) is matches
    assert jobs.on_order_paid.name == PAID  # the subscribers come from importing tests.testapp.jobs



def test_an_async_subscriber_is_awaited(start_worker) -> None:
    from tests.conftest import wait_for

    pgqueue.publish("async.ping", 7)
    start_worker("--queues", "marks")
    job = wait_for(lambda: Job.objects.filter(task="tests.testapp.jobs.on_ping_async", state="succeeded").first(),
                   timeout=30, what="the async subscriber's job")
    assert job.result == "pong 7"
