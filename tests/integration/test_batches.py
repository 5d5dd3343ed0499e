"""Batches on a real PostgreSQL: callbacks fired once by batch_settle's guarded update (also when the last
two jobs finish at the same moment in two connections), progress, adding while open, cancelling; the
worker's statements applied by hand."""

from __future__ import annotations

import datetime as dt
import random
import threading
from typing import Any

import pytest
from django.db import transaction

import pgqueue
from pgqueue import db, settle, sql
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import InvalidJob
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, RetryPolicy, decide
from pgqueue.models import Batch, Job
from pgqueue.sql.rows import Moved
from pgqueue.types import LeasedJob
from pgqueue.worker.maintenance import Maintenance
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

NO_RETRY = RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0)


def database(worker: str = "w1") -> db.Database:
    return db.Database(connection_kwargs(), owner=worker, role="test")


def lease(database: db.Database, limit: int = 100, worker: str = "w1") -> list[LeasedJob]:
    return database.run(sql.job_lease, queues=["marks"], limit=limit, worker=worker, lease_seconds=30)


def end(database: db.Database, rows: list[LeasedJob], how: Ending = Ending.RETURNED, worker: str = "w1",
        settled: bool = True) -> list[Moved]:
    """What a worker's completer does: decide, apply, and (once committed) settle."""
    now = dt.datetime.now(dt.UTC)
    error = None if how is Ending.RETURNED else ErrorInfo(error_class="RuntimeError", message="x")
    transitions = [decide(r, AttemptEnd(how=how, worker=worker, finished_at=now, result="1", error=error,
                                        retryable=False), NO_RETRY) for r in rows]
    moved = db.apply_transitions(database, transitions, worker=worker, channel="pgqueue")
    if settled:
        parents, batches = settle.needed(moved)
        settle.settle(database, parents=parents, batches=batches, channel="pgqueue")
    return moved


def callbacks(batch_id: int) -> list[tuple[str, list[Any]]]:
    return sorted((j.task.rsplit(".", 1)[1], j.args) for j in Job.objects.filter(callback_of_id=batch_id))


def with_callbacks() -> dict[str, Any]:
    return {"on_success": jobs.batch_callback.call("success"), "on_finish": jobs.batch_callback.call("finish"),
            "on_failure": jobs.batch_callback.call("failure")}


def test_callbacks_fire_once_when_all_jobs_succeed() -> None:
    with pgqueue.batch(description="import", **with_callbacks()) as b:
        handles = [jobs.mark.enqueue(f"m{i}") for i in range(3)]
    assert set(Job.objects.filter(batch_id=b.id).values_list("id", flat=True)) == {h.id for h in handles}
    conn = database()
    leased = lease(conn)
    end(conn, leased[:2])
    assert callbacks(b.id) == []  # one job to go
    assert b.progress().succeeded == 2 and b.progress().running == 1
    end(conn, leased[2:])
    assert callbacks(b.id) == [("batch_callback", ["finish"]), ("batch_callback", ["success"])]
    row = Batch.objects.get(pk=b.id)
    assert row.succeeded_at and row.finished_at and row.failed_at is None and row.total == 3
    assert {row.success_job_id, row.finish_job_id} == set(Job.objects.filter(callback_of_id=b.id).values_list("id", flat=True))
    settle.settle(conn, batches=[b.id], channel="pgqueue")  # again: nothing more
    assert len(callbacks(b.id)) == 2
    progress = b.progress()
    assert (progress.total, progress.succeeded, progress.done, progress.fraction, progress.finished) == (3, 3, 3, 1.0, True)


