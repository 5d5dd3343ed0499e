"""A job's page in the admin: what matters for its state first, empty fields left out, and buttons that run
the job list's own actions (the same permission check, confirmation and audit) and land back on the job.
The job list: whole task paths, a fixed number of queries, plurals."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pgqueue import operations
from pgqueue.models import Attempt, AuditEntry, Job, QueueState, WorkerProcess
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)
JOBS = "/admin/pgqueue/job/"
FORM = re.compile(r'<form id="([^"]+)" method="post" action="([^"]+)">(.*?)</form>', re.S)
FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
BUTTON = re.compile(r'<button type="submit" form="([^"]+)"[^>]*>([^<]+)</button>')


def staff(*codenames: str) -> Client:
    user = User.objects.create_user(f"staff{User.objects.count()}", password="pw", is_staff=True)
    for codename in ("view_job", *codenames):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.login(username=user.username, password="pw")
    return client


def page_of(client: Client, job_id: int) -> str:
    response = client.get(f"{JOBS}{job_id}/change/")
    assert response.status_code == 200
    return response.content.decode()


def buttons(page: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The job page's buttons: {label: (where the form posts, its fields)}."""
    forms = {form_id: (action, dict(FIELD.findall(body))) for form_id, action, body in FORM.findall(page)}
    return {label: forms[form_id] for form_id, label in BUTTON.findall(page)}


def press(client: Client, job_id: int, label: str):
    """Press a button on the job's page, then "Yes" on the confirmation: the responses of both posts."""
    url, fields = buttons(page_of(client, job_id))[label]
    confirmation = client.post(url, fields)
    assert confirmation.status_code == 200
    confirm_form = re.search(r'<form method="post">(.*?)</form>', confirmation.content.decode(), re.S).group(1)
    return confirmation, client.post(url, dict(FIELD.findall(confirm_form)))


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def dead_job(attempts: int = 3) -> Job:
    h = jobs.always_fails.enqueue("payment")
    Job.objects.filter(pk=h.id).update(state="dead", attempts=attempts, reason_code="max_attempts",
                                       error_class="shop.payments.PaymentDeclined",
                                       last_error="PaymentDeclined: card declined", finished_at=timezone.now())
    job = Job.objects.get(pk=h.id)
    for n in range(1, attempts + 1):
        Attempt.objects.create(job=job, number=n, worker="w1", started_at=job.created_at, finished_at=timezone.now(),
                               duration=0.5, outcome="failed", error_class="shop.payments.PaymentDeclined",
                               message="PaymentDeclined: card declined", traceback=f"Traceback: attempt {n}")
    return job


def test_a_dead_jobs_page_says_why_then_shows_the_attempts_then_the_arguments(root: Client) -> None:
    job = dead_job()
    page = page_of(root, job.id)
    summary = page.index('id="pgqueue-summary"')
    assert summary < page.index('id="pgqueue-attempts"') < page.index(">Arguments<") < page.index(">All fields<")
    head = page[summary:page.index('id="pgqueue-attempts"')]
    assert "Failed every attempt it was allowed." in head and "PaymentDeclined: card declined" in head
    assert "3/3" in head and "attempt 3, ended" in head
    # the latest attempt first, its traceback open; the others folded
    assert page.index("Traceback: attempt 3") < page.index("Traceback: attempt 1")
    assert page.count("<details open>") == 1
    assert re.search(r"<details open><summary>traceback of attempt 3</summary>", page)
    # empty fields are left out, not shown as "-"
    for label in ("Progress:", "Result:", "Leased by:", "Lease expires at:", "Cancel requested:", "Keys and slots:",
                  "Kwargs:"):
        assert label not in page, label
    assert "All fields" in page and "collapse" in page  # the rest is folded


def test_a_waiting_job_says_when_it_runs_and_that_its_queue_is_paused(root: Client) -> None:
    later = jobs.mark.options(delay=3600).enqueue("later")
    operations.pause("marks")
    head = page_of(root, later.id).split('id="pgqueue-attempts"')[0]
    assert "Runs at" in head and "(in 60 min)" in head
    assert "paused</span>: no job of it starts until it is resumed" in head
    QueueState.objects.filter(name="marks").update(paused=False)
    assert "no job of it starts" not in page_of(root, later.id)


