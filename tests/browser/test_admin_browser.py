"""The admin in a real browser (Debian's chromium driven by Playwright): overview, filter, a dead job's
page, replay from the list, retry from the job's own page, pause and resume. Saves screenshots
(docs/images/ holds the current ones; test_layout.py saves each page at 1280 and 1920 px)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from pgqueue.models import Attempt, AuditEntry, Job, QueueStat, QueueState
from tests.testapp import jobs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_page(browser):
    return browser.new_page(viewport={"width": 1280, "height": 900})


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PGQUEUE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def seed() -> Job:
    now = timezone.now().replace(second=0, microsecond=0)
    QueueStat.objects.bulk_create([
        QueueStat(bucket=now - dt.timedelta(minutes=m), queue=q, worker="host-1-w0",
                  succeeded=40 + (m * 7 + i * 13) % 35, dead=(m % 9 == 0) * (1 + i))
        for m in range(0, 24 * 60, 3) for i, q in enumerate(["default", "emails"])
    ])
    jobs.add.enqueue_many([(i, i) for i in range(5)])
    jobs.mark.options(delay=3600).enqueue("later")
    h = jobs.always_fails.enqueue("payment")
    Job.objects.filter(pk=h.id).update(state="dead", attempts=3, reason_code="max_attempts",
                                       error_class="RuntimeError", last_error="RuntimeError: boom payment",
                                       finished_at=timezone.now())
    job = Job.objects.get(pk=h.id)
    for n in (1, 2, 3):
        Attempt.objects.create(job=job, number=n, worker=f"host-1-w{n % 2}", started_at=job.created_at,
                               finished_at=job.created_at, duration=0.02 * n, outcome="failed",
                               error_class="RuntimeError", message="boom payment",
                               traceback='Traceback (most recent call last):\n  File "jobs.py", line 52\n'
                                         "RuntimeError: boom payment")
    return job


def test_operator_journey(browser_page, live_server, shots: Path) -> None:
    page = browser_page
    User.objects.create_superuser("admin", "admin@example.com", "admin")
    dead = seed()

    page.goto(f"{live_server.url}/admin/login/?next=/admin/pgqueue/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    page.click("input[type=submit]")

    # the overview
    page.wait_for_selector("#pgqueue-overview")
    assert page.locator(".pgqueue-queue").count() >= 2
    assert "went dead in the last hour" in page.inner_text("#pgqueue-overview")
    page.screenshot(path=str(shots / "admin-overview.png"), full_page=True)

    # filter the job list down to dead jobs
    page.goto(f"{live_server.url}/admin/pgqueue/job/")
    page.click("#changelist-filter a:text-is('Dead')")
    page.wait_for_url("**state__exact=dead**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "RuntimeError: boom payment" in rows.first.inner_text()  # the last error, under its task

    # the dead job's page: why it is dead first, then its attempts, the latest traceback open
    rows.first.locator("th a").click()
    page.wait_for_selector("#pgqueue-summary")
    assert "Failed every attempt it was allowed." in page.inner_text("#pgqueue-summary")
    assert page.locator(".pgqueue-attempt").count() == 3
    assert "RuntimeError: boom payment" in page.inner_text("#pgqueue-attempts details[open]")
    assert page.locator("#pgqueue-summary button").all_inner_texts() == ["Retry", "Replay", "Delete"]

    # replay it from the list: confirmation with the count, then the new job
    page.goto(f"{live_server.url}/admin/pgqueue/job/?state__exact=dead")
    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "replay_jobs")
    page.click("button[name=index]")
    page.wait_for_selector("#pgqueue-confirm")
    assert page.inner_text(".pgqueue-count") == "1 job"
    page.screenshot(path=str(shots / "admin-replay-confirm.png"), full_page=True)
    page.click("#pgqueue-confirm input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Replay: 1 of 1 selected job changed" in page.inner_text(".messagelist")
    new = Job.objects.get(replay_of_id=dead.id)
    page.goto(f"{live_server.url}/admin/pgqueue/job/{new.id}/change/")
    assert f"#{dead.id}" in page.inner_text("#pgqueue-summary")  # "Replay of #..."

    # retry it from its own page: one click, the confirmation, and back on the job, now ready
    page.goto(f"{live_server.url}/admin/pgqueue/job/{dead.id}/change/")
    page.click("#pgqueue-summary button:text-is('Retry')")
    page.wait_for_selector("#pgqueue-confirm")
    assert page.inner_text(".pgqueue-count") == "1 job"
    page.click("#pgqueue-confirm input[type=submit]")
    page.wait_for_url(f"**/admin/pgqueue/job/{dead.id}/change/")
    assert "Retry now: 1 of 1 selected job changed." in page.inner_text(".messagelist")
    assert page.inner_text("#pgqueue-summary .pgqueue-state") == "ready"
    assert Job.objects.get(pk=dead.id).state == "ready"
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == ["replay_jobs", "retry_now"]

    # pause and resume a queue
    page.goto(f"{live_server.url}/admin/pgqueue/queuestate/")
    page.check("#result_list input.action-select[value='default']")
    page.select_option("select[name=action]", "pause_queues")
    page.click("button[name=index]")
    page.click("#pgqueue-confirm input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert QueueState.objects.get(name="default").paused
    page.screenshot(path=str(shots / "admin-queues-paused.png"), full_page=True)
    page.check("#result_list input.action-select[value='default']")
    page.select_option("select[name=action]", "resume_queues")
    page.click("button[name=index]")
    page.click("#pgqueue-confirm input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert not QueueState.objects.get(name="default").paused
