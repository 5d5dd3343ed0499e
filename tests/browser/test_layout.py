"""The admin's pages fit a laptop and a desktop screen: at 1280x900 and 1920x1080 no table is wider than
its container and the page does not scroll sideways, with realistic data (long task names and errors,
several workers with long names, long cron expressions, many queues, long keys and topics). PGQUEUE_SCREENSHOTS=<dir> saves
each page at each width as admin-<page>-<width>.png."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from pgqueue.models import (
    Attempt,
    Batch,
    Job,
    Leader,
    Lock,
    OutboxEvent,
    QueueStat,
    QueueState,
    RateLimit,
    Schedule,
    ScheduleTick,
    Semaphore,
    WorkerProcess,
)

SIZES = [(1280, 900), (1920, 1080)]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUEUES = ["default", "emails", "imports", "billing-webhooks", "reports-nightly", "search-reindex", "thumbnails",
          "notifications-push", "exports-customer-data", "ledger-reconciliation", "partner-sync-salesforce",
          "audit-archive"]
TASKS = ["billing.integrations.stripe.webhooks.reconcile_subscription_invoices_for_enterprise_accounts",
         "customers.exports.build_gdpr_data_export_archive_with_attachments_and_audit_trail",
         "notifications.push.deliver_localized_push_notification_batch"]
ERROR = ("psycopg.errors.SerializationFailure: could not serialize access due to concurrent update while "
         "reconciling invoice in_1PZk8f2eZvKYlo2C0a9Rj3xQ for customer cus_Q9f8e7d6c5b4a3 (subscription "
         "sub_1PZk8f2eZvKYlo2CxQ8WbL3m, attempt 3 of 3); the ledger row was locked by another transaction")
TRACEBACK = ('Traceback (most recent call last):\n  File "/srv/app/releases/2026-12-04T08-15-22Z/src/billing/'
             'integrations/stripe/webhooks.py", line 412, in reconcile_subscription_invoices_for_enterprise_'
             f'accounts\n    ledger.apply(invoice, lock=True, timeout=settings.BILLING_LEDGER_LOCK_TIMEOUT)\n{ERROR}')
CRONS = ["*/5 9-17,20-23 1-7,15-21 1,3,5,7,9,11 mon-fri", "0 2 * * *", "15,45 */2 * * sat,sun 30",
         "0 0 1 1,4,7,10 *"]


def seed() -> dict[str, str]:
    """A busy installation's data; returns the admin path of each page to check, by page name."""
    now = timezone.now()
    minute = now.replace(second=0, microsecond=0)
    QueueStat.objects.bulk_create([
        QueueStat(bucket=minute - dt.timedelta(minutes=m), queue=q, worker=f"web-7f9c8d-{i}-w0",
                  succeeded=900 + (m * 7 + i * 13) % 350, retried=(m % 5 == 0) * 3, dead=(m % 37 == 0))
        for m in range(24 * 60) for i, q in enumerate(QUEUES[:3])
    ])
    Job.objects.bulk_create([
        Job(queue=QUEUES[i % len(QUEUES)], task=TASKS[i % len(TASKS)], args=[i, "customer-" + "x" * 40],
            state=["ready", "scheduled", "running", "succeeded"][i % 4],
            run_at=now - dt.timedelta(minutes=i) if i % 4 != 1 else now + dt.timedelta(hours=i))
        for i in range(60)
    ])
    Job.objects.bulk_create([Job(queue="audit-archive", task=TASKS[2], run_at=now - dt.timedelta(minutes=9))
                             for _ in range(3)])  # a queue no worker serves
    QueueState.objects.create(name="imports", paused=True, paused_reason="paused by ops for the 14:00 deploy")
    QueueState.objects.create(name="billing-webhooks", concurrency_limit=20, rate_limit=500, rate_window=60,
                              breaker_threshold=25, breaker_window=120, breaker_cooldown=300)
    dead = Job.objects.create(queue="billing-webhooks", task=TASKS[0], state="dead", attempts=3,
                              reason_code="max_attempts", error_class="psycopg.errors.SerializationFailure",
                              last_error=ERROR, finished_at=now, started_at=now,
                              kwargs={"invoice": "in_1PZk8f2eZvKYlo2C0a9Rj3xQ", "note": "y" * 300})
    for n in (1, 2, 3):
        Attempt.objects.create(job=dead, number=n, worker=f"web-7f9c8d-4b2a1-worker-{n}-of-16", started_at=now,
                               finished_at=now, duration=1.2 * n, outcome="failed" if n < 3 else "dead",
                               error_class="psycopg.errors.SerializationFailure", message=ERROR, traceback=TRACEBACK)
    waiting = Job.objects.create(queue="exports-customer-data", task=TASKS[1], state="scheduled",
                                 run_at=now + dt.timedelta(hours=2), kwargs={"customer": "cus_" + "z" * 120})
    for i in range(6):
        for kind in ("supervisor", "worker", "maintenance") if i == 0 else ("worker",):
            supervisor = f"ip-10-42-17-{100 + i}-{4096 + i}-9f3c2a"  # as the supervisor names itself
            WorkerProcess.objects.create(
                id=supervisor if kind == "supervisor" else f"{supervisor}-{kind[0]}0", kind=kind,
                hostname=f"ip-10-42-17-{100 + i}.eu-west-1.compute.internal", pid=4096 + i,
                queues=",".join(QUEUES[:8] if i < 4 else QUEUES[8:-1]) if kind == "worker" else "",
                concurrency=16, last_heartbeat=now)
    Leader.objects.create(role="maintenance", holder="ip-10-42-17-100-4096-9f3c2a-m0", token=7,
                          expires_at=now + dt.timedelta(hours=1))
    for i, cron in enumerate(CRONS * 2):
        Schedule.objects.create(name=f"nightly-ledger-reconciliation-for-enterprise-accounts-{i}", task=TASKS[i % 3],
                                cron=cron, timezone="America/Argentina/Buenos_Aires", last_tick_at=now,
                                next_tick_at=now + dt.timedelta(hours=1), last_job_id=dead.id)
        ScheduleTick.objects.create(schedule_id=f"nightly-ledger-reconciliation-for-enterprise-accounts-{i}",
                                    tick=now, job_id=dead.id)
    batch = Batch.objects.create(description="Monthly invoice reconciliation for every enterprise account in eu-west-1")
    key = "tenant:" + "acme-industries-" * 6
    Job.objects.filter(pk=waiting.pk).update(batch=batch, concurrency_key=key, rate_key=f"partner:{key}")
    Lock.objects.create(kind="unique", key=f"digest:{key}", job_id=waiting.id, until="finished")
    Semaphore.objects.create(key=key, limit=3)
    RateLimit.objects.create(key=f"partner:{key}", limit=100, window=60, tokens=3,
                             deferred_until=now + dt.timedelta(seconds=30))
    OutboxEvent.objects.bulk_create([OutboxEvent(topic="billing.invoice.reconciliation.completed.for.enterprise",
                                                 key=f"cus_{'Q9f8e7d6c5b4a3' * 3}", payload={"note": "y" * 200})
                                     for _ in range(5)])
    return {
        "overview": "/admin/pgqueue/",
        "jobs": "/admin/pgqueue/job/",
        "job-dead": f"/admin/pgqueue/job/{dead.id}/change/",
        "job-waiting": f"/admin/pgqueue/job/{waiting.id}/change/",
        "queues": "/admin/pgqueue/queuestate/",
        "schedules": "/admin/pgqueue/schedule/",
        "workers": "/admin/pgqueue/workerprocess/",
        "batches": "/admin/pgqueue/batch/",
        "outbox": "/admin/pgqueue/outboxevent/",
        "locks": "/admin/pgqueue/lock/",
        "semaphores": "/admin/pgqueue/semaphore/",
        "rate-limits": "/admin/pgqueue/ratelimit/",
    }


