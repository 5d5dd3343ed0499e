"""The completion path on a real PostgreSQL: refused rows never sink a batch, never turn a finished job
into a re-run, and a job whose completion is still queued keeps its lease; completing in the job's own
transaction."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from django.db import transaction

from pgqueue import db, sql
from pgqueue.conf import get_settings
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import JobCancelled
from pgqueue.lifecycle import AttemptEnd, Ending, RetryPolicy, decide
from pgqueue.models import Attempt, Job
from pgqueue.types import LeasedJob
from pgqueue.worker import rescue
from pgqueue.worker.completer import Completer
from pgqueue.worker.executor import complete_in_transaction
from pgqueue.worker.heartbeat import Heartbeat
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0)


def database(role: str = "test") -> db.Database:
    return db.Database(connection_kwargs(), owner="w1", role=role)


def lease(n: int) -> list[LeasedJob]:
    with psycopg.connect(**connection_kwargs(), autocommit=True) as conn, conn.cursor() as cur:
        return db.run(cur, sql.job_lease, queues=["default"], limit=n, worker="w1", lease_seconds=30)


def returned(job: LeasedJob, result: str) -> AttemptEnd:
    return AttemptEnd(how=Ending.RETURNED, worker="w1", finished_at=dt.datetime.now(dt.UTC), result=result)


def test_a_refused_row_is_split_out_and_stored_without_its_details() -> None:
    jobs.add.enqueue_many([(i, i) for i in range(4)])
    leased = sorted(lease(4), key=lambda j: j.id)
    transitions = [decide(j, returned(j, str(j.id)), POLICY) for j in leased]
    transitions[2] = transitions[2]._replace(result="{not json")  # the database refuses this one
    completer = Completer(database(), "w1", get_settings())
    completer.start()
    for t in transitions:
        completer.add(t)
    assert completer.close(timeout=10)
    completer.database.close()
    rows = {j.id: j for j in Job.objects.all()}
    assert {rows[j.id].state for j in leased} == {"succeeded"}  # nothing re-runs, the bad one included
    assert [rows[j.id].result for j in leased] == [leased[0].id, leased[1].id, None, leased[3].id]
    bad = Attempt.objects.get(job_id=leased[2].id)
    assert (bad.outcome, bad.error_class) == ("succeeded", "pgqueue.UnstorableOutcome")
    assert "could not store this attempt's details" in bad.message and "invalid input syntax for type json" in bad.message
    assert Attempt.objects.count() == 4


def test_a_job_whose_completion_is_queued_keeps_its_lease() -> None:
    jobs.add.enqueue(1, 1)
    (job,) = lease(1)
    Job.objects.filter(pk=job.id).update(lease_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    completer = Completer(database("completer"), "w1", get_settings())  # not started: the write is "slow"
    completer.add(decide(job, returned(job, "2"), POLICY))
    assert completer.in_flight() == [(job.id, job.lease_token)]
    beat_db = database("worker")
    result = Heartbeat(beat_db, "w1", lease_seconds=300).beat(completer.in_flight())
    assert result is not None and result.extended == {job.id}
    assert Job.objects.get(pk=job.id).lease_expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=200)
    completer.start()
    assert completer.close(timeout=10)
    assert completer.in_flight() == []
    assert Job.objects.get(pk=job.id).state == "succeeded"
    for d in (beat_db, completer.database):
        d.close()


def test_complete_in_transaction_commits_with_the_work_and_a_rescued_job_cannot() -> None:
    settings = get_settings()
    jobs.add.enqueue(1, 1)
    jobs.add.enqueue(2, 2)
    first, second = sorted(lease(2), key=lambda j: j.id)
    with transaction.atomic():
        Mark.objects.create(label="work")
        complete_in_transaction(first, "w1", settings, {"done": True})
    job = Job.objects.get(pk=first.id)
    assert (job.state, job.result) == ("succeeded", {"done": True})
    # rolled back with the work: neither the completion nor the work happened
    with pytest.raises(RuntimeError, match="boom"), transaction.atomic():
        Mark.objects.create(label="rolled-back")
        complete_in_transaction(second, "w1", settings, None)
        raise RuntimeError("boom")
    assert Job.objects.get(pk=second.id).state == "running"
    # rescued while it ran (a zombie): completing in its transaction raises and rolls its work back
    rescuer = database("supervisor")
    rescue.held_by_worker(rescuer, settings, "w1", -9)
    rescuer.close()
    with pytest.raises(JobCancelled, match="its lease is gone"), transaction.atomic():
        Mark.objects.create(label="zombie")
        complete_in_transaction(second, "w1", settings, None)
    assert list(Mark.objects.values_list("label", flat=True)) == ["work"]
    assert Job.objects.get(pk=second.id).state == "ready"
    with pytest.raises(RuntimeError, match=r"inside transaction.atomic\(using='default'\)"):
        complete_in_transaction(second, "w1", settings, None)
