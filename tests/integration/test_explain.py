"""pgqueue_explain on a real PostgreSQL: each reason a job is not running (or is), set up through the public
API and the engine's own statements (a worker's lease and transitions applied by hand, worker processes
registered as a supervisor would), then explained by the library and the command."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db.models.functions import Now

import pgqueue
from pgqueue import Unique, db, operations, sql
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import InvalidJobId, JobNotFound
from pgqueue.lifecycle import AttemptEnd, Ending, ErrorInfo, RetryPolicy, decide
from pgqueue.models import Job, RateLimit, WorkerProcess
from pgqueue.ops.explain import Explanation, explain
from pgqueue.types import LeasedJob
from tests.conftest import ROOT
from tests.conftest import WorkerProcess as WorkerSubprocess
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

NO_DELAY = RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0)
MINUTE = RetryPolicy(backoff=60.0, backoff_max=60.0, jitter=0.0)


def register(worker: str = "w1", queues: str = "default", concurrency: int = 4, kind: str = "worker") -> None:
    """A live process row, as pgqueue_worker's processes write theirs."""
    db.run_in_django(sql.workerprocess_register, id=worker, kind=kind, supervisor="s1", hostname="box", pid=4242,
                     queues=queues, concurrency=concurrency, connections=1)


def lease(queue: str, worker: str = "w1", limit: int = 1, limited: bool = False) -> list[LeasedJob]:
    return db.run_in_django(sql.job_lease_limited if limited else sql.job_lease, queues=[queue], limit=limit,
                            worker=worker, lease_seconds=30)


def end(rows: list[LeasedJob], how: Ending, policy: RetryPolicy = NO_DELAY, retryable: bool = True) -> None:
    """Decide and apply each attempt's transition as the worker's completer would."""
    now = dt.datetime.now(dt.UTC)
    error = None if how is Ending.RETURNED else ErrorInfo(error_class="RuntimeError", message="RuntimeError: boom")
    transitions = [decide(r, AttemptEnd(how=how, worker="w1", finished_at=now, result="1", error=error,
                                        retryable=retryable), policy) for r in rows]
    database = db.Database(connection_kwargs(), owner="w1", role="test")
    try:
        db.apply_transitions(database, transitions, worker="w1", channel="pgqueue")
    finally:
        database.close()


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def reason(found: Explanation, code: str) -> str:
    texts = [r.text for r in found.reasons if r.code == code]
    assert texts, f"no {code} in {found.codes}"
    return texts[0]


# -- scheduled ------------------------------------------------------------------------------------------


def test_a_delayed_job_says_when_it_becomes_ready() -> None:
    register()
    handle = jobs.add.options(delay=3600).enqueue(1, 2)
    found = explain(handle.id)
    assert (found.job_id, found.state, found.codes) == (handle.id, "scheduled", ["scheduled"])
    assert 3590 < found.facts["run_in_seconds"] <= 3600
    assert found.summary.startswith(f"Job {handle.id} (tests.testapp.jobs.add) is scheduled: it becomes ready in 60 min")
    assert (found.facts["queue"], found.facts["attempts"], found.facts["max_attempts"]) == ("default", 0, 3)


def test_a_due_job_that_is_not_staged_blames_the_missing_maintenance_process() -> None:
    register()
    handle = jobs.add.options(delay=3600).enqueue(1, 2)
    Job.objects.filter(id=handle.id).update(run_at=ago(30))
    found = explain(handle.id)
    assert found.codes == ["due_not_staged", "no_maintenance"]
    assert re.search(r"run_at came (30|31) s ago, but it is not staged yet", reason(found, "due_not_staged"))
    assert "every MAINTENANCE_SECONDS (0.2 s)" in reason(found, "due_not_staged")
    register("m1", queues="", concurrency=0, kind="maintenance")
    assert explain(handle.id).codes == ["due_not_staged"]


def test_a_job_deferred_by_its_rate_key_says_when_its_token_comes() -> None:
    register(queues="rated")
    ids = [jobs.partner_call.enqueue("a", f"a{i}").id for i in range(5)]  # 3 per 60 s for account a
    assert len(lease("rated", limit=10, limited=True)) == 3  # the 4th and 5th are deferred
    fourth, fifth = explain(ids[3]), explain(ids[4])
    assert (fourth.state, fourth.codes) == ("scheduled", ["rate_key_deferred"])
    assert 18 < fourth.facts["run_in_seconds"] <= 20.5  # one token every 20 s
    assert (fourth.facts["deferred_ahead"], fifth.facts["deferred_ahead"]) == (0, 1)
    assert "rate key 'partner:a' (3 per 60 s)" in reason(fourth, "rate_key_deferred")
    assert "rate key 'partner:a' deferred it" in fourth.summary


