"""The console's overview, queues, schedules and workers pages: every known queue listed and pausable,
bounded queries however many queues there are, charts that state the failure rate, times in words."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pgqueue.models import Job, QueueStat, QueueState, Schedule, WorkerProcess
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)
QUEUES = "/admin/pgqueue/queuestate/"


def live_worker(id: str, queues: str, **fields) -> WorkerProcess:
    return WorkerProcess.objects.create(id=id, kind="worker", hostname="box", pid=1, queues=queues, concurrency=4,
                                        last_heartbeat=timezone.now(), **fields)


def row(page: str, name: str) -> str:
    """The queue list's row of `name`, its tags stripped, or "" if it is not listed."""
    found = re.search(rf'<tr>(?:(?!</tr>).)*value="{re.escape(name)}".*?</tr>', page, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group())).strip() if found else ""


def test_the_queue_list_shows_every_known_queue_and_pauses_an_idle_one(root: Client) -> None:
    jobs.add.enqueue(1, 2)  # default: a queue with a job
    QueueState.objects.create(name="reports", concurrency_limit=2)  # a row, no job
    live_worker("w-imports", "default,imports")  # served by a live worker, no job nor row
    Schedule.objects.create(name="nightly", task="tests.testapp.jobs.partner_call", cron="0 3 * * *")
    page = root.get(QUEUES).content.decode()
    for name in ("default", "reports", "imports", "breaker", "marks", "rated"):  # breaker: only jobs declare it
        assert row(page, name), name
    assert re.fullmatch(r"default active 1 0 0 0 \d s 1 \(4 threads\) \d+ jobs", row(page, "default"))
    assert row(page, "imports") == "imports active 0 0 0 0 - 1 (4 threads) -"
    assert row(page, "breaker") == "breaker active 0 0 0 0 - none 2 jobs"
    assert "1 schedule" in row(page, "rated")  # the schedule's job is on queue "rated"
    assert 'title="tests.testapp.jobs.breaker_fails\ntests.testapp.jobs.breaker_ok"' in page  # hover: who declares it
    assert not QueueState.objects.filter(name="breaker").exists()  # listing it wrote nothing

    data = {"action": "pause_queues", "_selected_action": ["breaker"], "index": 0, "confirm": "yes"}
    assert root.post(QUEUES, data).status_code == 302
    assert QueueState.objects.get(name="breaker").paused  # pausing created its row
    assert row(root.get(QUEUES).content.decode(), "breaker").startswith("breaker paused")


def test_searching_and_pausing_all_matching_reaches_queues_without_a_row(root: Client) -> None:
    page = root.get(QUEUES, {"q": "brea"}).content.decode()
    assert row(page, "breaker") and not row(page, "marks") and "1 queue" in page
    data = {"action": "pause_queues", "_selected_action": ["breaker"], "index": 0, "select_across": "1",
            "confirm": "yes"}
    assert root.post(f"{QUEUES}?q=brea", data).status_code == 302
    assert list(QueueState.objects.filter(paused=True).values_list("name", flat=True)) == ["breaker"]


def test_a_queue_with_waiting_jobs_and_no_worker_is_marked(root: Client) -> None:
    jobs.mark.enqueue("x")
    live_worker("w-default", "default")
    page = root.get(QUEUES).content.decode()
    assert "no worker" in row(page, "marks")
    assert "no worker" not in row(page, "default")


def test_the_queue_list_runs_the_same_queries_for_3_or_30_queues(root: Client) -> None:
    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert root.get(QUEUES).status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    for i in range(3):
        jobs.add.options(queue=f"q{i}").enqueue(1, 2)
    few = queries()
    for i in range(3, 30):
        jobs.add.options(queue=f"q{i}").enqueue(1, 2)
        QueueState.objects.create(name=f"row{i}")
    many = queries()
    assert "q29" in root.get(QUEUES).content.decode()
    assert len(many) == len(few), "\n".join(many)
    assert not [sql for sql in many if re.search(r"pgqueue_job\"?\.\"?queue\"? = ", sql)]  # no count per queue


def test_the_overview_states_the_failure_rate_and_times_in_words(root: Client) -> None:
    now = timezone.now()
    QueueStat.objects.create(bucket=now.replace(second=0, microsecond=0), queue="default", worker="w",
                             succeeded=9_999, dead=1, retried=3)
    dead = jobs.add.enqueue(1, 2)
    Job.objects.filter(pk=dead.id).update(state="dead", finished_at=now, error_class="RuntimeError")
    live_worker("w-1", "default,emails")
    WorkerProcess.objects.create(id="m-1", kind="maintenance", hostname="box", pid=2, last_heartbeat=now)
    page = root.get("/admin/pgqueue/").content.decode()
    assert "1 job went dead in the last hour." in page and "job(s)" not in page
    assert page.count(">just now<") == 2 and "0 minutes" not in page
    assert "default, emails" in page  # a worker's queues, with room to wrap
    hour = page[page.index("Last hour, per minute"):page.index("Last 24 hours")]
    assert re.search(r"<strong>9,999</strong> succeeded · <strong[^>]*>1</strong> dead \(0.01 %\) · 3 attempts retried",
                     hour)
    assert "9,999 succeeded, 1 dead, 3 attempts retried; 0.04 % of attempts failed" in hour  # a bar's hover title
    assert {"0", "5k", "10k"} <= set(re.findall(r"<text[^>]*>([^<]*)</text>", hour))  # the y axis
    red = [float(h) for h in re.findall(r'height="([\d.]+)" fill="#dc2626"', hour)]
    assert len(red) == 2 and min(red) >= 2  # the one dead job shows on the bar and on the failure strip
    day = page[page.index("Last 24 hours"):]
    assert f"{timezone.localtime(now - dt.timedelta(hours=23)):%a %d %b}" in day  # the day chart's first date
    assert "attempt failed, retried" in page  # the legend
    queues = page[page.index('id="pgqueue-queues"'):page.index("Last hour, per minute")]
    assert "done, 1 h" in queues and "dead, 1 h" in queues and "9,999" in queues and "(0.01 %)" in queues


def test_schedules_and_workers_say_when_in_words(root: Client) -> None:
    now = timezone.now()
    Schedule.objects.create(name="nightly", task="tests.testapp.jobs.mark", cron="0 3 * * *", timezone="Europe/Paris",
                            last_tick_at=now - dt.timedelta(minutes=5), next_tick_at=now + dt.timedelta(hours=2))
    page = root.get("/admin/pgqueue/schedule/").content.decode()
    assert '<code class="pgqueue-nowrap">0 3 * * *</code>' in page and "Europe/<wbr>Paris" in page
    assert "5 min ago" in page and "in 120 min" in page
    live_worker("w-1", "default,emails", started_at=now - dt.timedelta(hours=3))
    WorkerProcess.objects.create(id="w-gone", kind="worker", hostname="box", pid=3, state="running",
                                 last_heartbeat=now - dt.timedelta(minutes=10))
    page = root.get("/admin/pgqueue/workerprocess/").content.decode()
    assert ">just now<" in page and "up 3.0 h" in page and "4 threads" in page and "default, emails" in page
    assert re.search(r'class="pgqueue-bad"[^>]*>10 min ago<', page)  # silent for too long: in red
