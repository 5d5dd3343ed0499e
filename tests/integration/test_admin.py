"""The admin pages for pgqueue's tables render, and job actions respect their permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from pgqueue.models import Attempt, Job
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def superuser_client() -> Client:
    User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.login(username="root", password="pw")
    return client


def test_job_pages_show_attempts(superuser_client: Client) -> None:
    h = jobs.add.enqueue(1, 2)
    Job.objects.filter(pk=h.id).update(state="dead", attempts=1, reason_code="max_attempts", last_error="boom")
    job = Job.objects.get(pk=h.id)
    Attempt.objects.create(job=job, number=1, worker="w1", started_at=job.created_at, finished_at=job.created_at,
                           duration=0.5, outcome="failed", error_class="RuntimeError", message="boom",
                           traceback="Traceback: boom")
    for url in ["/admin/pgqueue/job/", "/admin/pgqueue/job/?state__exact=dead", f"/admin/pgqueue/job/{h.id}/change/",
                "/admin/pgqueue/attempt/", "/admin/pgqueue/queuestate/", "/admin/pgqueue/workerprocess/"]:
        response = superuser_client.get(url)
        assert response.status_code == 200, url
    page = superuser_client.get(f"/admin/pgqueue/job/{h.id}/change/").content.decode()
    assert "RuntimeError" in page and "Traceback: boom" in page


def test_replay_action_makes_a_new_job(superuser_client: Client) -> None:
    h = jobs.add.enqueue(1, 2)
    Job.objects.filter(pk=h.id).update(state="dead")
    response = superuser_client.post("/admin/pgqueue/job/", {"action": "replay_jobs", "_selected_action": [h.id]})
    assert response.status_code == 302
    assert Job.objects.get(replay_of_id=h.id).state == "ready"


def test_staff_without_permission_cannot_cancel() -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.login(username="staff", password="pw")
    h = jobs.add.enqueue(1, 2)
    page = client.get("/admin/pgqueue/job/").content.decode()
    assert "cancel_jobs" not in page
    client.post("/admin/pgqueue/job/", {"action": "cancel_jobs", "_selected_action": [h.id]})
    assert Job.objects.get(pk=h.id).state == "ready"
    staff.user_permissions.add(Permission.objects.get(codename="cancel_job"))
    client.post("/admin/pgqueue/job/", {"action": "cancel_jobs", "_selected_action": [h.id]})
    assert Job.objects.get(pk=h.id).state == "cancelled"