def test_the_first_dead_job_fires_on_failure_and_the_batch_still_finishes() -> None:
    with pgqueue.batch(**with_callbacks()) as b:
        jobs.mark.enqueue("ok")
        jobs.mark.enqueue("bad")
        jobs.mark.enqueue("bad too")
    conn = database()
    leased = sorted(lease(conn), key=lambda r: r.args[0])
    end(conn, [r for r in leased if r.args[0] == "bad"], Ending.RAISED)
    assert callbacks(b.id) == [("batch_callback", ["failure"])]
    end(conn, [r for r in leased if r.args[0] == "bad too"], Ending.RAISED)  # a second death: no second call
    end(conn, [r for r in leased if r.args[0] == "ok"])
    assert callbacks(b.id) == [("batch_callback", ["failure"]), ("batch_callback", ["finish"])]
    progress = b.progress()
    assert (progress.succeeded, progress.dead, progress.finished, progress.succeeded_all) == (1, 2, True, False)


def test_a_retried_dead_job_that_then_succeeds_fires_on_success_after_on_finish() -> None:
    with pgqueue.batch(on_success=jobs.batch_callback.call("success"), on_finish=jobs.batch_callback.call("finish")) as b:
        jobs.mark.enqueue("bad")
    conn = database()
    end(conn, lease(conn), Ending.RAISED)
    assert callbacks(b.id) == [("batch_callback", ["finish"])]
    from pgqueue import operations

    operations.retry(list(Job.objects.filter(batch_id=b.id).values_list("id", flat=True)))
    end(conn, lease(conn))
    assert callbacks(b.id) == [("batch_callback", ["finish"]), ("batch_callback", ["success"])]


@pytest.mark.parametrize("round_", range(50))
def test_the_success_callback_is_enqueued_once_when_the_last_two_jobs_finish_at_once(round_: int) -> None:
    """Two workers (two connections) finish the batch's last two jobs at the same moment, each settling
    after its own commit, with the commits and settles interleaved at random."""
    with pgqueue.batch(on_success=jobs.batch_callback.call("success"), on_finish=jobs.batch_callback.call("finish")) as b:
        jobs.mark.enqueue("a")
        jobs.mark.enqueue("b")
    workers = [database("w1"), database("w2")]
    leased = [lease(workers[0], 1, "w1"), lease(workers[1], 1, "w2")]
    assert all(len(rows) == 1 for rows in leased)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    pauses = [random.random() * 0.004 for _ in range(4)]

    def finish(i: int) -> None:
        try:
            conn = workers[i]
            transition = decide(leased[i][0], AttemptEnd(how=Ending.RETURNED, worker=f"w{i + 1}",
                                                         finished_at=dt.datetime.now(dt.UTC), result="1"), NO_RETRY)
            with conn.transaction():
                moved = db.apply_transitions(conn, [transition], worker=f"w{i + 1}", channel="pgqueue")
                barrier.wait(10)  # both transitions written, neither committed
                threading.Event().wait(pauses[i])
            threading.Event().wait(pauses[2 + i])
            parents, batches = settle.needed(moved)
            settle.settle(conn, parents=parents, batches=batches, channel="pgqueue")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert callbacks(b.id) == [("batch_callback", ["finish"]), ("batch_callback", ["success"])]
    for conn in workers:
        conn.close()


def test_callbacks_wait_for_close_and_jobs_can_be_added_while_open() -> None:
    b = pgqueue.Batch.open(on_success=jobs.batch_callback.call("success"), description="nightly")
    first = b.add([jobs.mark.call("one")])
    conn = database()
    end(conn, lease(conn))  # all its jobs so far succeeded, but it is open
    assert callbacks(b.id) == [] and not b.progress().closed
    with transaction.atomic(), b:  # another transaction adds more
        second = jobs.mark.enqueue("two")
    assert {first[0].id, second.id} == set(Job.objects.filter(batch_id=b.id).values_list("id", flat=True))
    b.close()
    assert callbacks(b.id) == []  # the second job has not run
    end(conn, lease(conn))
    assert callbacks(b.id) == [("batch_callback", ["success"])]
    with pytest.raises(InvalidJob, match=f"Batch {b.id} is closed: it cannot be given jobs"):
        b.add([jobs.mark.call("late")])
    assert Job.objects.filter(batch_id=b.id).count() == 2
    with pytest.raises(InvalidJob, match="is closed: it cannot be closed"):
        b.close()