# -- ready but not picked up ----------------------------------------------------------------------------


def test_a_paused_queue_holds_a_ready_job_until_it_is_resumed() -> None:
    register()
    handle = jobs.add.enqueue(1, 2)
    operations.pause("default")
    found = explain(handle.id)
    assert found.codes == ["queue_paused"]
    assert found.summary == f"Job {handle.id} (tests.testapp.jobs.add) is ready but not picked up: queue 'default' is paused."
    operations.drain_and_pause("default")  # worked until empty, then paused: it still runs
    found = explain(handle.id)
    assert found.codes == ["queue_draining", "nothing_blocks"]
    assert (found.facts["ready_ahead"], found.facts["live_workers"]) == (0, 1)


def test_a_tripped_circuit_breaker_says_when_it_resumes_the_queue() -> None:
    register(queues="breaker")
    operations.set_breaker("breaker", failures=1, within=60, cooldown=300)
    jobs.breaker_ok.enqueue("a")
    waiting = jobs.breaker_ok.enqueue("b")
    end(lease("breaker"), Ending.RAISED)  # one failure trips it
    found = explain(waiting.id)
    assert found.codes[0] == "breaker_open"
    text = reason(found, "breaker_open")
    assert "paused by its circuit breaker (1 failures in a row within 60 s (last: RuntimeError))" in text
    assert "maintenance resumes it in 5 min" in text
    assert found.facts["queue_resume_at"] is not None


def test_a_queue_without_a_live_worker() -> None:
    handle = jobs.add.enqueue(1, 2)
    assert explain(handle.id).codes == ["no_worker"]
    register("w-emails", queues="emails")
    assert explain(handle.id).codes == ["no_worker"]  # serves another queue
    register("w1", queues="emails,default")
    assert explain(handle.id).codes == ["nothing_blocks"]
    WorkerProcess.objects.filter(id="w1").update(last_heartbeat=ago(60))  # silent past WORKER_DEAD_AFTER
    found = explain(handle.id)
    assert found.codes == ["no_worker"]
    assert "1 worker process(es) of the queue are silent or dead (w1)" in reason(found, "no_worker")


def test_workers_at_full_concurrency() -> None:
    register(concurrency=1)
    first, second = jobs.add.enqueue(1, 1), jobs.add.enqueue(2, 2)
    assert [r.id for r in lease("default")] == [first.id]
    found = explain(second.id)
    assert found.codes == ["workers_busy"]
    assert "All 1 live worker(s) of queue 'default' are full: 1 job(s) run in their 1 slot(s)" in found.reasons[0].text


def test_a_full_queue_concurrency_limit_names_the_jobs_holding_its_slots() -> None:
    register(queues="lim")
    operations.set_limits("lim", concurrency=1)
    first, second = (jobs.add.options(queue="lim").enqueue(i, i) for i in range(2))
    assert [r.id for r in lease("lim", limit=5, limited=True)] == [first.id]
    found = explain(second.id)
    assert found.codes == ["queue_concurrency_full"]
    assert found.facts["queue_slot_holders"] == [{"id": first.id, "state": "running"}]
    assert f"allows 1 running job(s) at once and all its running slots are taken, by job {first.id} (running)" in \
        found.reasons[0].text


def test_a_queue_rate_limit_out_of_tokens_says_when_the_next_start_comes() -> None:
    register(queues="slow")
    operations.set_limits("slow", rate=1, per=60.0)
    first, second = (jobs.add.options(queue="slow").enqueue(i, i) for i in range(2))
    assert [r.id for r in lease("slow", limit=5, limited=True)] == [first.id]
    found = explain(second.id)
    assert found.codes == ["queue_rate_limited"]
    assert found.facts["queue_rate_tokens"] < 0.1
    assert re.search(r"allows 1 start\(s\) per 60 s .* next start is possible in (59|60) s", found.reasons[0].text)


