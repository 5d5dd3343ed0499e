"""The outbox with real worker processes: the maintenance leader relays events to subscriber jobs while it
is SIGKILLed mid-run, delivering each (event, subscriber) exactly once; an ordered subscriber's events of
one key run in publish order."""

from __future__ import annotations

import os
import signal

import pytest

import pgqueue
from pgqueue.models import Delivery, Job, OutboxEvent, WorkerProcess
from tests.conftest import wait_for
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def test_a_relay_killed_mid_run_delivers_every_event_to_every_subscriber_once(start_worker) -> None:
    n = 30_000
    for start in range(0, n, 10_000):
        pgqueue.publish_many([("relay.test", i) for i in range(start, start + 10_000)])
    worker = start_worker("--queues", "marks")
    wait_for(lambda: Delivery.objects.exists(), timeout=60, what="the relay's first commit")
    leader = WorkerProcess.objects.filter(kind="maintenance", state="running").first()
    assert leader is not None
    os.kill(leader.pid, signal.SIGKILL)
    assert Delivery.objects.count() < 2 * n, "the relay was done before the kill: the test proves nothing"
    wait_for(lambda: not OutboxEvent.objects.filter(relayed_at__isnull=True).exists(), timeout=180,
             what="the restarted relay to finish")
    assert Delivery.objects.count() == 2 * n
    assert Delivery.objects.values("event_id", "subscriber").distinct().count() == 2 * n
    assert Job.objects.filter(task="tests.testapp.jobs.relay_first").count() == n
    assert Job.objects.filter(task="tests.testapp.jobs.relay_second").count() == n
    assert "maintenance" in worker.output()


def test_an_ordered_subscriber_runs_each_keys_events_in_publish_order(start_worker) -> None:
    pgqueue.publish_many([("shipment.moved", seq, f"parcel-{seq % 3}") for seq in range(30)])
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "8")
    wait_for(lambda: Job.objects.filter(task="tests.testapp.jobs.on_shipment", state="succeeded").count() == 30,
             timeout=60, what="30 shipment events")
    for key in ("parcel-0", "parcel-1", "parcel-2"):
        seen = [int(label.rsplit(":", 1)[1]) for label in
                Mark.objects.filter(label__startswith=f"ship:{key}:").order_by("id").values_list("label", flat=True)]
        assert seen == sorted(seen) and len(seen) == 10, (key, seen)
