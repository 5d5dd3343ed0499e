"""Odd input to pgqueue's admin pages (Unicode digits, ids beyond bigint, NUL characters, junk paging,
ordering and dates, forged action posts): a normal page, a redirect with a message or a 404, never a 500,
and never a write. GETs of every page write nothing either."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.utils import timezone

from pgqueue.models import Attempt, AuditEntry, Job, QueueState, WorkerProcess

pytestmark = pytest.mark.django_db
ADMIN = "/admin/pgqueue/"
JOBS = f"{ADMIN}job/"
QUEUES = f"{ADMIN}queuestate/"
INVALID = f"{JOBS}?e=1"  # Django's answer to filters it cannot apply: the unfiltered list
HUGE = "99999999999999999999"  # beyond bigint
LONG_DIGITS = "9" * 5000  # int() refuses more than 4,300 digits


@dataclass
class Site:
    client: Client
    job: Job
    attempt: Attempt
    worker: WorkerProcess
    audit: AuditEntry


@pytest.fixture
def site() -> Site:
    now = timezone.now()
    job = Job.objects.create(queue="default", task="tests.testapp.jobs.add", args=[1, 2], state="dead",
                             attempts=1, reason_code="max_attempts", error_class="RuntimeError", last_error="boom",
                             finished_at=now)
    attempt = Attempt.objects.create(job=job, number=1, worker="w1", started_at=now, finished_at=now, duration=0.5,
                                     outcome="failed", error_class="RuntimeError", message="boom")
    # 60 more jobs: the job list has two pages, so page numbers are checked.
    Job.objects.bulk_create(Job(queue="default", task="tests.testapp.jobs.add", args=[i, i]) for i in range(60))
    Job.objects.create(queue="marks", task="tests.testapp.jobs.mark", args=["x"])  # a queue without a row
    QueueState.objects.create(name="default")
    worker = WorkerProcess.objects.create(id="w1", kind="worker", hostname="h", pid=1)
    audit = AuditEntry.objects.create(username="root", action="retry_now", target="job", count=1, selected=1)
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return Site(client, job, attempt, worker, audit)


def snapshot() -> dict[str, tuple[int, str]]:
    """Row count and a digest of the contents of every pgqueue table."""
    tables = sorted(t for t in connection.introspection.table_names() if t.startswith("pgqueue_"))
    assert "pgqueue_queuestate" in tables and "pgqueue_job" in tables
    state = {}
    with connection.cursor() as cursor:
        for table in tables:
            name = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
                           f"FROM {name} r")
            state[table] = cursor.fetchone()
    return state


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# (url, status, where it redirects to, a word of the message shown)
GETS = [
    # the job search: "²".isdigit() is True but int("²") fails; ids beyond bigint; NUL
    (f"{JOBS}?q=%C2%B2", 200, None, None),
    (f"{JOBS}?q={HUGE}", 200, None, None),
    (f"{JOBS}?q=-1", 200, None, None),
    (f"{JOBS}?q={LONG_DIGITS}", 200, None, None),
    (f"{JOBS}?q=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?e=1&q=%00", 302, INVALID, "NUL"),  # not Django's "database error" page
    # NUL in filter values: psycopg refuses it before the query reaches PostgreSQL
    (f"{JOBS}?queue=a%00b", 302, INVALID, "NUL"),
    (f"{JOBS}?task=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?state=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?state__exact=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?reason_code=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?reason_code__exact=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?queue%00=default", 302, INVALID, "NUL"),
    # ordering, paging, show-all, dates, raw lookups
    (f"{JOBS}?o=junk", 200, None, None),
    (f"{JOBS}?o=99.-%C2%B2.{LONG_DIGITS}", 200, None, None),
    (f"{JOBS}?p=junk", 200, None, None),
    (f"{JOBS}?p=%C2%B2", 200, None, None),
    (f"{JOBS}?p={HUGE}", 302, INVALID, None),
    (f"{JOBS}?p=-1", 302, INVALID, None),
    (f"{JOBS}?all=junk", 200, None, None),
    (f"{JOBS}?created_at__gte=junk", 302, INVALID, None),
    (f"{JOBS}?created_at__lt=99999-01-01", 302, INVALID, None),
    (f"{JOBS}?created_at__gte=%00", 302, INVALID, "NUL"),
    (f"{JOBS}?id=%C2%B2", 302, INVALID, None),
    (f"{JOBS}?id={HUGE}", 200, None, None),
    # invalid UTF-8 (a lone surrogate) is replaced by Django; very long values
    (f"{JOBS}?q=%ED%A0%80", 200, None, None),
    (f"{JOBS}?queue=%ED%A0%80", 200, None, None),
    (f"{JOBS}?queue={'x' * 20000}", 200, None, None),
    # object URLs: the admin's "does not exist" redirect to its index, with a message
    (f"{JOBS}%C2%B2/change/", 302, "/admin/", "exist"),
    (f"{JOBS}{HUGE}/change/", 302, "/admin/", "exist"),
    (f"{JOBS}-1/change/", 302, "/admin/", "exist"),
    (f"{JOBS}{LONG_DIGITS}/change/", 302, "/admin/", "exist"),
    (f"{JOBS}%00/change/", 302, "/admin/", "exist"),
    (f"{JOBS}%C2%B2/history/", 302, "/admin/", "exist"),
    (f"{ADMIN}attempt/%C2%B2/change/", 302, "/admin/", "exist"),
    (f"{QUEUES}%00/change/", 302, "/admin/", "exist"),
    (f"{QUEUES}a%00b/history/", 302, "/admin/", "exist"),
    (f"{ADMIN}workerprocess/%00/change/", 302, "/admin/", "exist"),
    (f"{ADMIN}auditentry/{HUGE}/change/", 302, "/admin/", "exist"),
    # the other lists
    (f"{ADMIN}attempt/?q=%C2%B2", 200, None, None),
    (f"{ADMIN}attempt/?q={HUGE}", 200, None, None),
    (f"{ADMIN}attempt/?outcome__exact=%00", 302, f"{ADMIN}attempt/?e=1", "NUL"),
    (f"{QUEUES}?q=%00", 302, f"{QUEUES}?e=1", "NUL"),
    (f"{ADMIN}workerprocess/?state__exact=%00", 302, f"{ADMIN}workerprocess/?e=1", "NUL"),
    (f"{ADMIN}auditentry/?action__exact=%00", 302, f"{ADMIN}auditentry/?e=1", "NUL"),
    (f"{ADMIN}?q=%00&p=%C2%B2", 200, None, None),
]


@pytest.mark.parametrize(("url", "status", "location", "message"), GETS, ids=[g[0][len(ADMIN):][:50] for g in GETS])
def test_odd_urls_get_a_page_or_a_redirect(site: Site, url: str, status: int, location: str | None,
                                           message: str | None) -> None:
    before = snapshot()
    response = site.client.get(url)
    assert response.status_code != 500
    assert response.status_code == status
    if location is not None:
        assert response["Location"] == location
    if message is not None:
        assert any(message in m for m in messages_of(response)), messages_of(response)
    assert snapshot() == before


# (changelist url, action, selected ids, confirm, where it redirects to)
POSTS = [
    (JOBS, "cancel_jobs", ["²"], False, JOBS),
    (JOBS, "cancel_jobs", ["\x00"], True, JOBS),
    (JOBS, "replay_jobs", [HUGE], True, JOBS),
    (JOBS, "retry_now", [LONG_DIGITS], True, JOBS),
    (JOBS, "delete_finished", ["1", "²"], True, JOBS),
    (f"{JOBS}?state__exact=dead", "cancel_jobs", ["1x"], True, f"{JOBS}?state__exact=dead"),
    (QUEUES, "pause_queues", ["a\x00b"], True, QUEUES),
    (QUEUES, "pause_queues", ["x" * 5000], True, QUEUES),
]


@pytest.mark.parametrize(("url", "action", "ids", "confirm", "location"), POSTS,
                         ids=[f"{p[1]}-{p[2][-1][:12]!r}" for p in POSTS])
def test_actions_on_junk_ids_do_nothing_and_say_so(site: Site, url: str, action: str, ids: list[str], confirm: bool,
                                                   location: str) -> None:
    before = snapshot()
    data = {"action": action, "_selected_action": ids, "index": "0", **({"confirm": "yes"} if confirm else {})}
    response = site.client.post(url, data)
    assert response.status_code == 302
    assert response["Location"] == location
    assert any("is not a valid" in m and "nothing was done" in m for m in messages_of(response))
    assert snapshot() == before


@pytest.mark.parametrize("url", [f"{JOBS}?q=%00", f"{JOBS}?state=%00"])
def test_all_matching_a_filter_with_nul_does_nothing(site: Site, url: str) -> None:
    before = snapshot()
    response = site.client.post(url, {"action": "cancel_jobs", "_selected_action": [site.job.id], "index": "0",
                                      "select_across": "1", "confirm": "yes"})
    assert (response.status_code, response["Location"]) == (302, INVALID)
    assert snapshot() == before


def test_no_get_writes(site: Site) -> None:
    pages = {
        "/admin/": 200, ADMIN: 200, f"{ADMIN}?anything=%00": 200,
        JOBS: 200, f"{JOBS}?state__exact=dead": 200, f"{JOBS}?queue=marks": 200, f"{JOBS}?task=x": 200,
        f"{JOBS}?reason_code__exact=max_attempts": 200, f"{JOBS}?created_at__gte=2000-01-01+00:00:00%2B00:00": 200,
        f"{JOBS}?q=boom": 200, f"{JOBS}?q={site.job.id}": 200, f"{JOBS}?p=2": 200, f"{JOBS}?all=": 200,
        f"{JOBS}{site.job.id}/change/": 200, f"{JOBS}{site.job.id}/history/": 200,
        f"{JOBS}add/": 403, f"{JOBS}{site.job.id}/delete/": 403,
        f"{ADMIN}attempt/": 200, f"{ADMIN}attempt/?outcome__exact=failed": 200,
        f"{ADMIN}attempt/{site.attempt.id}/change/": 200,
        QUEUES: 200, f"{QUEUES}?q=mark": 200, f"{QUEUES}?all=": 200, f"{QUEUES}default/change/": 200,
        f"{QUEUES}marks/change/": 302,  # no row yet: listed from its jobs, no page of its own
        f"{ADMIN}workerprocess/": 200, f"{ADMIN}workerprocess/w1/change/": 200,
        f"{ADMIN}auditentry/": 200, f"{ADMIN}auditentry/{site.audit.id}/change/": 200,
        f"{ADMIN}nosuchmodel/": 404,
    }
    before = snapshot()
    for url, status in pages.items():
        assert site.client.get(url).status_code == status, url
    assert snapshot() == before

    page = site.client.get(QUEUES).content.decode()
    assert f'href="{JOBS}?queue=marks"' in page  # shown, and linked to its jobs
    assert page.index('value="default"') < page.index('value="marks"')  # in name order with the rows
    page = site.client.get(f"{QUEUES}?o=-1").content.decode()
    assert page.index('value="marks"') < page.index('value="default"')
    assert not QueueState.objects.filter(name="marks").exists()


def test_the_confirmation_step_writes_nothing(site: Site) -> None:
    before = snapshot()
    for url, action, selected, count in [(JOBS, "cancel_jobs", [site.job.id], "1 job"),
                                         (QUEUES, "pause_queues", ["marks"], "1 queue"),
                                         (QUEUES, "resume_queues", ["default", "marks"], "2 queues")]:
        response = site.client.post(url, {"action": action, "_selected_action": selected, "index": "0"})
        page = response.content.decode()
        assert response.status_code == 200 and f'class="pgqueue-count">{count}<' in page, (url, action)
    assert snapshot() == before


@pytest.mark.parametrize("flag", ["yes", "\x00"])
def test_a_forged_select_across_is_shown_as_what_django_applies(site: Site, flag: str) -> None:
    """Django reads select_across as a form boolean: the confirmation says "all matching" (60 ready jobs and
    the one in "marks") whenever Django applies the action to all of them."""
    before = snapshot()
    response = site.client.post(f"{JOBS}?state__exact=ready", {"action": "cancel_jobs", "index": "0",
                                                               "_selected_action": [site.job.id], "select_across": flag})
    page = response.content.decode()
    assert response.status_code == 200
    assert 'class="pgqueue-count">61 jobs<' in page and "every one matching the current filter" in page
    assert 'name="select_across" value="1"' in page
    assert snapshot() == before