def test_a_rate_key_without_a_token() -> None:
    register(queues="rated")
    handle = jobs.partner_call.enqueue("a", "x")
    RateLimit.objects.filter(key="partner:a").update(tokens=0, updated_at=Now())  # spent by others just now
    found = explain(handle.id)
    assert found.codes == ["rate_key_no_token"]
    assert re.search(r"rate key 'partner:a' \(3 per 60 s\) has 0.00 token\(s\): the next token comes in (19|20) s",
                     found.reasons[0].text)


def test_a_crash_suspect_waits_for_an_idle_worker_to_run_alone() -> None:
    register(concurrency=4)
    suspect = jobs.add.enqueue(1, 1)
    Job.objects.filter(id=suspect.id).update(crashes=1)
    found = explain(suspect.id)
    assert found.codes == ["crash_suspect_alone", "nothing_blocks"]  # the worker is idle: it leases it next
    jobs.add.enqueue(2, 2)
    assert len(lease("default")) == 1  # the plain lease leaves the suspect out
    found = explain(suspect.id)
    assert found.codes == ["crash_suspect_alone"]
    assert "0 of 1 live worker(s) of the queue are idle now" in found.reasons[0].text
    assert "crash suspect waiting for an idle worker" in found.summary


def test_the_ready_jobs_ahead_are_counted_in_lease_order() -> None:
    register()
    jobs.add.options(priority=5).enqueue(0, 0)
    jobs.add.enqueue(1, 1)
    handle = jobs.add.enqueue(2, 2)
    jobs.add.enqueue(3, 3)  # behind it
    found = explain(handle.id)
    assert found.codes == ["jobs_ahead", "nothing_blocks"]
    assert (found.facts["ready_ahead"], found.facts["ready_ahead_capped"]) == (2, False)


# -- blocked --------------------------------------------------------------------------------------------


def test_a_full_semaphore_names_its_holders_and_the_jobs_ahead() -> None:
    register(queues="flow")
    ids = [jobs.limited.enqueue("g", f"j{i}").id for i in range(4)]  # 2 slots of sem:g
    found = explain(ids[3])
    assert (found.state, found.codes) == ("blocked", ["semaphore_full"])
    assert found.facts["slot_holders"] == [{"id": ids[0], "state": "ready"}, {"id": ids[1], "state": "ready"}]
    assert (found.facts["semaphore_limit"], found.facts["blocked_ahead"], found.facts["semaphore_kind"]) == (
        2, 1, "concurrency")
    assert (f"slot of semaphore 'sem:g' (limit 2): 2 held by job {ids[0]} (ready), job {ids[1]} (ready); 1 blocked "
            "job(s)") in found.reasons[0].text


def test_an_ordering_key_held_by_a_job_waiting_to_retry() -> None:
    register(queues="flow")
    first, second = jobs.ordered.enqueue("s", 0).id, jobs.ordered.enqueue("s", 1).id
    end(lease("flow"), Ending.RAISED, MINUTE)  # it keeps its slot while it waits (ordering_retry='block')
    found = explain(second)
    assert found.codes == ["ordering_key_held"]
    assert re.search(rf"Ordering key 'stream:s' is held by job {first}, which holds the line .* RuntimeError: boom; "
                     r"retry in (59|60) s", found.reasons[0].text)
    holder = explain(first)
    assert (holder.state, holder.codes) == ("scheduled", ["retry_scheduled"])
    assert "1 blocked job(s) of the key wait for it" in holder.reasons[0].text
    assert "(1 of 3 allowed) failed: RuntimeError: boom" in holder.reasons[0].text


def test_copies_with_a_uniqueness_key_held_until_running_wait_for_each_other() -> None:
    register()
    first = jobs.add.options(unique=Unique(until="running")).enqueue(1, 2)
    second = jobs.add.options(unique=Unique(until="running")).enqueue(1, 2)
    found = explain(second.id)
    assert found.codes == ["unique_key_busy"]
    assert found.facts["semaphore_kind"] == "unique"
    assert f"job {first.id} (ready) holds it" in found.reasons[0].text


def test_a_free_slot_waiting_for_the_hand_off_sweep() -> None:
    register(queues="flow")
    jobs.limited.options(concurrency_limit=1).enqueue("l", "a")
    waiting = jobs.limited.options(concurrency_limit=1).enqueue("l", "b")
    jobs.limited.options(concurrency_limit=3).enqueue("l", "c")  # 2 new slots, not used by this enqueue
    found = explain(waiting.id)
    assert found.codes == ["hand_off_pending", "no_maintenance"]
    assert "2 slot(s) of 'sem:l' are free" in found.reasons[0].text


