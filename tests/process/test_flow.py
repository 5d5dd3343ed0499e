"""Flow control with real worker processes: semaphores and ordering keys across processes, and what a
SIGKILL leaves of slots and keys."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from django.db import connections
from django.db.models import Count

from pgqueue import operations
from pgqueue.models import Attempt, AuditEntry, Job, Lock, QueueState, SemaphoreSlot, WorkerProcess
from tests.conftest import wait_for
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def done(n: int, task: str | None = None):
    def check() -> bool:
        rows = Job.objects.filter(state__in=["succeeded", "dead", "cancelled"])
        return (rows.filter(task=task) if task else rows).count() >= n
    return check


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


def test_a_semaphore_of_two_over_200_jobs_in_two_processes(start_worker) -> None:
    handles = jobs.limited.enqueue_many([("g", f"j{i}", 0.005) for i in range(200)])
    assert Job.objects.filter(state="ready").count() == 2
    running_seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        try:
            while not stop.is_set():
                running_seen.append(Job.objects.filter(concurrency_key="sem:g", state="running").count())
                time.sleep(0.002)
        finally:
            connections.close_all()

    sampler = threading.Thread(target=sample)
    sampler.start()
    start_worker("--queues", "flow", "--processes", "2", "--concurrency", "4")
    try:
        wait_for(done(200), timeout=120, what="200 jobs under a semaphore of 2")
    finally:
        stop.set()
        sampler.join(10)
    assert Job.objects.filter(id__in=[h.id for h in handles], state="succeeded").count() == 200
    assert len(running_seen) > 50 and max(running_seen) <= 2 and 2 in running_seen
    intervals = [(a.started_at.timestamp(), a.finished_at.timestamp())
                 for a in Attempt.objects.filter(job_id__in=[h.id for h in handles])]
    assert len(intervals) == 200 and most_at_once(intervals) <= 2
    assert len(set(Mark.objects.values_list("pid", flat=True))) == 2  # both processes ran some
    assert SemaphoreSlot.objects.filter(job_id__isnull=False).count() == 0


def test_sigkill_of_a_holder_gives_slots_and_keys_back(start_worker) -> None:
    holders = [jobs.limited_unique.enqueue("k", f"held{i}", 30.0) for i in range(2)]
    blocked = [jobs.limited_unique.enqueue("k", f"next{i}") for i in range(3)]
    assert [Job.objects.get(id=h.id).state for h in blocked] == ["blocked"] * 3
    worker = start_worker("--queues", "flow", "--processes", "1", "--concurrency", "4")
    wait_for(lambda: Mark.objects.filter(label__startswith="held").count() == 2, what="both holders to start")
    pid = WorkerProcess.objects.get(kind="worker", state="running").pid
    os.kill(pid, signal.SIGKILL)
    wait_for(done(5), timeout=60, what="the holders to run again and the blocked jobs after them")
    rows = {j.id: j for j in Job.objects.all()}
    assert all(j.state == "succeeded" for j in rows.values())
    for h in holders:
        outcomes = list(Attempt.objects.filter(job_id=h.id).order_by("number").values_list("outcome", flat=True))
        assert outcomes == ["lost", "succeeded"]
    assert Lock.objects.filter(released=False).count() == 0  # every key released with its job
    assert SemaphoreSlot.objects.filter(job_id__isnull=False).count() == 0
    assert worker.proc.poll() is None  # the supervisor replaced its child


def test_ordering_key_runs_strictly_in_order_across_two_processes(start_worker) -> None:
    jobs.ordered.enqueue_many([("a", i, 0.01) for i in range(40)])
    jobs.ordered.enqueue_many([("b", i) for i in range(20)])
    start_worker("--queues", "flow", "--processes", "2", "--concurrency", "4")
    wait_for(done(60), timeout=90, what="60 ordered jobs")
    for stream, n in (("a", 40), ("b", 20)):
        seqs = list(Mark.objects.filter(label=f"ordered:{stream}").order_by("id").values_list("attempt", flat=True))
        assert seqs == list(range(n))
        ids = Job.objects.filter(concurrency_key=f"stream:{stream}").values_list("id", flat=True)
        intervals = [(a.started_at.timestamp(), a.finished_at.timestamp())
                     for a in Attempt.objects.filter(job_id__in=list(ids))]
        assert most_at_once(intervals) == 1
    assert Mark.objects.values("pid").annotate(n=Count("id")).count() == 2


@pytest.mark.parametrize(("task", "expected"), [
    (jobs.ordered_flaky, [0, 0, 1, 2]),  # block: the retry holds the line
    (jobs.ordered_flaky_skip, [0, 1, 2, 0]),  # skip: the others run during its retry delay
])
def test_a_failed_ordered_job_blocks_or_skips(start_worker, task, expected) -> None:
    task.enqueue_many([("s", i) for i in range(3)])
    start_worker("--queues", "flow", "--processes", "2", "--concurrency", "2")
    wait_for(done(3), timeout=60, what="three ordered jobs")
    assert list(Mark.objects.order_by("id").values_list("attempt", flat=True)) == expected


def test_a_busy_queue_does_not_starve_another_queue_of_the_same_worker(start_worker) -> None:
    jobs.mark.enqueue_many([(f"backlog{i}", 0.05) for i in range(200)])  # ~5 s of work for 2 threads
    quick = [jobs.add.enqueue(i, i).id for i in range(5)]  # enqueued after the whole backlog
    start_worker("--queues", "marks,default", "--concurrency", "2")
    wait_for(lambda: Job.objects.filter(id__in=quick, state="succeeded").count() == 5, timeout=30,
             what="the five jobs of the quiet queue")
    # counted at the quick jobs' last start, not when this test saw them done (the backlog goes on meanwhile)
    last_start = max(Job.objects.filter(id__in=quick).values_list("started_at", flat=True))
    assert Mark.objects.filter(label__startswith="backlog", created_at__lt=last_start).count() < 100  # turns


def test_a_queue_concurrency_limit_holds_across_two_processes(start_worker) -> None:
    operations.set_limits("marks", concurrency=2)
    handles = jobs.mark.enqueue_many([(f"m{i}", 0.03) for i in range(40)])
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "4")
    wait_for(done(40), timeout=60, what="40 jobs of a queue limited to 2 running")
    intervals = [(a.started_at.timestamp(), a.finished_at.timestamp())
                 for a in Attempt.objects.filter(job_id__in=[h.id for h in handles])]
    assert len(intervals) == 40 and most_at_once(intervals) == 2
    assert SemaphoreSlot.objects.filter(job_id__isnull=False).count() == 0


def test_a_queue_rate_limit_is_kept_within_one_start(start_worker) -> None:
    rate, per, n = 10, 1.0, 40
    operations.set_limits("marks", rate=rate, per=per)
    handles = jobs.mark.enqueue_many([(f"r{i}",) for i in range(n)])
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "4")
    wait_for(done(n), timeout=60, what="40 rate-limited jobs")
    starts = sorted(a.started_at.timestamp() for a in Attempt.objects.filter(job_id__in=[h.id for h in handles]))
    # A bucket of `rate` tokens refilled at rate/per a second: by time t after the first start, at most
    # rate + t * rate / per starts (plus one for the rounding of the refill).
    for i, t in enumerate(starts):
        assert i + 1 <= rate + (t - starts[0]) * rate / per + 1, (i, t - starts[0])
    span = starts[-1] - starts[0]
    assert (n - rate) * per / rate - 0.5 <= span <= (n - rate) * per / rate + 3.0, span  # ~3 s: not much slower


def test_a_rate_limit_per_key_is_kept_within_one_start_and_keys_do_not_wait_for_each_other(start_worker) -> None:
    rate, per, n = 5, 1.0, 20  # jobs.paced: 5 starts per second per account
    handles = {acct: jobs.paced.enqueue_many([(acct, f"{acct}{i}") for i in range(n)]) for acct in "ab"}
    start_worker("--queues", "rated", "--processes", "2", "--concurrency", "4")
    wait_for(done(2 * n), timeout=60, what="40 jobs paced per key")
    firsts = []
    for acct, hs in handles.items():
        starts = sorted(a.started_at.timestamp() for a in Attempt.objects.filter(job_id__in=[h.id for h in hs]))
        assert len(starts) == n  # each ran once
        # a bucket of `rate` tokens refilled at rate/per a second: by time t after the key's first start,
        # at most rate + t * rate / per starts (plus one for the rounding of the refill)
        for i, t in enumerate(starts):
            assert i + 1 <= rate + (t - starts[0]) * rate / per + 1, (acct, i, t - starts[0])
        span = starts[-1] - starts[0]
        assert (n - rate) * per / rate - 0.5 <= span <= (n - rate) * per / rate + 3.0, (acct, span)  # ~3 s
        firsts.append(starts[0])
    assert abs(firsts[0] - firsts[1]) < 1.0  # the keys ran side by side


def test_the_breaker_trips_pauses_and_resumes_after_its_cool_down(start_worker) -> None:
    operations.set_breaker("breaker", failures=3, within=60, cooldown=2)
    jobs.breaker_fails.enqueue_many([(f"f{i}",) for i in range(3)])
    start_worker("--queues", "breaker", "--concurrency", "1")
    wait_for(lambda: QueueState.objects.get(name="breaker").paused, what="the breaker to trip")
    tripped = AuditEntry.objects.get(action="breaker_tripped").at
    later = jobs.breaker_ok.enqueue("after")
    wait_for(lambda: Job.objects.get(id=later.id).state == "succeeded", timeout=30, what="the queue to resume")
    ran = Attempt.objects.get(job_id=later.id).started_at
    assert (ran - tripped).total_seconds() >= 1.5  # not before the cool-down (2 s, maintenance every 0.5 s)
    assert AuditEntry.objects.filter(action="breaker_resumed").exists()
    assert not QueueState.objects.get(name="breaker").paused