def test_a_running_jobs_page_names_its_worker_heartbeat_lease_and_progress(root: Client) -> None:
    now = timezone.now()
    h = jobs.mark.enqueue("long")
    Job.objects.filter(pk=h.id).update(state="running", attempts=1, leased_by="host-2-w1",
                                       started_at=now - dt.timedelta(seconds=90),
                                       lease_expires_at=now + dt.timedelta(seconds=20), progress=40.0,
                                       progress_message="4 of 10 files")
    WorkerProcess.objects.create(id="host-2-w1", kind="worker", hostname="box-7", pid=4242,
                                 last_heartbeat=now - dt.timedelta(seconds=2))
    page = page_of(root, h.id)
    assert "Attempt 1 since" in page and "box-7 (pid 4242), its last heartbeat" in page
    assert "renewed at each heartbeat" in page and "4 of 10 files" in page
    assert list(buttons(page)) == ["Cancel"]
    Job.objects.filter(pk=h.id).update(lease_expires_at=now - dt.timedelta(seconds=5))
    assert "maintenance rescues the job" in page_of(root, h.id)


def test_the_buttons_are_the_actions_that_apply_to_the_state_and_that_the_user_may_run(root: Client) -> None:
    dead = dead_job(1)
    later = jobs.mark.options(delay=3600).enqueue("later")
    done = Job.objects.create(queue="default", task="tests.testapp.jobs.add", state="succeeded", attempts=1)
    assert list(buttons(page_of(root, dead.id))) == ["Retry", "Replay", "Delete"]
    assert list(buttons(page_of(root, later.id))) == ["Run now", "Cancel"]
    assert list(buttons(page_of(root, done.id))) == ["Delete"]
    assert buttons(page_of(staff(), dead.id)) == {}  # may view, may run no action
    assert list(buttons(page_of(staff("replay_job"), dead.id))) == ["Replay"]
    url, fields = buttons(page_of(root, dead.id))["Replay"]
    assert url == JOBS and fields["action"] == "replay_jobs" and fields["_selected_action"] == str(dead.id)


def test_retry_on_the_page_confirms_runs_the_action_audits_it_and_lands_back_on_the_job(root: Client) -> None:
    job = dead_job()
    confirmation, done = press(root, job.id, "Retry")
    page = confirmation.content.decode()
    assert 'class="pgqueue-count">1 job<' in page and "Yes, retry now" in page
    assert f'href="{JOBS}{job.id}/change/" class="button cancel-link">No, take me back' in page
    assert done.status_code == 302 and done["Location"] == f"{JOBS}{job.id}/change/"
    assert messages_of(done) == ["Retry now: 1 of 1 selected job changed."]
    assert Job.objects.get(pk=job.id).state == "ready"
    entry = AuditEntry.objects.get()
    assert (entry.username, entry.action, entry.count, entry.selected, entry.object_ids) == (
        "root", "retry_now", 1, 1, [str(job.id)])


def test_replay_on_the_page_lands_on_the_new_job(root: Client) -> None:
    job = dead_job()
    _, done = press(root, job.id, "Replay")
    new = Job.objects.get(replay_of_id=job.id)
    assert done["Location"] == f"{JOBS}{new.id}/change/"
    assert messages_of(done) == [f'Replay: 1 of 1 selected job changed; new job: <a href="{JOBS}{new.id}/change/">'
                                 f"#{new.id}</a>."]
    assert f"#{job.id}</a>" in page_of(root, new.id).split('id="pgqueue-attempts"')[0]  # "Replay of #…"
    assert f"#{new.id}</a> (ready)" in page_of(root, job.id)  # "Replayed as #… (ready)"
    assert AuditEntry.objects.get().action == "replay_jobs"