# Each table wider than its container, and a body wider than the window: [what, its width, the room it has].
OVERFLOWS = """() => {
  const out = [];
  document.querySelectorAll("table").forEach((table, i) => {
    const parent = table.parentElement;
    if (table.offsetParent !== null && table.scrollWidth > parent.clientWidth) {
      const name = table.id || (table.caption && table.caption.innerText) || table.className || "table " + i;
      out.push([name, table.scrollWidth, parent.clientWidth]);
    }
  });
  if (document.documentElement.scrollWidth > window.innerWidth) {
    out.push(["the page", document.documentElement.scrollWidth, window.innerWidth]);
  }
  return out;
}"""


def test_every_page_fits(browser, live_server) -> None:
    User.objects.create_superuser("admin", "admin@example.com", "admin")
    pages = seed()
    folder = os.environ.get("PGQUEUE_SCREENSHOTS")
    problems = []
    for width, height in SIZES:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{live_server.url}/admin/login/?next=/admin/pgqueue/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin")
        page.click("input[type=submit]")
        page.wait_for_selector("#pgqueue-overview")
        for name, path in pages.items():
            WorkerProcess.objects.update(last_heartbeat=timezone.now())  # alive, as their heartbeats keep them
            response = page.goto(f"{live_server.url}{path}")
            assert response is not None and response.status == 200, f"{name} ({path}): {response and response.status}"
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(folder) / f"admin-{name}-{width}.png"), full_page=True)
            problems += [f"{name} ({path}) at {width} px: {what} is {wide} px wide in {room} px"
                         for what, wide, room in page.evaluate(OVERFLOWS)]
        page.close()
    assert not problems, "\n".join(problems)