def test_closing_a_batch_whose_jobs_all_finished_fires_its_callbacks_at_once() -> None:
    b = pgqueue.Batch.open(on_success=jobs.batch_callback.call("success"))
    b.add([jobs.mark.call("one"), jobs.mark.call("two")])
    conn = database()
    end(conn, lease(conn))
    b.close()
    assert callbacks(b.id) == [("batch_callback", ["success"])]


def test_an_empty_batch_succeeds_when_closed() -> None:
    with pgqueue.batch(on_success=jobs.batch_callback.call("success")) as b:
        pass
    assert callbacks(b.id) == [("batch_callback", ["success"])] and b.progress().total == 0


def test_a_batch_block_that_raises_leaves_no_batch_and_no_job() -> None:
    with pytest.raises(RuntimeError), pgqueue.batch(on_success=jobs.batch_callback.call("success")):
        jobs.mark.enqueue("x")
        raise RuntimeError("the view failed")
    assert Batch.objects.count() == 0 and Job.objects.count() == 0


def test_cancelling_a_batch_cancels_waiting_jobs_asks_running_ones_and_finishes_once_they_stop() -> None:
    with pgqueue.batch(on_finish=jobs.batch_callback.call("finish"), on_success=jobs.batch_callback.call("success")) as b:
        for i in range(4):
            jobs.mark.enqueue(f"m{i}")
    conn = database()
    running = lease(conn, 1)
    result = b.cancel()
    assert sorted(result.values()) == ["cancelled", "cancelled", "cancelled", "cancelling"]
    assert Job.objects.get(pk=running[0].id).cancel_requested
    assert callbacks(b.id) == []  # one still runs
    end(conn, running, Ending.CANCELLED)
    assert callbacks(b.id) == [("batch_callback", ["finish"])]
    progress = b.progress()
    assert (progress.cancelled, progress.cancelled_batch, progress.succeeded_all) == (4, True, False)
    with pytest.raises(InvalidJob, match="is cancelled"):
        b.add([jobs.mark.call("late")])


def test_maintenance_fires_what_a_worker_that_died_after_its_commit_did_not() -> None:
    with pgqueue.batch(on_success=jobs.batch_callback.call("success")) as b:
        jobs.mark.enqueue("x")
    conn = database()
    end(conn, lease(conn), settled=False)  # the process died before settling
    assert callbacks(b.id) == []
    from pgqueue.conf import get_settings

    maintenance = Maintenance("m1", "s1", get_settings(), connection_kwargs())
    maintenance.tick()
    assert callbacks(b.id) == [("batch_callback", ["success"])]
    maintenance.db.close()



def test_bad_batches_are_refused_and_write_nothing() -> None:
    with pytest.raises(InvalidJob, match="Batch on_success must be a call built with fn.call"):
        pgqueue.Batch.open(on_success=jobs.batch_callback)
    with pytest.raises(InvalidJob, match="takes no run_at or delay"):
        pgqueue.Batch.open(on_finish=jobs.batch_callback.options(delay=5).call("x"))
    with pytest.raises(InvalidJob, match="do not fit"):
        pgqueue.Batch.open(on_finish=jobs.batch_callback.call())
    with pytest.raises(InvalidJob, match="at most 255 characters"):
        pgqueue.Batch.open(description="x" * 256)
    with pytest.raises(InvalidJob, match="Batch 999999 does not exist"), pgqueue.Batch(999999):
        jobs.mark.enqueue("x")
    with pytest.raises(InvalidJob, match="A batch id must be an integer"):
        pgqueue.Batch("1")  # type: ignore[arg-type]
    assert Batch.objects.count() == 0 and Job.objects.count() == 0