def test_cancel_and_delete_on_the_page(root: Client) -> None:
    later = jobs.mark.options(delay=3600).enqueue("later")
    _, done = press(root, later.id, "Cancel")
    assert done["Location"] == f"{JOBS}{later.id}/change/" and Job.objects.get(pk=later.id).state == "cancelled"
    _, done = press(root, later.id, "Delete")
    assert done["Location"] == JOBS  # the job is gone: back to the list
    assert messages_of(done) == ["Delete finished: 1 of 1 selected job changed."]
    assert not Job.objects.filter(pk=later.id).exists()
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == ["cancel_jobs",
                                                                                       "delete_finished"]


def test_a_job_that_changed_state_meanwhile_is_left_alone_and_the_message_says_so(root: Client) -> None:
    job = dead_job()
    url, fields = buttons(page_of(root, job.id))["Retry"]
    Job.objects.filter(pk=job.id).update(state="running")  # a worker took it meanwhile (after a retry elsewhere)
    done = root.post(url, {**fields, "confirm": "yes"})
    assert done["Location"] == f"{JOBS}{job.id}/change/"
    assert messages_of(done) == ["Retry now: 0 of 1 selected job changed (it was not in a state this action "
                                 "applies to)."]


def test_a_forged_post_without_the_permission_is_refused(root: Client) -> None:
    job = dead_job()
    url, fields = buttons(page_of(root, job.id))["Replay"]
    viewer = staff("retry_job")
    response = viewer.post(url, {**fields, "confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == JOBS
    assert not Job.objects.filter(replay_of_id=job.id).exists() and not AuditEntry.objects.exists()
    assert staff().post(url, {**fields, "confirm": "yes"}).status_code in (200, 302)
    assert not Job.objects.filter(replay_of_id=job.id).exists() and not AuditEntry.objects.exists()


def test_from_page_for_another_row_than_the_selected_one_lands_on_the_list(root: Client) -> None:
    first, second = dead_job(1), dead_job(1)
    done = root.post(JOBS, {"action": "retry_now", "_selected_action": [first.id], "index": 0, "select_across": 0,
                            "from_page": second.id, "confirm": "yes"})
    assert done["Location"] == JOBS and Job.objects.get(pk=first.id).state == "ready"


def test_list_messages_and_confirmations_count_in_english(root: Client) -> None:
    ids = [dead_job(1).id for _ in range(2)] + [jobs.mark.enqueue("x").id]
    page = root.post(JOBS, {"action": "replay_jobs", "_selected_action": ids, "index": 0}).content.decode()
    assert 'class="pgqueue-count">3 jobs<' in page
    done = root.post(JOBS, {"action": "replay_jobs", "_selected_action": ids, "index": 0, "confirm": "yes"})
    assert done["Location"] == JOBS
    message, = messages_of(done)
    assert message.startswith("Replay: 2 of 3 selected jobs changed (the others were not in a state this action "
                              "applies to); new jobs: <a href=")


def test_the_list_shows_whole_task_paths_and_the_error_under_the_task(root: Client) -> None:
    for task in ("shop.jobs.send", "newsletter.jobs.send"):
        Job.objects.create(queue="emails", task=task, state="dead", attempts=3, last_error="SMTPError: 421 busy")
    page = root.get(JOBS).content.decode()
    for app in ("shop", "newsletter"):
        assert (f'<span class="pgqueue-task" title="{app}.jobs.send"><span class="pgqueue-task-path"><span '
                f'class="pgqueue-task-app">{app}.</span><span class="pgqueue-task-module">jobs.</span></span><span '
                f'class="pgqueue-task-function">send</span></span>' in page), app
    assert page.count('title="SMTPError: 421 busy">SMTPError: 421 busy</span>') == 2
    assert page.count("3/3 attempts") == 2


def test_the_list_costs_the_same_queries_for_5_or_50_jobs(root: Client) -> None:
    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert root.get(JOBS).status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    jobs.add.enqueue_many([(i, i) for i in range(5)])
    few = queries()
    jobs.add.enqueue_many([(i, i) for i in range(45)])
    many = queries()
    assert len(few) == len(many)
    assert not any(re.search(r'COUNT\(\*\) AS "__count" FROM "pgqueue_job"\s*$', q) for q in many)  # never counts it all
