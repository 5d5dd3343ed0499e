"""Flow control on a real PostgreSQL: uniqueness locks, idempotency keys, semaphores and ordering keys,
with concurrent enqueuers on their own connections and the worker's statements applied by hand."""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction

import pgqueue
from pgqueue import db, operations, sql
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import JobNotUnique
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, RetryPolicy, decide
from pgqueue.models import AuditEntry, Job, Lock, QueueState, RateLimit, Semaphore, SemaphoreSlot
from pgqueue.sql.rows import Moved
from pgqueue.types import LeasedJob
from pgqueue.worker import rescue
from pgqueue.worker.maintenance import Maintenance
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

NO_DELAY = RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0)
DELAY = RetryPolicy(backoff=60.0, backoff_max=60.0, jitter=0.0)


def connect() -> psycopg.Connection:
    return psycopg.connect(**connection_kwargs(), autocommit=True)


def lease(conn: psycopg.Connection, limit: int = 10) -> list[LeasedJob]:
    with conn.cursor() as cur:
        return db.run(cur, sql.job_lease, queues=["flow"], limit=limit, worker="w1", lease_seconds=30)


def end(conn: psycopg.Connection, rows: list[LeasedJob], how: Ending = Ending.RETURNED,
        policy: RetryPolicy = NO_DELAY) -> list[Moved]:
    """Decide and apply each attempt's transition as a worker's completer would."""
    now = dt.datetime.now(dt.UTC)
    error = None if how is Ending.RETURNED else ErrorInfo(error_class="RuntimeError", message="x")
    transitions = [decide(r, AttemptEnd(how=how, worker="w1", finished_at=now, result="1", error=error), policy)
                   for r in rows]
    database = db.Database(connection_kwargs(), owner="w1", role="test")
    database.conn = conn
    return db.apply_transitions(database, transitions, worker="w1", channel="pgqueue")


def held_keys() -> set[str]:
    return set(Lock.objects.filter(released=False, kind="unique").values_list("key", flat=True))


def states(ids: list[int]) -> list[str]:
    found = dict(Job.objects.filter(id__in=ids).values_list("id", "state"))
    return [found[i] for i in ids]