def test_a_slot_held_by_a_job_that_is_gone() -> None:
    register(queues="flow")
    ids = [jobs.limited.enqueue("o", f"j{i}").id for i in range(3)]
    Job.objects.filter(id=ids[0]).delete()
    found = explain(ids[2])
    assert found.codes[:2] == ["slot_orphaned", "no_maintenance"]
    assert f"held by job(s) that no longer hold them (job {ids[0]} (gone))" in found.reasons[0].text


# -- waiting --------------------------------------------------------------------------------------------


def test_a_job_waiting_for_its_dependencies_lists_the_open_ones() -> None:
    register(queues="marks")
    register("m1", queues="", concurrency=0, kind="maintenance")
    a, b = jobs.mark.enqueue("a"), jobs.mark.enqueue("b")
    c = jobs.mark.options(depends_on=[a, b.id]).enqueue("c")
    found = explain(c.id)
    assert (found.state, found.codes) == ("waiting", ["dependency_pending"])
    assert found.facts["depends_on_open"] == [{"id": a.id, "state": "ready"}, {"id": b.id, "state": "ready"}]
    assert found.facts["waiting_on"] == 2
    assert f"It waits for 2 of the 2 job(s) it depends on: job {a.id} (ready), job {b.id} (ready)." in \
        found.reasons[0].text
    Job.objects.filter(id=a.id).update(state="succeeded", finished_at=Now())  # its process died before settling
    found = explain(c.id)
    assert found.codes == ["dependency_pending", "dependency_settle_pending"]


def test_a_job_depending_on_a_job_that_no_longer_exists_waits_forever() -> None:
    register(queues="marks")
    a = jobs.mark.enqueue("a")
    c = jobs.mark.options(depends_on=[a]).enqueue("c")
    Job.objects.filter(id=a.id).delete()
    found = explain(c.id)
    assert found.codes == ["dependency_missing"]
    assert "waits forever" in found.reasons[0].text


# -- running ----------------------------------------------------------------------------------------------


def test_a_running_job_its_lease_its_worker_and_a_cancel_request() -> None:
    register()
    handle = jobs.add.enqueue(1, 2)
    lease("default")
    found = explain(handle.id)
    assert (found.state, found.codes) == ("running", ["running"])
    assert found.facts["lease_owner"] == "w1"
    assert 25 < found.facts["lease_expires_in_seconds"] <= 30
    assert 0 <= found.facts["owner_heartbeat_age_seconds"] < 5
    assert re.fullmatch(rf"Job {handle.id} \(tests.testapp.jobs.add\) is running on worker w1 \(attempt 1\), its "
                        r"lease expires in (29|30) s\.", found.summary)
    assert "It runs on worker w1 (box, pid 4242)" in found.reasons[0].text
    assert operations.cancel(handle.id) == {handle.id: "cancelling"}
    assert explain(handle.id).codes == ["running", "cancel_requested"]
    Job.objects.filter(id=handle.id).update(lease_expires_at=ago(5))
    found = explain(handle.id)
    assert found.codes[:2] == ["lease_expired", "no_maintenance"]
    assert re.search(r"Its lease expired (5\.\d|6\.0) s ago", found.reasons[0].text)
    assert found.facts["rescuable"] is True  # its worker heartbeated after the lease ran out: it no longer holds it
    Job.objects.filter(id=handle.id).update(lease_expires_at=ago(1))
    WorkerProcess.objects.filter(id="w1").update(last_heartbeat=ago(2))  # alive, silent since before the expiry
    found = explain(handle.id)
    assert found.codes[:2] == ["running", "lease_ran_out_held"] and found.facts["rescuable"] is False
    WorkerProcess.objects.filter(id="w1").update(last_heartbeat=ago(60))
    assert explain(handle.id).codes[0] == "worker_silent"


# -- finished ---------------------------------------------------------------------------------------------


