"""Schedules with real processes: two supervisors, each with its scheduler, enqueue every tick of a
schedule that ticks every second exactly once."""

from __future__ import annotations

import itertools
import json

import pytest

from pgqueue.models import Job, Schedule, ScheduleTick, WorkerProcess
from tests.conftest import wait_for
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

EVERY_SECOND = json.dumps({"every-second": {"task": "tests.testapp.jobs.mark", "cron": "* * * * * *",
                                            "args": ["tick"]}})


def test_two_supervisors_enqueue_each_tick_once(start_worker) -> None:
    env = {"PGQUEUE_SCHEDULES": EVERY_SECOND}
    first = start_worker("--queues", "marks", env=env)
    second = start_worker("--queues", "marks", "--no-maintenance", env=env)
    wait_for(lambda: WorkerProcess.objects.filter(kind="scheduler", state="running").count() == 2, timeout=30,
             what="two schedulers")
    start = ScheduleTick.objects.count()
    wait_for(lambda: ScheduleTick.objects.count() >= start + 5, timeout=30, what="five more ticks")
    first.stop()
    second.stop()
    ticks = list(ScheduleTick.objects.order_by("tick").values_list("tick", "job_id"))
    assert len({t for t, _ in ticks}) == len(ticks)  # each tick once
    assert all((b[0] - a[0]).total_seconds() == 1 for a, b in itertools.pairwise(ticks))  # none skipped
    assert sorted(Job.objects.values_list("id", flat=True)) == sorted(j for _, j in ticks)
    assert Mark.objects.filter(label="tick").count() == Job.objects.filter(state="succeeded").count()
    assert Schedule.objects.get().last_job_id == ticks[-1][1]