def together(n: int, call: Callable[[int], Any]) -> list[Any]:
    """Run call(i) in n threads, each with its own database connection, released at the same moment."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = call(i)
        except Exception as exc:  # the test asserts on what each caller got
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# -- uniqueness locks -------------------------------------------------------------------------------


def test_reject_raises_with_the_holder_and_writes_nothing() -> None:
    first = jobs.unique_note.enqueue("a")
    with pytest.raises(JobNotUnique) as caught:
        jobs.unique_note.enqueue("a")
    assert caught.value.job_id == first.id
    assert "is held by job" in str(caught.value)
    assert Job.objects.count() == 1 and Lock.objects.count() == 1
    other = jobs.unique_note.enqueue("b")  # other arguments, other key
    assert other.created and other.id != first.id


def test_a_reject_inside_the_callers_transaction_leaves_its_other_writes_to_the_caller() -> None:
    jobs.unique_note.enqueue("a")
    with transaction.atomic():
        kept = jobs.add.enqueue(1, 2)
        with pytest.raises(JobNotUnique):
            pgqueue.enqueue_many([jobs.unique_note.call("new"), jobs.unique_note.call("a")])
    assert sorted(Job.objects.values_list("task", flat=True)) == ["tests.testapp.jobs.add", "tests.testapp.jobs.unique_note"]
    assert Job.objects.filter(id=kept.id).exists()
    assert held_keys() == {'tests.testapp.jobs.unique_note:["a"]'}  # the key "new" was taken and rolled back


def test_discard_returns_the_holders_handle() -> None:
    first = jobs.digest.enqueue(7, "one")
    again = jobs.digest.enqueue(7, "two")
    assert (again.id, again.created, again.replaced) == (first.id, False, False)
    assert Job.objects.get().kwargs == {} and Job.objects.get().args == [7, "one"]


def test_replace_gives_the_waiting_job_the_new_arguments_and_run_at() -> None:
    first = jobs.debounce.enqueue("acme", 1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    again = jobs.debounce.options(run_at=later).enqueue("acme", 2)
    assert (again.id, again.created, again.replaced) == (first.id, False, True)
    row = Job.objects.get()
    assert (row.args, row.state, abs((row.run_at - later).total_seconds()) < 1) == (["acme", 2], "scheduled", True)


def test_until_started_releases_at_lease_and_until_finished_at_the_end() -> None:
    waiting = jobs.debounce.enqueue("acme", 1)
    note = jobs.unique_note.enqueue("x")
    with connect() as conn:
        leased = lease(conn)
        assert {r.id for r in leased} == {waiting.id, note.id}
        assert held_keys() == {'tests.testapp.jobs.unique_note:["x"]'}  # debounce's key went with the lease
        second = jobs.debounce.enqueue("acme", 2)
        assert second.created and second.id != waiting.id
        with pytest.raises(JobNotUnique):
            jobs.unique_note.enqueue("x")  # still running: held until finished
        end(conn, [r for r in leased if r.id == note.id], Ending.RAISED)  # a retry keeps the key
        assert 'tests.testapp.jobs.unique_note:["x"]' in held_keys()
        retried = lease(conn)  # the note's retry, and the second debounce (whose key goes with its lease)
        assert {r.id for r in retried} == {note.id, second.id}
        end(conn, [r for r in retried if r.id == note.id])
    assert held_keys() == set()
    assert jobs.unique_note.enqueue("x").created


def test_a_window_holds_the_key_after_the_job_is_done() -> None:
    first = jobs.daily.enqueue("2026-11-24", "a")
    with connect() as conn:
        end(conn, lease(conn))
    again = jobs.daily.enqueue("2026-11-24", "b")
    assert (again.id, again.created) == (first.id, False)
    Lock.objects.update(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert jobs.daily.enqueue("2026-11-24", "c").created


def test_cancel_releases_the_key() -> None:
    first = jobs.unique_note.enqueue("c")
    assert operations.cancel(first.id) == {first.id: "cancelled"}
    assert held_keys() == set()
    assert jobs.unique_note.enqueue("c").created


def test_twenty_concurrent_enqueuers_get_one_job() -> None:
    results = together(20, lambda i: jobs.unique_note.enqueue("race"))
    created = [r for r in results if isinstance(r, pgqueue.JobHandle)]
    refused = [r for r in results if isinstance(r, JobNotUnique)]
    assert len(created) == 1 and len(refused) == 19, results
    assert {r.job_id for r in refused} == {created[0].id}
    assert Job.objects.count() == 1


def test_twenty_concurrent_discards_all_get_the_one_handle() -> None:
    def enqueue(i: int) -> pgqueue.JobHandle:
        with transaction.atomic():
            return jobs.digest.enqueue(42, f"caller {i}")

    results = together(20, enqueue)
    assert all(isinstance(r, pgqueue.JobHandle) for r in results), results
    assert len({r.id for r in results}) == 1 and sum(r.created for r in results) == 1
    assert Job.objects.count() == 1


def test_a_batch_with_a_key_twice_takes_it_once() -> None:
    handles = jobs.digest.enqueue_many([(1, "a"), (2, "b"), (1, "c")])
    assert handles[2].id == handles[0].id and not handles[2].created
    assert Job.objects.count() == 2
    with pytest.raises(JobNotUnique, match="same batch"):
        jobs.unique_note.enqueue_many([("z",), ("z",)])
    assert Job.objects.count() == 2


def test_maintenance_reaps_an_orphaned_lock() -> None:
    handle = jobs.unique_note.enqueue("orphan")
    Job.objects.filter(id=handle.id).delete()  # a job gone without releasing its key
    assert held_keys() == {'tests.testapp.jobs.unique_note:["orphan"]'}
    reaped = db.run_in_django(sql.lock_reap, limit=100)[0]
    assert (reaped.released, reaped.deleted) == (1, 0)
    assert jobs.unique_note.enqueue("orphan").created  # a released key is taken over
    Job.objects.all().delete()
    assert db.run_in_django(sql.lock_reap, limit=100)[0].released == 1
    assert db.run_in_django(sql.lock_reap, limit=100)[0].deleted == 1  # released keys go in the next round
    assert Lock.objects.count() == 0


# -- idempotency keys ---------------------------------------------------------------------------------


def test_an_idempotency_key_returns_the_first_jobs_handle_even_after_it_is_done() -> None:
    first = jobs.add.options(idempotency_key="order-42-paid").enqueue(1, 2)
    with connect() as conn:
        with conn.cursor() as cur:
            rows = db.run(cur, sql.job_lease, queues=["default"], limit=5, worker="w1", lease_seconds=30)
        end(conn, rows)
    again = jobs.add.options(idempotency_key="order-42-paid").enqueue(3, 4)
    assert (again.id, again.created) == (first.id, False)
    assert Job.objects.get().idempotency_key == "order-42-paid"
    Lock.objects.update(expires_at=dt.datetime.now(dt.UTC))  # retention over
    assert jobs.add.options(idempotency_key="order-42-paid").enqueue(3, 4).created


def test_idempotency_key_race_gives_every_caller_the_one_handle() -> None:
    def enqueue(i: int) -> pgqueue.JobHandle:
        with transaction.atomic():
            return jobs.add.options(idempotency_key="pay-7").enqueue(i, i)

    results = together(20, enqueue)
    assert all(isinstance(r, pgqueue.JobHandle) for r in results), results
    assert len({r.id for r in results}) == 1
    assert Job.objects.count() == 1 and Job.objects.get().id == results[0].id


def test_an_idempotency_key_whose_first_transaction_rolled_back_is_free() -> None:
    entered, release = threading.Event(), threading.Event()

    def first() -> None:
        try:
            with transaction.atomic():
                jobs.add.options(idempotency_key="k").enqueue(1, 1)
                entered.set()
                release.wait(10)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        finally:
            connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(10)
    timer = threading.Timer(0.3, release.set)  # the second enqueue waits on the first until it rolls back
    timer.start()
    second = jobs.add.options(idempotency_key="k").enqueue(2, 2)
    thread.join(10)
    assert second.created and Job.objects.get().id == second.id


def test_a_call_refused_on_one_key_keeps_none_of_its_keys() -> None:
    holder = jobs.digest.enqueue(5, "first")
    again = jobs.digest.options(idempotency_key="digest-5-again").enqueue(5, "second")  # discarded: 5 is held
    assert (again.id, again.created) == (holder.id, False)
    assert not Lock.objects.filter(kind="idempotency").exists()  # the idempotency key was given back
    other = jobs.digest.options(idempotency_key="digest-5-again").enqueue(6, "third")
    assert other.created and Job.objects.get(id=other.id).idempotency_key == "digest-5-again"


# -- semaphores and ordering keys -------------------------------------------------------------------


def test_a_semaphore_lets_two_be_ready_and_blocks_the_rest_in_enqueue_order() -> None:
    handles = [jobs.limited.enqueue("g", f"j{i}") for i in range(5)]
    ids = [h.id for h in handles]
    assert states(ids) == ["ready", "ready", "blocked", "blocked", "blocked"]
    assert Semaphore.objects.get().limit == 2
    assert SemaphoreSlot.objects.filter(job_id__isnull=False).count() == 2
    with connect() as conn:
        leased = lease(conn)
        assert {r.id for r in leased} == set(ids[:2])  # blocked jobs are never leased
        moved = end(conn, [r for r in leased if r.id == ids[0]])
        assert moved[0].slot_key == "sem:g"
        assert states(ids) == ["succeeded", "running", "ready", "blocked", "blocked"]
        assert Job.objects.get(id=ids[2]).slot == moved[0].slot  # the freed slot went to the oldest blocked


def test_a_retry_after_a_delay_gives_the_slot_up_and_an_ordering_key_holds_it() -> None:
    a, b, c = (jobs.limited.enqueue("r", x).id for x in "abc")
    with connect() as conn:
        leased = lease(conn)
        end(conn, [r for r in leased if r.id == a], Ending.RAISED, DELAY)
        assert states([a, b, c]) == ["blocked", "running", "ready"]  # a waits for its run_at and a slot
        first, second = jobs.ordered.enqueue("s", 0).id, jobs.ordered.enqueue("s", 1).id
        assert states([first, second]) == ["ready", "blocked"]
        held = [r for r in lease(conn) if r.id == first]
        end(conn, held, Ending.RAISED, DELAY)
        assert states([first, second]) == ["scheduled", "blocked"]  # it holds the line while it waits


def test_cancel_of_a_ready_holder_hands_its_slot_on() -> None:
    ids = [jobs.limited.enqueue("c", f"j{i}").id for i in range(3)]
    operations.cancel(ids[0])
    assert states(ids) == ["cancelled", "ready", "ready"]


def test_a_release_at_shutdown_keeps_the_slot_and_a_rescued_holder_runs_again() -> None:
    ids = [jobs.limited.enqueue("k", f"j{i}").id for i in range(3)]
    with connect() as conn:
        leased = lease(conn)
        end(conn, leased, Ending.RELEASED)
        assert states(ids) == ["ready", "ready", "blocked"]
        leased = lease(conn)
        end(conn, leased, Ending.LOST)
        assert states(ids) == ["ready", "ready", "blocked"]


def test_scheduled_jobs_with_a_semaphore_wait_for_a_slot_when_due() -> None:
    ids = [jobs.limited.options(delay=3600).enqueue("d", f"j{i}").id for i in range(3)]
    assert states(ids) == ["scheduled"] * 3
    Job.objects.update(run_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    maintenance = Maintenance("m1", "s1", pgqueue.conf.get_settings(), connection_kwargs())
    maintenance.tick()
    maintenance.db.close()
    assert states(ids) == ["ready", "ready", "blocked"]


def test_retry_and_replay_of_semaphore_jobs_wait_for_a_slot() -> None:
    ids = [jobs.limited.enqueue("p", f"j{i}").id for i in range(3)]
    operations.cancel(ids)
    assert operations.retry(ids[:1]) == ids[:1]
    assert states(ids[:1]) == ["ready"]
    new = operations.replay(ids[1:])
    assert states(list(new.values())) == ["ready", "blocked"]


def test_maintenance_frees_a_slot_whose_job_is_gone_and_hands_it_on() -> None:
    ids = [jobs.limited.enqueue("o", f"j{i}").id for i in range(3)]
    Job.objects.filter(id=ids[0]).delete()
    maintenance = Maintenance("m1", "s1", pgqueue.conf.get_settings(), connection_kwargs())
    maintenance._reap()
    maintenance.db.close()
    assert states(ids[1:]) == ["ready", "ready"]


def test_a_limit_change_in_the_code_applies_to_new_enqueues() -> None:
    [jobs.limited.options(concurrency_limit=1).enqueue("l", "a").id for _ in range(2)]
    assert Semaphore.objects.get(key="sem:l").limit == 1
    handle = jobs.limited.options(concurrency_limit=3).enqueue("l", "b")
    assert Semaphore.objects.get(key="sem:l").limit == 3
    assert SemaphoreSlot.objects.filter(semaphore_id="sem:l").count() == 3
    assert states([handle.id]) == ["blocked"]  # older blocked jobs of the key go first


def test_blocked_jobs_are_not_in_the_lease_plan() -> None:
    for i in range(3):
        jobs.limited.enqueue("x", f"j{i}")
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")  # a tiny table: show the index the hand-off can use
        cur.execute("EXPLAIN SELECT id FROM pgqueue_job WHERE state = 'blocked' AND concurrency_key = 'sem:x' "
                    "ORDER BY id LIMIT 1")
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "pgqueue_job_blocked_key" in plan


# -- queue limits ---------------------------------------------------------------------------------------


def lease_limited(conn: psycopg.Connection, queues: list[str], limit: int = 10) -> list[LeasedJob]:
    with conn.cursor() as cur:
        return db.run(cur, sql.job_lease_limited, queues=queues, limit=limit, worker="w1", lease_seconds=30)


def test_a_queue_concurrency_limit_leases_only_into_free_running_slots() -> None:
    operations.set_limits("lim", concurrency=2)
    assert db.run_in_django(sql.queuestate_limited, queues=["default", "lim"])[0].limited
    assert not db.run_in_django(sql.queuestate_limited, queues=["default"])[0].limited
    ids = [jobs.add.options(queue="lim").enqueue(i, i).id for i in range(5)]
    plain = jobs.add.enqueue(9, 9).id
    with connect() as conn:
        first = lease_limited(conn, ["lim", "default"])
        assert sorted(r.id for r in first) == sorted([*ids[:2], plain])  # the unlimited queue is not held back
        assert db.run_in_django(sql.semaphore_slot_reap) == []  # running slots of running jobs are held
        assert lease_limited(conn, ["lim"]) == []
        end(conn, [r for r in first if r.id == ids[0]], Ending.RAISED)  # a retry also stops running
        assert [r.id for r in lease_limited(conn, ["lim"])] == [ids[2]]  # its slot went to the next job
        held = [r for r in first if r.id == ids[1]]
    rescued = db.Database(connection_kwargs(), owner="m", role="test")  # a dead holder gives its slot back
    Job.objects.filter(id=ids[1]).update(lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert [j.id for j in rescue.expired(rescued, pgqueue.conf.get_settings(), 10, by="m")] == [held[0].id]
    rescued.close()
    with connect() as conn:
        assert len(lease_limited(conn, ["lim"])) == 1
    assert SemaphoreSlot.objects.filter(semaphore_id="pgqueue:queue:lim", job_id__isnull=False).count() == 2


def test_a_queue_rate_limit_spends_tokens_and_refills_them() -> None:
    operations.set_limits("rated", rate=3, per=60.0)
    for i in range(6):
        jobs.add.options(queue="rated").enqueue(i, i)
    with connect() as conn:
        assert len(lease_limited(conn, ["rated"])) == 3  # a full bucket
        assert lease_limited(conn, ["rated"]) == []
        QueueState.objects.filter(name="rated").update(  # 40 s later: 2 more tokens
            rate_updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=40))
        assert len(lease_limited(conn, ["rated"])) == 2
    operations.set_limits("rated")  # cleared
    assert not db.run_in_django(sql.queuestate_limited, queues=["rated"])[0].limited


def test_queue_limits_are_checked() -> None:
    with pytest.raises(pgqueue.exceptions.InvalidJob, match="concurrency must be an integer from 1 to 10000"):
        operations.set_limits("q", concurrency=0)
    with pytest.raises(pgqueue.exceptions.InvalidJob, match="give rate and per together"):
        operations.set_limits("q", rate=5)
    with pytest.raises(pgqueue.exceptions.InvalidJob, match=r"per must be a number of seconds from 0.001 to 31536000 \(a year\), got nan"):
        operations.set_limits("q", rate=5, per=float("nan"))
    assert not Semaphore.objects.exists()


# -- circuit breaker ------------------------------------------------------------------------------------


def test_failures_in_a_row_trip_the_breaker_and_maintenance_resumes_it() -> None:
    operations.set_breaker("breaker", failures=3, within=60, cooldown=30)
    ids = [jobs.breaker_ok.enqueue(f"j{i}").id for i in range(8)]
    with connect() as conn:
        def attempt(how: Ending) -> None:
            with conn.cursor() as cur:
                rows = db.run(cur, sql.job_lease, queues=["breaker"], limit=1, worker="w1", lease_seconds=30)
            end(conn, rows, how)

        attempt(Ending.RAISED)
        attempt(Ending.RAISED)
        attempt(Ending.RETURNED)  # a success ends the streak
        attempt(Ending.RAISED)
        attempt(Ending.RAISED)
        assert not QueueState.objects.get(name="breaker").paused
        attempt(Ending.RAISED)  # the third in a row
        state = QueueState.objects.get(name="breaker")
        assert state.paused and state.breaker_trips == 1 and state.breaker_failures == 0
        assert state.paused_reason == "circuit breaker: 3 failures in a row within 60 s (last: RuntimeError)"
        assert 25 < (state.resume_at - dt.datetime.now(dt.UTC)).total_seconds() <= 30
        with conn.cursor() as cur:
            assert db.run(cur, sql.job_lease, queues=["breaker"], limit=5, worker="w1", lease_seconds=30) == []
    audit = AuditEntry.objects.get(action="breaker_tripped")
    assert (audit.username, audit.object_ids, audit.scope) == ("pgqueue circuit breaker", ["breaker"],
                                                               state.paused_reason)
    QueueState.objects.filter(name="breaker").update(resume_at=dt.datetime.now(dt.UTC))
    assert [r.name for r in db.run_in_django(sql.queuestate_resume_due, channel="pgqueue")] == ["breaker"]
    state = QueueState.objects.get(name="breaker")
    assert (state.paused, state.paused_reason, state.resume_at) == (False, "", None)
    assert AuditEntry.objects.filter(action="breaker_resumed", object_ids=["breaker"]).exists()
    assert len(ids) == 8


def test_an_operator_resume_overrides_a_tripped_breaker() -> None:
    operations.set_breaker("breaker", failures=1, within=60, cooldown=3600)
    jobs.breaker_ok.enqueue("a")
    with connect() as conn:
        end(conn, lease_limited(conn, ["breaker"]), Ending.RAISED)
    assert QueueState.objects.get(name="breaker").paused
    operations.resume("breaker")
    state = QueueState.objects.get(name="breaker")
    assert (state.paused, state.resume_at, state.paused_reason) == (False, None, "")


# -- the pgqueue_queue command ----------------------------------------------------------------------------


def test_the_queue_command_pauses_limits_and_sets_a_breaker_audited() -> None:
    out = io.StringIO()
    call_command("pgqueue_queue", "pause", "emails", "default", stdout=out)
    assert out.getvalue().strip() == "paused (workers lease nothing more from them): emails, default"
    call_command("pgqueue_queue", "limit", "emails", "--concurrency", "3", "--rate", "10", "--per", "1", stdout=out)
    call_command("pgqueue_queue", "breaker", "emails", "--failures", "5", "--within", "60", "--cooldown", "30",
                 stdout=out)
    listing = io.StringIO()
    call_command("pgqueue_queue", "list", "emails", stdout=listing)
    assert listing.getvalue().strip() == (
        "emails\tpaused; at most 3 running; at most 10 starts per 1 s; breaker: 5 failures in 60 s pause it for "
        "30 s (0 in a row now, tripped 0 times)")
    assert list(AuditEntry.objects.order_by("at").values_list("action", "object_ids", "scope")) == [
        ("pause_queue", ["emails", "default"], ""),
        ("set_queue_limits", ["emails"], "--concurrency=3 --rate=10 --per=1.0"),
        ("set_queue_breaker", ["emails"], "--failures=5 --within=60.0 --cooldown=30.0"),
    ]
    assert SemaphoreSlot.objects.filter(semaphore_id="pgqueue:queue:emails").count() == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["pause"], "pgqueue_queue pause needs at least one queue name."),
    (["pause", "a,b"], "Invalid queue name 'a,b'"),
    (["limit", "q", "--rate", "5"], "Queue 'q': give rate and per together"),
    (["limit", "q", "--concurrency", "0"], "Queue 'q': concurrency must be an integer from 1 to 10000, got 0."),
    (["breaker", "q"], "pgqueue_queue breaker needs --failures, --within and --cooldown, or --off."),
    (["breaker", "q", "--failures", "3"], "Queue 'q': a circuit breaker needs failures, within and cooldown"),
    (["breaker", "q", "--failures", "3", "--within", "inf", "--cooldown", "1"],
     "Queue 'q': within must be a finite number of seconds, got inf."),
])
def test_the_queue_command_refuses_bad_input_and_writes_nothing(argv: list[str], message: str) -> None:
    with pytest.raises(CommandError) as info:
        call_command("pgqueue_queue", *argv, stdout=io.StringIO())
    assert str(info.value).startswith(message), str(info.value)
    assert not QueueState.objects.exists() and not AuditEntry.objects.exists()


def test_the_queue_command_checks_every_name_before_writing_any() -> None:
    with pytest.raises(CommandError, match="Invalid queue name 'bad,name'"):
        call_command("pgqueue_queue", "limit", "ok", "bad,name", "--concurrency", "2", stdout=io.StringIO())
    assert not QueueState.objects.exists() and not AuditEntry.objects.exists() and not Semaphore.objects.exists()


def test_clearing_a_concurrency_limit_removes_its_semaphore_and_resume_wakes_workers() -> None:
    operations.set_limits("gone", concurrency=2)
    operations.set_limits("gone")
    assert not Semaphore.objects.filter(key="pgqueue:queue:gone").exists()
    assert not SemaphoreSlot.objects.filter(semaphore_id="pgqueue:queue:gone").exists()
    with connect() as listener:
        listener.execute("LISTEN pgqueue")
        operations.pause("gone")
        operations.resume("gone")
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert payloads == ["gone"]  # the pause sent nothing; the resume woke the queue's workers


def test_a_batch_mixing_keyed_and_plain_calls_gets_each_handle_its_own_job_in_call_order() -> None:
    calls = [jobs.add.call(0, 0), jobs.unique_note.call("k1"), jobs.add.options(idempotency_key="i2").call(2, 2),
             jobs.add.call(3, 3), jobs.unique_note.call("k4")]
    handles = pgqueue.enqueue_many(calls)
    rows = {j.id: (j.task.rsplit(".", 1)[1], j.args) for j in Job.objects.all()}
    assert [rows[h.id] for h in handles] == [("add", [0, 0]), ("unique_note", ["k1"]), ("add", [2, 2]),
                                             ("add", [3, 3]), ("unique_note", ["k4"])]
    assert [h.id for h in handles] == sorted(h.id for h in handles)  # ids follow the calls: enqueue order


# -- rate limits per key --------------------------------------------------------------------------------


def seconds_from_now(when: dt.datetime) -> float:
    return (when - dt.datetime.now(dt.UTC)).total_seconds()


def lease_suspect(conn: psycopg.Connection, queues: list[str]) -> list[LeasedJob]:
    with conn.cursor() as cur:
        return db.run(cur, sql.job_lease_suspect, queues=queues, worker="w1", lease_seconds=30)


def test_a_rate_key_starts_jobs_only_with_tokens_and_defers_the_rest_in_order() -> None:
    ids = [jobs.partner_call.enqueue("a", f"a{i}").id for i in range(5)]  # 3 per 60 s for account a
    bucket = RateLimit.objects.get(key="partner:a")
    assert (bucket.limit, bucket.window, bucket.tokens) == (3, 60.0, 3.0)
    assert db.run_in_django(sql.queuestate_limited, queues=["rated"])[0].limited
    assert not db.run_in_django(sql.queuestate_limited, queues=["default"])[0].limited
    with connect() as conn:
        with conn.cursor() as cur:  # the plain lease never starts a job with a rate key
            assert db.run(cur, sql.job_lease, queues=["rated"], limit=10, worker="w1", lease_seconds=30) == []
        assert sorted(r.id for r in lease_limited(conn, ["rated"])) == ids[:3]
    deferred = {j.id: j for j in Job.objects.filter(id__in=ids[3:])}
    assert {j.state for j in deferred.values()} == {"scheduled"}
    # the bucket is dry: the 4th job's token comes in 20 s (60 s / 3), the 5th's 20 s later
    assert 18 < seconds_from_now(deferred[ids[3]].run_at) <= 20.5
    assert 38 < seconds_from_now(deferred[ids[4]].run_at) <= 40.5
    bucket.refresh_from_db()
    assert bucket.tokens < 0.01 and bucket.deferred_until == deferred[ids[4]].run_at
    late = jobs.partner_call.enqueue("a", "late").id  # a later job queues up behind the deferred ones
    with connect() as conn:
        assert lease_limited(conn, ["rated"]) == []
    assert 58 < seconds_from_now(Job.objects.get(id=late).run_at) <= 60.5


def test_a_dry_key_does_not_hold_back_another_key() -> None:
    backlog = [jobs.partner_call.enqueue("a", f"a{i}").id for i in range(30)]
    others = [jobs.partner_call.enqueue("b", f"b{i}").id for i in range(3)]
    with connect() as conn:
        first = lease_limited(conn, ["rated"], limit=4)  # scans a's first 4 jobs: 3 have tokens
        assert sorted(r.id for r in first) == backlog[:3]
        assert Job.objects.filter(id__in=backlog[3:], state="scheduled").count() == 27  # all of a's others wait
        assert sorted(r.id for r in lease_limited(conn, ["rated"], limit=4)) == others  # b is next, at once
    runs = list(Job.objects.filter(id__in=backlog[3:]).order_by("id").values_list("run_at", flat=True))
    assert runs == sorted(runs) and len(set(runs)) == 27  # in enqueue order, one token apart


def test_deferred_jobs_start_when_their_tokens_have_come() -> None:
    ids = [jobs.partner_call.enqueue("a", f"a{i}").id for i in range(5)]
    with connect() as conn:
        assert len(lease_limited(conn, ["rated"])) == 3
        # 40 s later: the bucket has refilled 2 tokens and both deferred jobs are due
        earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=40)
        RateLimit.objects.filter(key="partner:a").update(updated_at=earlier, deferred_until=earlier)
        Job.objects.filter(id__in=ids[3:]).update(run_at=earlier)
        assert db.run_in_django(sql.job_stage_due, limit=100, channel="pgqueue")[0].staged == 2
        assert sorted(r.id for r in lease_limited(conn, ["rated"])) == ids[3:]
    assert RateLimit.objects.get(key="partner:a").tokens < 0.01


def test_a_rate_key_and_a_queue_concurrency_limit_both_hold() -> None:
    operations.set_limits("rated", concurrency=2)
    ids = [jobs.partner_call.enqueue(acct, f"{acct}{i}").id for acct in "ab" for i in range(2)]
    with connect() as conn:
        first = lease_limited(conn, ["rated"])
        assert len(first) == 2  # the queue's 2 running slots, though both keys have tokens
        end(conn, first)
        assert len(lease_limited(conn, ["rated"])) == 2
    assert set(states(ids)) == {"succeeded", "running"}


def test_a_crash_suspect_spends_a_token_of_its_key() -> None:
    handle = jobs.partner_call.enqueue("a", "suspect")
    Job.objects.filter(id=handle.id).update(crashes=1)
    with connect() as conn:
        assert [r.id for r in lease_suspect(conn, ["rated"])] == [handle.id]
    assert 1.99 < RateLimit.objects.get(key="partner:a").tokens < 2.01


def test_enqueueing_a_job_with_a_rate_key_tells_workers_to_lease_with_limits() -> None:
    with connect() as listener:
        listener.execute("LISTEN pgqueue")
        jobs.partner_call.enqueue("a", "x")
        jobs.add.options(queue="rated").enqueue(1, 1)
        payloads = sorted(n.payload for n in listener.notifies(timeout=2, stop_after=2))
    assert payloads == [",rated:rated", "rated"]


def test_a_rate_limit_change_in_the_code_applies_to_its_bucket() -> None:
    jobs.partner_call.enqueue("a", "x")
    jobs.partner_call.options(rate_limit=2, rate_window=10.0).enqueue("a", "y")
    bucket = RateLimit.objects.get(key="partner:a")
    assert (bucket.limit, bucket.window, bucket.tokens) == (2, 10.0, 2.0)
    jobs.add.options(rate_limit=7).enqueue(1, 2)  # a per-call limit; the key defaults to the job's name
    assert RateLimit.objects.get(key="tests.testapp.jobs.add").limit == 7


def test_replay_and_retry_keep_the_rate_key() -> None:
    handle = jobs.partner_call.enqueue("a", "x")
    Job.objects.filter(id=handle.id).update(state="dead")
    replay = operations.replay([handle.id])
    copy = Job.objects.get(replay_of_id=handle.id)
    assert replay and copy.rate_key == "partner:a" and copy.state == "ready"


def test_the_longest_window_never_defers_a_job_past_a_century() -> None:
    """A year-long window with one start (the longest a check allows) and 150 jobs behind it: each token is a
    year apart, so the last job's would come in year ~2176; it is deferred to a century from now at most,
    and the admin's job list and explain (Python datetimes, year <= 9999) still show every job. Before the
    bound, long backlogs passed year 9999 and those pages failed."""
    from django.contrib.auth.models import User
    from django.test import Client

    from pgqueue.ops.explain import explain

    ids = [h.id for h in jobs.partner_call.options(rate_limit=1, rate_window=31_536_000).enqueue_many(
        [("a", f"a{i}") for i in range(150)])]
    with connect() as conn:
        assert [r.id for r in lease_limited(conn, ["rated"])] == ids[:1]
        assert lease_limited(conn, ["rated"]) == []  # a second lease defers nothing further
    century = 100 * 365.25 * 24 * 3600
    runs = list(Job.objects.filter(id__in=ids[1:]).order_by("id").values_list("run_at", flat=True))
    assert runs == sorted(runs)
    assert 99 * 365 * 24 * 3600 < seconds_from_now(runs[-1]) <= century + 60
    assert seconds_from_now(RateLimit.objects.get(key="partner:a").deferred_until) <= century + 60
    late = jobs.partner_call.options(rate_limit=1, rate_window=31_536_000).enqueue("a", "late").id
    with connect() as conn:
        assert lease_limited(conn, ["rated"]) == []
    assert seconds_from_now(Job.objects.get(id=late).run_at) <= century + 60
    assert explain(ids[-1]).state == "scheduled"
    root = Client()
    root.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    assert root.get("/admin/pgqueue/job/?state__exact=scheduled").status_code == 200
    assert root.get(f"/admin/pgqueue/job/{ids[-1]}/change/").status_code == 200
    assert root.get("/admin/pgqueue/ratelimit/").status_code == 200