def test_a_dead_job_then_its_replay() -> None:
    register()
    handle = jobs.add.options(max_attempts=1).enqueue(1, 2)
    end(lease("default"), Ending.RAISED)
    found = explain(handle.id)
    assert (found.state, found.codes) == ("dead", ["finished"])
    assert (found.facts["reason_code"], found.facts["last_error"]) == ("max_attempts", "RuntimeError: boom")
    assert "reason max_attempts (its last allowed attempt failed or timed out), after 1 attempt(s)" in \
        found.reasons[0].text
    assert found.summary.startswith(f"Job {handle.id} (tests.testapp.jobs.add) is dead (max_attempts) at ")
    new = pgqueue.replay(handle.id)[handle.id]
    found = explain(handle.id)
    assert found.codes == ["finished", "replayed"]
    assert found.facts["replayed_by"] == [{"id": new, "state": "ready"}]
    assert explain(new).facts["replay_of"] == handle.id


def test_a_job_cancelled_for_a_dependency_names_it() -> None:
    a = jobs.mark.enqueue("a")
    c = jobs.mark.options(depends_on=[a]).enqueue("c")
    operations.cancel(a.id)  # after its commit, c is cancelled in turn
    found = explain(c.id)
    assert (found.state, found.codes, found.facts["reason_code"]) == ("cancelled", ["finished"], "dependency")
    assert f"because job {a.id} (tests.testapp.jobs.mark), which it depends on, is cancelled" in found.reasons[0].text


def test_a_uniqueness_key_held_by_the_job_is_explained() -> None:
    register(queues="flow")
    handle = jobs.unique_note.enqueue("x")
    found = explain(handle.id)
    assert found.codes == ["nothing_blocks", "uniqueness"]
    assert (found.facts["lock_key"], found.facts["lock_held"]) == ('tests.testapp.jobs.unique_note:["x"]', True)
    assert "It holds uniqueness key 'tests.testapp.jobs.unique_note:[\"x\"]' until it finishes" in found.reasons[1].text


# -- bad input, unknown jobs, the command -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 2**63, True, "1", 1.0, None])
def test_an_invalid_id_is_refused(bad: object) -> None:
    with pytest.raises(InvalidJobId):
        explain(bad)  # type: ignore[arg-type]


def test_an_unknown_id_says_why_it_may_be_missing() -> None:
    handle = jobs.add.enqueue(1, 2)
    with pytest.raises(JobNotFound, match=rf"^No job with id 999999: no job has been given that id yet \(the "
                                          rf"highest id given so far is {handle.id}\)\.$"):
        explain(999999)
    operations.cancel(handle.id)
    operations.delete_finished(handle.id)
    with pytest.raises(JobNotFound, match=rf"^No job with id {handle.id}: it was deleted, or pruned after its retention"):
        explain(handle.id)


def test_the_command_prints_the_summary_the_reasons_and_the_facts() -> None:
    handle = jobs.add.enqueue(1, 2)
    operations.pause("default")
    out = io.StringIO()
    call_command("pgqueue_explain", str(handle.id), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"Job {handle.id} (tests.testapp.jobs.add) is ready but not picked up: queue 'default' is paused."
    assert lines[1].startswith("  [queue_paused] Queue 'default' is paused: workers lease nothing from it")
    assert lines[2].startswith("  [no_worker] No live worker process serves queue 'default'")
    assert "facts:" in lines and "  queue: default" in lines and "  ready_ahead: 0" in lines
    out = io.StringIO()
    call_command("pgqueue_explain", str(handle.id), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["job_id"], data["state"]) == (handle.id, "ready")
    assert [r["code"] for r in data["reasons"]] == ["queue_paused", "no_worker"]
    assert (data["facts"]["queue"], data["facts"]["queue_paused"]) == ("default", True)
    again = explain(handle.id).to_dict()
    assert data["facts"].pop("checked_at") <= again["facts"].pop("checked_at")  # ISO text in UTC sorts by time
    assert data == again


@pytest.mark.parametrize(("argument", "message"), [
    ("999999", "No job with id 999999: no job has been given that id yet"),
    ("0", "job id 0 is out of range: job ids are integers from 1 to 9223372036854775807."),
    (str(2**63), "job id 9223372036854775808 is out of range"),
    ("abc", "a job id is an integer from 1 to 9223372036854775807, got str 'abc'."),
])
def test_the_command_refuses_bad_input(argument: str, message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("pgqueue_explain", argument)


def test_the_command_exits_with_status_1_for_an_unknown_job() -> None:
    env = {"DATABASE_URL": WorkerSubprocess.database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "-m", "django", "pgqueue_explain", "999999"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "CommandError: No job with id 999999" in done.stderr
