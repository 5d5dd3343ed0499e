"""Dependencies and workflows on a real PostgreSQL: jobs waiting for others, released or cancelled when
those finish (also when a dependent is enqueued while its parent completes), cycles and unknown jobs
refused at enqueue; the worker's statements applied by hand."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import transaction

import pgqueue
from pgqueue import db, operations, settle, sql
from pgqueue.conf import get_settings
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import InvalidJob
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, RetryPolicy, decide
from pgqueue.models import Dependency, Job
from pgqueue.types import LeasedJob
from pgqueue.worker.maintenance import Maintenance
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

NO_RETRY = RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0)


def database(worker: str = "w1") -> db.Database:
    return db.Database(connection_kwargs(), owner=worker, role="test")


def lease(database: db.Database, limit: int = 100) -> list[LeasedJob]:
    return database.run(sql.job_lease, queues=["marks"], limit=limit, worker=database.owner, lease_seconds=30)


def end(database: db.Database, rows: list[LeasedJob], how: Ending = Ending.RETURNED, settled: bool = True) -> None:
    now = dt.datetime.now(dt.UTC)
    error = None if how is Ending.RETURNED else ErrorInfo(error_class="RuntimeError", message="x")
    transitions = [decide(r, AttemptEnd(how=how, worker=database.owner, finished_at=now, result="1", error=error,
                                        retryable=False), NO_RETRY) for r in rows]
    moved = db.apply_transitions(database, transitions, worker=database.owner, channel="pgqueue")
    if settled:
        parents, batches = settle.needed(moved)
        settle.settle(database, parents=parents, batches=batches, channel="pgqueue")


def state(handle: pgqueue.JobHandle) -> str:
    return str(Job.objects.get(pk=handle.id).state)


def run_all(conn: db.Database, how: Ending = Ending.RETURNED) -> list[str]:
    """Lease and end every ready job; return their labels."""
    rows = lease(conn)
    end(conn, rows, how)
    return sorted(r.args[0] for r in rows)


def test_a_job_waits_for_its_dependencies_then_becomes_ready() -> None:
    a = jobs.mark.enqueue("a")
    b = jobs.mark.enqueue("b")
    c = jobs.mark.options(depends_on=[a, b.id]).enqueue("c")
    assert (state(c), Job.objects.get(pk=c.id).waiting_on) == ("waiting", 2)
    assert Job.objects.get(pk=a.id).has_dependents
    conn = database()
    leased = lease(conn)
    assert sorted(r.args[0] for r in leased) == ["a", "b"]  # c is not leased while it waits
    end(conn, [r for r in leased if r.args[0] == "a"])
    assert (state(c), Job.objects.get(pk=c.id).waiting_on) == ("waiting", 1)
    end(conn, [r for r in leased if r.args[0] == "b"])
    assert state(c) == "ready"
    assert run_all(conn) == ["c"]
    assert Dependency.objects.filter(job_id=c.id, settled_at__isnull=False).count() == 2


def test_a_failed_dependency_cancels_its_dependents_in_turn_naming_it() -> None:
    a = jobs.mark.enqueue("a")
    b = jobs.mark.options(depends_on=[a]).enqueue("b")
    c = jobs.mark.options(depends_on=[b]).enqueue("c")
    runs = jobs.mark.options(depends_on=[b], on_dependency_failure="run").enqueue("runs anyway")
    conn = database()
    run_all(conn, Ending.RAISED)  # a is dead
    rows = {r.id: r for r in Job.objects.filter(id__in=[b.id, c.id, runs.id])}
    assert (rows[b.id].state, rows[b.id].reason_code) == ("cancelled", "dependency")
    assert rows[b.id].last_error == f"job {a.id} (tests.testapp.jobs.mark), which it depends on, is dead"
    assert rows[c.id].state == "cancelled"
    assert rows[c.id].last_error == f"job {b.id} (tests.testapp.jobs.mark), which it depends on, is cancelled"
    assert rows[runs.id].state == "ready"  # b is cancelled, and it runs anyway
    assert run_all(conn) == ["runs anyway"]


def test_a_job_depending_on_finished_jobs_is_ready_or_cancelled_at_once() -> None:
    conn = database()
    ok = jobs.mark.enqueue("ok")
    bad = jobs.mark.enqueue("bad")
    rows = lease(conn)
    end(conn, [r for r in rows if r.args[0] == "ok"])
    end(conn, [r for r in rows if r.args[0] == "bad"], Ending.RAISED)
    assert state(jobs.mark.options(depends_on=[ok]).enqueue("after ok")) == "ready"
    cancelled = jobs.mark.options(depends_on=[ok, bad]).enqueue("after bad")
    assert (state(cancelled), Job.objects.get(pk=cancelled.id).reason_code) == ("cancelled", "dependency")
    assert state(jobs.mark.options(depends_on=[bad], on_dependency_failure="run").enqueue("anyway")) == "ready"
    assert Dependency.objects.filter(settled_at__isnull=True).count() == 0


def test_a_workflow_runs_in_dependency_order() -> None:
    handles = pgqueue.enqueue_workflow({
        "report": jobs.mark.options(depends_on=["left", "right"]).call("report"),
        "left": jobs.mark.options(depends_on=["fetch"]).call("left"),
        "right": jobs.mark.options(depends_on=["fetch"]).call("right"),
        "fetch": jobs.mark.call("fetch"),
    })
    assert {name: state(h) for name, h in handles.items()} == {
        "report": "waiting", "left": "waiting", "right": "waiting", "fetch": "ready"}
    conn = database()
    assert [run_all(conn), run_all(conn), run_all(conn), run_all(conn)] == [
        ["fetch"], ["left", "right"], ["report"], []]


def test_a_workflow_step_cancelled_at_enqueue_cancels_the_steps_after_it() -> None:
    conn = database()
    bad = jobs.mark.enqueue("bad")
    run_all(conn, Ending.RAISED)
    handles = pgqueue.enqueue_workflow({
        "first": jobs.mark.options(depends_on=[bad]).call("first"),
        "second": jobs.mark.options(depends_on=["first"]).call("second"),
    })
    assert (state(handles["first"]), state(handles["second"])) == ("cancelled", "cancelled")


def test_cycles_unknown_steps_and_unknown_jobs_are_refused_and_write_nothing() -> None:
    with pytest.raises(InvalidJob, match=r"in a cycle: 'a' -> 'b' -> 'c' -> 'a'"):
        pgqueue.enqueue_workflow({
            "a": jobs.mark.options(depends_on=["b"]).call("a"),
            "b": jobs.mark.options(depends_on=["c"]).call("b"),
            "c": jobs.mark.options(depends_on=["a"]).call("c"),
        })
    with pytest.raises(InvalidJob, match=r"in a cycle: 'self' -> 'self'"):
        pgqueue.enqueue_workflow({"self": jobs.mark.options(depends_on=["self"]).call("x")})
    with pytest.raises(InvalidJob, match="depends on 'nope', which is not a step of this workflow"):
        pgqueue.enqueue_workflow({"a": jobs.mark.options(depends_on=["nope"]).call("a")})
    with pytest.raises(InvalidJob, match="depends on job 987654, which does not exist"):
        pgqueue.enqueue_workflow({"a": jobs.mark.options(depends_on=[987654]).call("a")})
    with pytest.raises(InvalidJob, match="depends on job 987654, which does not exist"):
        jobs.mark.options(depends_on=[987654]).enqueue("x")
    with pytest.raises(InvalidJob, match="a workflow step, outside pgqueue.enqueue_workflow"):
        jobs.mark.options(depends_on=["fetch"]).enqueue("x")
    with pytest.raises(InvalidJob, match="depends_on must be a list"):
        jobs.mark.options(depends_on=5)
    with pytest.raises(InvalidJob, match="on_dependency_failure must be 'cancel' or 'run'"):
        jobs.mark.options(on_dependency_failure="skip")
    with pytest.raises(InvalidJob, match="out of range"):
        jobs.mark.options(depends_on=[0])
    assert Job.objects.count() == 0 and Dependency.objects.count() == 0


def test_an_unknown_dependency_in_a_batch_of_calls_leaves_the_parents_unmarked() -> None:
    parent = jobs.mark.enqueue("parent")
    with pytest.raises(InvalidJob, match="which does not exist"):
        pgqueue.enqueue_many([jobs.mark.options(depends_on=[parent]).call("ok"),
                              jobs.mark.options(depends_on=[parent.id + 1000]).call("bad")])
    assert Job.objects.count() == 1 and not Job.objects.get(pk=parent.id).has_dependents


def test_a_dependent_enqueued_while_its_parent_completes_is_not_lost() -> None:
    """The enqueue locks the running parent; the completion waits for its commit, then reports the
    dependent, whose edge a settle after the commit sees."""
    conn = database()
    parent = jobs.mark.enqueue("parent")
    leased = lease(conn)
    entered, completing = threading.Event(), threading.Event()
    child: list[pgqueue.JobHandle] = []

    def enqueue_child() -> None:
        with transaction.atomic():
            child.append(jobs.mark.options(depends_on=[parent]).enqueue("child"))
            entered.set()
            completing.wait(10)
            threading.Event().wait(0.3)  # the completion is blocked on the parent's row meanwhile

    thread = threading.Thread(target=enqueue_child)
    thread.start()
    entered.wait(10)
    completing.set()
    end(conn, leased)  # waits for the enqueue's commit
    thread.join(10)
    assert state(child[0]) == "ready"


def test_maintenance_releases_what_a_worker_that_died_after_its_commit_did_not() -> None:
    conn = database()
    parent = jobs.mark.enqueue("parent")
    child = jobs.mark.options(depends_on=[parent]).enqueue("child")
    end(conn, lease(conn), settled=False)
    assert state(child) == "waiting"
    maintenance = Maintenance("m1", "s1", get_settings(), connection_kwargs())
    maintenance.tick()
    maintenance.db.close()
    assert state(child) == "ready"


def test_cancelling_a_job_cancels_its_dependents_and_retrying_a_waiting_one_runs_it_now() -> None:
    parent = jobs.mark.enqueue("parent")
    child = jobs.mark.options(depends_on=[parent]).enqueue("child")
    other = jobs.mark.options(depends_on=[parent]).enqueue("other")
    assert operations.retry([other.id]) == [other.id]  # an operator's "run now"
    assert state(other) == "ready"
    assert operations.cancel([parent.id]) == {parent.id: "cancelled"}
    assert (state(child), Job.objects.get(pk=child.id).reason_code) == ("cancelled", "dependency")
    assert state(other) == "ready"


def test_a_dependency_and_a_semaphore_a_waiting_job_takes_its_slot_when_released() -> None:
    parent = jobs.mark.enqueue("parent")
    child = jobs.limited.options(depends_on=[parent]).enqueue("g", "child")
    row = Job.objects.get(pk=child.id)
    assert (row.state, row.slot) == ("waiting", None)  # it holds no slot while it waits
    end(database(), lease(database()))
    row = Job.objects.get(pk=child.id)
    assert row.state == "ready" and row.slot is not None


def test_a_batch_whose_job_is_cancelled_by_its_dependency_finishes() -> None:
    with pgqueue.batch(on_finish=jobs.batch_callback.call("finish")) as b:
        first = jobs.mark.enqueue("first")
        jobs.mark.options(depends_on=[first]).enqueue("second")
    conn = database()
    run_all(conn, Ending.RAISED)
    assert sorted(Job.objects.filter(batch_id=b.id).values_list("state", flat=True)) == ["cancelled", "dead"]
    assert list(Job.objects.filter(callback_of_id=b.id).values_list("args", flat=True)) == [["finish"]]


def test_a_job_cancelled_at_enqueue_holds_no_uniqueness_key() -> None:
    conn = database()
    bad = jobs.mark.enqueue("bad")
    run_all(conn, Ending.RAISED)
    first = jobs.unique_note.options(depends_on=[bad]).enqueue("k")
    assert state(first) == "cancelled"
    again = jobs.unique_note.enqueue("k")  # the key is free: no JobNotUnique naming a cancelled job
    assert again.created and again.id != first.id


def test_a_job_completed_in_its_own_transaction_releases_its_dependents(start_worker) -> None:
    parent = jobs.completes_in_transaction.enqueue("parent", False)
    child = jobs.mark.options(depends_on=[parent]).enqueue("child")
    start_worker("--queues", "misbehave,marks")
    from tests.conftest import wait_for

    wait_for(lambda: state(child) == "succeeded", timeout=30, what="the child after its parent's own commit")
    assert state(parent) == "succeeded"