def test_progress_counts_each_state() -> None:
    with pgqueue.batch() as b:
        for i in range(5):
            jobs.mark.enqueue(f"m{i}")
        jobs.mark.options(delay=3600).enqueue("later")
    conn = database()
    leased = lease(conn, 3)
    end(conn, leased[:1])
    end(conn, leased[1:2], Ending.RAISED)
    progress = b.progress()
    assert (progress.total, progress.waiting, progress.running, progress.succeeded, progress.dead) == (6, 3, 1, 1, 1)
    assert progress.closed and not progress.finished


def test_a_cancelled_batch_never_fires_on_success_even_when_nothing_failed() -> None:
    empty = pgqueue.Batch.open(on_success=jobs.batch_callback.call("success"), on_finish=jobs.batch_callback.call("finish"))
    empty.cancel()
    assert callbacks(empty.id) == [("batch_callback", ["finish"])]
    done = pgqueue.Batch.open(on_success=jobs.batch_callback.call("success"))
    done.add([jobs.mark.call("x")])
    conn = database()
    end(conn, lease(conn))  # all succeeded while the batch was open
    done.cancel()
    assert callbacks(done.id) == []
    assert Batch.objects.get(pk=done.id).finished_at is not None


def test_the_maintenance_sweep_goes_round_all_unsettled_batches() -> None:
    ids = []
    for _ in range(5):
        with pgqueue.batch(on_success=jobs.batch_callback.call("success")) as b:
            jobs.mark.enqueue("x")
        ids.append(b.id)
    conn = database()
    end(conn, lease(conn), settled=False)
    after = settle.sweep(conn, channel="pgqueue", limit=2)
    assert after == ids[1] and [len(callbacks(i)) for i in ids] == [1, 1, 0, 0, 0]
    after = settle.sweep(conn, channel="pgqueue", limit=2, after=after)
    assert after == ids[3] and [len(callbacks(i)) for i in ids] == [1, 1, 1, 1, 0]
    assert settle.sweep(conn, channel="pgqueue", limit=2, after=after) == 0  # round again next time
    assert [len(callbacks(i)) for i in ids] == [1, 1, 1, 1, 1]


def test_retention_keeps_a_dead_job_until_its_batch_has_settled() -> None:
    """Issue #18, class 5: a dead member pruned before its batch settled let the batch report success."""
    from pgqueue.ops import retention

    with pgqueue.batch(**with_callbacks()) as b:
        jobs.mark.enqueue("bad")
        jobs.mark.enqueue("slow")
    conn = database()
    leased = sorted(lease(conn), key=lambda r: r.args[0])
    end(conn, leased[:1], Ending.RAISED)  # "bad" is dead; "slow" still runs
    assert callbacks(b.id) == [("batch_callback", ["failure"])]
    eager = retention.Policy(keep={"succeeded": 0.0, "dead": 0.0, "cancelled": 0.0})
    assert retention.prune(conn, eager) == (0, 0)  # the batch has not finished: its dead job stays
    end(conn, leased[1:])  # the last job succeeds: the batch finished with a failure
    assert callbacks(b.id) == [("batch_callback", ["failure"]), ("batch_callback", ["finish"])]
    assert not b.progress().succeeded_all
    # within the hour a retried dead job could still make it succeed: still kept
    assert Job.objects.filter(batch_id=b.id, state="dead").exists()
    retention.prune(conn, eager)
    assert Job.objects.filter(batch_id=b.id, state="dead").exists()
    settle.settle(conn, parents=[], batches=[b.id], channel="pgqueue")  # a later sweep: still no success
    assert ("batch_callback", ["success"]) not in callbacks(b.id)
    Batch.objects.filter(id=b.id).update(finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    retention.prune(conn, eager)  # settled for good: its jobs go
    assert not Job.objects.filter(batch_id=b.id).exists()
    conn.close()
