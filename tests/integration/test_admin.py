"""The admin as operator console: pages, the attempts timeline, confirmed and audited actions that go
through the named statements, per-action permissions, the overview."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from pgqueue import db, sql
from pgqueue.db import connection_kwargs
from pgqueue.models import Attempt, AuditEntry, Job, Leader, QueueState, WorkerProcess
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)
JOBS = "/admin/pgqueue/job/"


def staff(*codenames: str) -> Client:
    user = User.objects.create_user(f"staff{User.objects.count()}", password="pw", is_staff=True)
    for codename in ("view_job", "view_queuestate", *codenames):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.login(username=user.username, password="pw")
    return client


def dead_job(**kwargs) -> Job:
    h = jobs.add.enqueue(1, 2)
    Job.objects.filter(pk=h.id).update(state="dead", attempts=1, reason_code="max_attempts", last_error="boom",
                                       error_class="RuntimeError", finished_at=timezone.now(), **kwargs)
    job = Job.objects.get(pk=h.id)
    Attempt.objects.create(job=job, number=1, worker="w1", started_at=job.created_at, finished_at=job.created_at,
                           duration=0.5, outcome="failed", error_class="RuntimeError", message="boom",
                           traceback="Traceback: boom")
    return job


def act(client: Client, action: str, ids: list, url: str = JOBS, confirm: bool = True, across: bool = False):
    data = {"action": action, "_selected_action": ids, "index": 0, "select_across": "1" if across else "0"}
    if confirm:
        data["confirm"] = "yes"
    return client.post(url, data)


def test_pages_render_and_the_timeline_shows_attempts(root: Client) -> None:
    job = dead_job()
    for url in [JOBS, f"{JOBS}?state__exact=dead", f"{JOBS}?queue=default", f"{JOBS}?q=boom", f"{JOBS}?q={job.id}",
                f"{JOBS}{job.id}/change/", "/admin/pgqueue/attempt/", "/admin/pgqueue/queuestate/",
                "/admin/pgqueue/workerprocess/", "/admin/pgqueue/auditentry/", "/admin/pgqueue/"]:
        assert root.get(url).status_code == 200, url
    page = root.get(f"{JOBS}{job.id}/change/").content.decode()
    assert "Attempts, latest first" in page and "RuntimeError" in page and "Traceback: boom" in page
    assert "<details open>" in page  # tracebacks are collapsible, a dead job's latest one open
    assert '"pgqueue-json"' in page  # args shown as formatted JSON


def test_the_workers_page_names_the_maintenance_leader(root: Client) -> None:
    now = timezone.now()
    for name in ("m-leads", "m-waits"):
        WorkerProcess.objects.create(id=name, kind="maintenance", hostname="box", pid=1)
    Leader.objects.create(role="maintenance", holder="m-leads", token=3, expires_at=now + dt.timedelta(seconds=5))
    page = root.get("/admin/pgqueue/workerprocess/").content.decode()
    assert page.count("leader (token 3)") == 1
    Leader.objects.update(expires_at=now - dt.timedelta(seconds=1))  # its lead ran out: nobody leads
    assert "leader (token" not in root.get("/admin/pgqueue/workerprocess/").content.decode()


def test_actions_ask_for_confirmation_with_the_count(root: Client) -> None:
    job = dead_job()
    page = act(root, "replay_jobs", [job.id], confirm=False).content.decode()
    assert 'class="pgqueue-count">1 job<' in page and "Yes, replay" in page
    assert not Job.objects.filter(replay_of_id=job.id).exists()  # nothing happened yet


def test_replay_retry_cancel_delete_go_through_the_state_machine_and_are_audited(root: Client) -> None:
    dead = dead_job()
    assert act(root, "replay_jobs", [dead.id]).status_code == 302
    new = Job.objects.get(replay_of_id=dead.id)
    assert new.state == "ready"
    page = root.get(f"{JOBS}{new.id}/change/").content.decode()
    assert f"#{dead.id}" in page  # links back to its source

    act(root, "retry_now", [dead.id])
    retried = Job.objects.get(pk=dead.id)
    assert (retried.state, retried.max_attempts) == ("ready", 3)  # one more attempt allowed, same job

    running = jobs.add.enqueue(3, 3)
    Job.objects.filter(pk=running.id).update(state="running")
    act(root, "cancel_jobs", [new.id, running.id])
    assert Job.objects.get(pk=new.id).state == "cancelled"
    assert Job.objects.get(pk=running.id).cancel_requested  # running: asked to stop, not killed

    act(root, "delete_finished", [new.id, running.id])
    assert not Job.objects.filter(pk=new.id).exists() and Job.objects.filter(pk=running.id).exists()

    entries = list(AuditEntry.objects.order_by("id").values_list("username", "action", "count", "selected"))
    assert entries == [("root", "replay_jobs", 1, 1), ("root", "retry_now", 1, 1), ("root", "cancel_jobs", 2, 2),
                       ("root", "delete_finished", 1, 2)]


def test_all_matching_the_filter_not_only_the_page(root: Client) -> None:
    handles = jobs.add.enqueue_many([(i, i) for i in range(60)])
    Job.objects.filter(id__in=[h.id for h in handles]).update(state="dead", finished_at=timezone.now())
    jobs.add.enqueue(0, 0)  # ready: outside the filter
    url = f"{JOBS}?state__exact=dead"
    preview = root.post(url, {"action": "replay_jobs", "_selected_action": [handles[0].id], "index": 0,
                              "select_across": "1"}).content.decode()
    assert 'class="pgqueue-count">60 jobs<' in preview and "every one matching the current filter" in preview
    act(root, "replay_jobs", [handles[0].id], url=url, across=True)
    assert Job.objects.filter(replay_of__isnull=False).count() == 60
    entry = AuditEntry.objects.get()
    assert entry.count == 60 and "state__exact=dead" in entry.scope


def test_staff_needs_the_permission_for_each_action() -> None:
    job = dead_job()
    viewer = staff()
    page = viewer.get(JOBS).content.decode()
    for action in ("replay_jobs", "cancel_jobs", "retry_now", "delete_finished"):
        assert f'value="{action}"' not in page
    act(viewer, "replay_jobs", [job.id])
    assert not Job.objects.filter(replay_of_id=job.id).exists()

    replayer = staff("replay_job")
    page = replayer.get(JOBS).content.decode()
    assert 'value="replay_jobs"' in page and 'value="cancel_jobs"' not in page
    act(replayer, "replay_jobs", [job.id])
    assert Job.objects.filter(replay_of_id=job.id).exists()


def test_queue_pause_resume_drain(root: Client) -> None:
    jobs.mark.enqueue("x")
    page = root.get("/admin/pgqueue/queuestate/").content.decode()
    assert 'value="marks"' in page  # lists queues that have jobs, selectable for actions
    assert not QueueState.objects.filter(name="marks").exists()  # without writing: pausing creates the row
    act(root, "pause_queues", ["marks"], url="/admin/pgqueue/queuestate/")
    assert QueueState.objects.get(name="marks").paused
    act(root, "resume_queues", ["marks"], url="/admin/pgqueue/queuestate/")
    assert not QueueState.objects.get(name="marks").paused
    act(root, "drain_and_pause_queues", ["marks"], url="/admin/pgqueue/queuestate/")
    state = QueueState.objects.get(name="marks")
    assert state.pause_when_empty and not state.paused
    viewer = staff()
    assert 'value="pause_queues"' not in viewer.get("/admin/pgqueue/queuestate/").content.decode()


def test_overview_shows_counts_lag_charts_errors_and_alerts(root: Client) -> None:
    jobs.add.enqueue_many([(i, i) for i in range(3)])
    jobs.mark.enqueue("m")
    dead_job()
    page = root.get("/admin/pgqueue/").content.decode()
    assert 'id="pgqueue-overview"' in page
    assert "<svg" in page and "succeeded" in page
    assert "RuntimeError" in page  # top error classes
    assert "went dead in the last hour" in page and "No worker is running" in page
    assert ">3</a>" in page  # three ready jobs in the default queue, linked to the filtered list
    assert page.count(">no worker</span>") == 2  # default and marks have ready jobs and no live worker
    db.run_in_django(sql.workerprocess_register, id="w-live", kind="worker", supervisor="s", hostname="h", pid=1,
                     queues="default", concurrency=4, connections=3)
    page = root.get("/admin/pgqueue/").content.decode()
    assert page.count(">no worker</span>") == 1  # marks only


def test_search_finds_a_job_by_its_idempotency_or_flow_key(root: Client) -> None:
    paid = jobs.add.options(idempotency_key="order-42-paid").enqueue(1, 2)
    limited = jobs.limited.enqueue("acme", "x")
    jobs.add.enqueue(3, 4)
    for term, expected in (("order-42-paid", paid.id), ("sem:acme", limited.id)):
        page = root.get(JOBS, {"q": term}).content.decode()
        assert f"/admin/pgqueue/job/{expected}/change/" in page, term
        assert page.count('class="action-select"') == 1, term


def test_lock_and_semaphore_pages_and_what_blocks_a_job(root: Client) -> None:
    note = jobs.unique_note.enqueue("admin")
    holders = [jobs.limited.enqueue("adm", f"h{i}").id for i in range(2)]
    blocked = jobs.limited.enqueue("adm", "waiting").id
    for url in ["/admin/pgqueue/lock/", "/admin/pgqueue/lock/?q=unique_note", "/admin/pgqueue/semaphore/",
                "/admin/pgqueue/semaphore/sem:adm/change/"]:
        assert root.get(url).status_code == 200, url
    locks = root.get("/admin/pgqueue/lock/").content.decode()
    assert 'tests.testapp.jobs.unique_note:[&quot;admin&quot;]' in locks and f"#{note.id}</a>" in locks
    semaphores = root.get("/admin/pgqueue/semaphore/").content.decode()
    assert "sem:adm" in semaphores
    detail = root.get("/admin/pgqueue/semaphore/sem:adm/change/").content.decode()
    assert f"#{holders[0]}</a>" in detail and "1 blocked" in detail
    page = root.get(f"{JOBS}{blocked}/change/").content.decode()
    assert "Blocked: waits for a slot of semaphore" in page and f"#{holders[1]}</a>" in page
    assert "0 blocked jobs of the key are ahead of it" in page
    page = root.get(f"{JOBS}{note.id}/change/").content.decode()
    assert "held (until finished)" in page


def test_the_rate_limit_page_and_a_deferred_jobs_page(root: Client) -> None:
    ids = [jobs.partner_call.enqueue("acme", f"c{i}").id for i in range(5)]
    with psycopg.connect(**connection_kwargs(), autocommit=True) as conn, conn.cursor() as cur:
        assert len(db.run(cur, sql.job_lease_limited, queues=["rated"], limit=10, worker="w1", lease_seconds=30)) == 3
    listing = root.get("/admin/pgqueue/ratelimit/").content.decode()
    assert "partner:acme" in listing and "3 per 60.0 s" in listing and "0.0" in listing
    detail = root.get("/admin/pgqueue/ratelimit/partner:acme/change/").content.decode()
    assert "2 waiting" in detail
    page = root.get(f"{JOBS}{ids[4]}/change/").content.decode()
    assert "Rate key" in page and "deferred until its token comes, at" in page
    assert f"/admin/pgqueue/job/{ids[4]}/change/" in root.get(JOBS, {"q": "partner:acme"}).content.decode()


def test_releasing_a_lock_is_confirmed_permitted_and_audited(root: Client) -> None:
    from pgqueue.models import Lock

    jobs.unique_note.enqueue("rel")
    lock = Lock.objects.get()
    url = "/admin/pgqueue/lock/"
    assert staff("view_lock").post(url, {"action": "release_locks", "_selected_action": [lock.id], "index": 0,
                                         "confirm": "yes"}).status_code in (200, 302)
    assert not Lock.objects.get().released  # no release_lock permission: nothing happened
    assert act(root, "release_locks", [lock.id], url=url).status_code == 302
    assert Lock.objects.get().released
    assert AuditEntry.objects.filter(action="release_locks", target="lock", count=1).exists()
    assert jobs.unique_note.enqueue("rel").created  # the key is free


def test_a_queue_page_sets_limits_and_a_breaker_through_the_operations(root: Client) -> None:
    from pgqueue import operations
    from pgqueue.models import SemaphoreSlot

    operations.pause("emails")
    url = "/admin/pgqueue/queuestate/emails/change/"
    form = {"concurrency_limit": "3", "rate_limit": "10", "rate_window": "1", "breaker_threshold": "5",
            "breaker_window": "60", "breaker_cooldown": "30"}
    assert staff().post(url, form).status_code == 403  # viewing is not changing
    bad = root.post(url, {**form, "rate_window": ""})
    assert bad.status_code == 200 and "give rate and per together" in bad.content.decode()
    assert QueueState.objects.get(name="emails").concurrency_limit is None  # nothing saved
    for window, says in (("nan", "Enter a finite number of seconds (not NaN or infinity)."),
                         ("inf", "Enter a finite number of seconds (not NaN or infinity)."),
                         ("1e-300", "per must be a number of seconds from 0.001 to 31536000 (a year), got 1e-300.")):
        page = root.post(url, {**form, "rate_window": window}).content.decode()
        assert says in page and "give rate and per together" not in page, window
    assert QueueState.objects.get(name="emails").rate_window is None  # nothing saved
    assert root.post(url, form).status_code == 302
    queue = QueueState.objects.get(name="emails")
    assert (queue.concurrency_limit, queue.rate_limit, queue.rate_window) == (3, 10, 1.0)
    assert (queue.breaker_threshold, queue.breaker_window, queue.breaker_cooldown) == (5, 60.0, 30.0)
    assert queue.paused  # the form does not touch pausing
    assert SemaphoreSlot.objects.filter(semaphore_id="pgqueue:queue:emails").count() == 3
    entry = AuditEntry.objects.get(action="set_queue_limits")
    assert (entry.username, entry.object_ids) == ("root", ["emails"])
    listing = root.get("/admin/pgqueue/queuestate/").content.decode()
    assert "at most 3 running; at most 10 starts per 1 s; breaker: 5 failures in 60 s" in listing


def test_the_batch_pages_show_progress_callbacks_and_links_and_cancel_through_the_operations(root: Client) -> None:
    import pgqueue

    with pgqueue.batch(description="nightly import", on_finish=jobs.batch_callback.call("finish"),
                       on_success=jobs.batch_callback.call("success")) as batch:
        ids = [jobs.mark.enqueue(f"m{i}").id for i in range(4)]
    with psycopg.connect(**connection_kwargs(), autocommit=True) as conn, conn.cursor() as cur:
        leased = db.run(cur, sql.job_lease, queues=["marks"], limit=1, worker="w1", lease_seconds=30)
    listing = root.get("/admin/pgqueue/batch/").content.decode()
    assert "nightly import" in listing and "0 of 4 done" in listing and "1 running, 3 waiting" in listing
    assert '<progress class="pgqueue-batch-progress" max="4" value="0">' in listing
    detail = root.get(f"/admin/pgqueue/batch/{batch.id}/change/").content.decode()
    assert "on_success" in detail and "not enqueued yet" in detail and f"batch={batch.id}" in detail
    filtered = root.get(JOBS, {"batch": batch.id}).content.decode()
    assert all(f"/admin/pgqueue/job/{i}/change/" in filtered for i in ids)
    odd = root.get(JOBS, {"batch": "x\u00b2"})  # an odd id: no rows, no error
    assert odd.status_code == 200 and not any(f"/admin/pgqueue/job/{i}/change/" in odd.content.decode() for i in ids)
    job_page = root.get(f"{JOBS}{ids[0]}/change/").content.decode()
    assert f"batch {batch.id}" in job_page
    url = "/admin/pgqueue/batch/"
    assert staff("view_batch").post(url, {"action": "cancel_batches", "_selected_action": [batch.id], "index": 0,
                                          "confirm": "yes"}).status_code in (200, 302)
    assert not Job.objects.filter(state="cancelled").exists()  # no cancel_batch permission: nothing happened
    assert act(root, "cancel_batches", [batch.id], url=url).status_code == 302
    assert sorted(Job.objects.filter(batch_id=batch.id).values_list("state", flat=True)) == [
        "cancelled", "cancelled", "cancelled", "running"]
    assert Job.objects.get(pk=leased[0].id).cancel_requested
    assert AuditEntry.objects.filter(action="cancel_batches", target="batch", count=1).exists()
    assert "cancelled" in root.get(url).content.decode()


def test_a_waiting_jobs_page_says_what_it_waits_for(root: Client) -> None:
    parent = jobs.mark.enqueue("parent")
    other = jobs.mark.enqueue("other")
    child = jobs.mark.options(depends_on=[parent, other]).enqueue("child")
    page = root.get(f"{JOBS}{child.id}/change/").content.decode()
    assert "Waiting: 2 of the 2 jobs it depends on have not finished" in page
    assert f"/admin/pgqueue/job/{parent.id}/change/" in page and "it is cancelled" in page
    parent_page = root.get(f"{JOBS}{parent.id}/change/").content.decode()
    assert "Jobs that depend on it" in parent_page and f"/admin/pgqueue/job/{child.id}/change/" in parent_page
    assert "pgqueue-state-waiting" in root.get(JOBS, {"state": "waiting"}).content.decode()


def test_the_outbox_pages_show_pending_and_relayed_events_the_lag_and_the_subscribers_jobs(root: Client) -> None:
    import pgqueue
    from pgqueue import outbox
    from pgqueue.conf import get_settings

    first = pgqueue.publish("order.paid", {"order": 5}, key="order:5")
    listing = root.get("/admin/pgqueue/outboxevent/").content.decode()
    assert "1 pending, the oldest for" in listing and "pending" in listing
    database = db.Database(connection_kwargs(), owner="relay", role="test")
    outbox.relay(database, get_settings())
    database.close()
    pgqueue.publish("invoice.sent", 1)
    listing = root.get("/admin/pgqueue/outboxevent/", {"status": "relayed"}).content.decode()
    assert "relayed to 2 subscribers" in listing and "invoice.sent" not in listing
    detail = root.get(f"/admin/pgqueue/outboxevent/{first}/change/").content.decode()
    job_ids = list(Job.objects.values_list("id", flat=True))
    assert "tests.testapp.jobs.on_order_paid" in detail and "&quot;order&quot;: 5" in detail
    assert all(f"/admin/pgqueue/job/{i}/change/" in detail for i in job_ids) and "(ready)" in detail
    assert str(first) in root.get("/admin/pgqueue/outboxevent/", {"q": str(first)}).content.decode()


def test_the_schedule_pages_show_runs_and_run_now_enable_and_disable_are_permitted_and_audited(root: Client) -> None:
    from django.test import override_settings

    from pgqueue import schedules
    from pgqueue.models import Schedule

    entry = {"task": "tests.testapp.jobs.mark", "cron": "0 3 * * *", "timezone": "Europe/Paris", "args": ["nightly"]}
    with override_settings(PGQUEUE={"SCHEDULES": {"nightly": entry}}):
        schedules.sync(schedules.declared(), "default")
        url = "/admin/pgqueue/schedule/"
        assert "0 3 * * *" in root.get(url).content.decode() and "enabled" in root.get(url).content.decode()
        assert staff("view_schedule").post(url, {"action": "run_schedules_now", "_selected_action": ["nightly"],
                                                 "index": 0, "confirm": "yes"}).status_code in (200, 302)
        assert not Job.objects.exists()  # no trigger_schedule permission: nothing happened
        assert act(root, "run_schedules_now", ["nightly"], url=url).status_code == 302
        job = Job.objects.get()
        assert AuditEntry.objects.filter(action="run_schedules_now", target="schedule", count=1).exists()
        detail = root.get(f"{url}nightly/change/").content.decode()
        assert "(run now)" in detail and f"/admin/pgqueue/job/{job.id}/change/" in detail and "(ready)" in detail
        assert act(root, "disable_schedules", ["nightly"], url=url).status_code == 302
        assert Schedule.objects.get().enabled is False and "disabled" in root.get(url).content.decode()
        assert act(root, "enable_schedules", ["nightly"], url=url).status_code == 302
        assert Schedule.objects.get().enabled is True
        assert AuditEntry.objects.filter(action__in=["disable_schedules", "enable_schedules"]).count() == 2
