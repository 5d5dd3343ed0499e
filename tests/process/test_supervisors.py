"""Several supervisors against one database, directly: four run every job once (their executions recorded
by the jobs themselves), exactly one maintenance process leads, and when the leader's whole tree is killed
with SIGKILL another leads within LEADER_SECONDS (plus a round) and the killed tree's jobs are taken back."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import psycopg
import pytest

from pgqueue.conf import get_settings
from pgqueue.db import connection_kwargs
from pgqueue.models import Attempt, Job, WorkerProcess
from tests.conftest import wait_for
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def test_four_supervisors_one_leader_a_takeover_and_every_job_once(start_worker) -> None:
    handles = jobs.mark.enqueue_many([(f"four-{i}", 0.02) for i in range(600)])
    supervisors = [start_worker("--queues", "marks", "--processes", "1", "--concurrency", "4") for _ in range(4)]
    samples: list[tuple[str, int] | None] = []
    stop = threading.Event()

    def sample() -> None:  # the live lead, every 50 ms, by the database's word
        with psycopg.connect(**connection_kwargs(), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT holder, token FROM pgqueue_leader WHERE role = 'maintenance' "
                                   "AND expires_at > now()").fetchone()
                samples.append((row[0], row[1]) if row else None)
                time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wait_for(lambda: Mark.objects.count() >= 150, timeout=60, what="the supervisors at work")
    leads = [lead for s in supervisors for lead in s.leads()]
    assert len(leads) == 1, leads  # one of the four maintenance processes leads
    (holder, token), = leads
    victim = next(s for s in supervisors if s.leads())
    victim_id = WorkerProcess.objects.get(kind="supervisor", pid=victim.proc.pid, state="running").id
    killed_at = time.monotonic()
    os.killpg(victim.proc.pid, signal.SIGKILL)  # the leader, its supervisor and its worker at once
    victim.proc.wait(10)
    survivors = [s for s in supervisors if s is not victim]
    settings = get_settings()
    wait_for(lambda: any(s.leads() for s in survivors), timeout=settings.lead_seconds + 10, what="a new leader")
    took = time.monotonic() - killed_at
    assert took <= settings.lead_seconds + settings.MAINTENANCE_SECONDS + 1.0, took
    (new_holder, new_token), = [lead for s in survivors for lead in s.leads()]
    assert new_holder != holder and new_token == token + 1
    wait_for(lambda: Job.objects.filter(state="succeeded").count() == 600, timeout=90, what="all 600 jobs")
    stop.set()
    sampler.join(5)

    live = [s for s in samples if s is not None]
    assert {s for s in live} == {(holder, token), (new_holder, new_token)}  # never anyone else
    assert [t for _, t in live] == sorted(t for _, t in live)  # and never back
    assert {h.id for h in handles} == set(Mark.objects.values_list("job_id", flat=True))
    lost = set(Attempt.objects.filter(outcome="lost").values_list("job_id", flat=True))
    runs = Counter(Mark.objects.values_list("job_id", flat=True))
    assert all(n == 1 or job_id in lost for job_id, n in runs.items()), runs.most_common(3)
    # only the killed tree's worker lost attempts: the jobs it ran, and those it had finished but not yet
    # written, were taken back and run again
    assert lost and all(w.startswith(victim_id) for w in Attempt.objects.filter(outcome="lost")
                        .values_list("worker", flat=True))
    assert len(set(Mark.objects.values_list("pid", flat=True))) >= 4  # every supervisor's worker took part
