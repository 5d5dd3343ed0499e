from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

import pgqueue
from example_project.shop import jobs
from example_project.shop.models import Order
from pgqueue.enqueuing.batches import Batch
from pgqueue.models import Batch as BatchRow
from pgqueue.models import Job


def index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "order":
            email = request.POST.get("email") or "someone@example.com"
            with transaction.atomic():  # the order and its job commit together, or neither does
                order = Order.objects.create(email=email, item=request.POST.get("item") or "teapot")
                handle = jobs.send_confirmation.enqueue(order.pk)
            messages.info(request, f"Order {order.pk} saved; confirmation job #{handle.id} enqueued.")
        elif action == "fail":
            handle = jobs.charge_card.enqueue(0)
            messages.info(request, f"Job #{handle.id} will fail 3 times and go dead.")
        elif action == "long":
            handle = jobs.build_report.enqueue(steps=20)
            messages.info(request, f"Job #{handle.id} reports progress for ~10 s.")
        elif action == "batch":
            with pgqueue.batch(on_success=jobs.thumbnails_done.call(7), description="thumbnails of order 7") as b:
                jobs.resize_image.enqueue_many([(7, size) for size in (64, 128, 256, 512, 1024, 2048) * 3])
            messages.info(request, f"Batch {b.id}: 18 jobs; its on_success callback runs once they all succeeded.")
        elif action == "workflow":
            steps = pgqueue.enqueue_workflow({
                "fetch": jobs.workflow_step.call("fetch"),
                "clean": jobs.workflow_step.options(depends_on=["fetch"]).call("clean"),
                "enrich": jobs.workflow_step.options(depends_on=["fetch"]).call("enrich"),
                "report": jobs.workflow_step.options(depends_on=["clean", "enrich"]).call("report"),
            })
            messages.info(request, "Workflow: fetch, then clean and enrich, then report (jobs "
                                   + ", ".join(f"#{h.id}" for h in steps.values()) + ").")
        elif action == "event":
            with transaction.atomic():  # the event commits with the order's change, or not at all
                order = Order.objects.order_by("-id").first()
                event_id = pgqueue.publish("order.paid", {"order": order.pk if order else 0}, key="shop")
            messages.info(request, f"Event {event_id} (order.paid) published: its two subscribers each get a job "
                                   "once the maintenance leader relays it.")
        elif action == "run-schedule":
            from pgqueue import schedules

            ran = schedules.run_now(["shop.orders-report"])
            messages.info(request, "The schedule shop.orders-report ran now (it also runs every 2 minutes)."
                          if ran else "The schedule is not known yet: the worker writes it when it starts.")
        elif action == "scheduled":
            handle = jobs.nightly_cleanup.options(delay=30).enqueue()
            messages.info(request, f"Job #{handle.id} is scheduled to run in 30 s.")
        return redirect("index")
    return render(request, "shop/index.html", {
        "orders": Order.objects.order_by("-id")[:10],
        "jobs": Job.objects.order_by("-id")[:15],
        "batches": [(row, Batch(row.id).progress()) for row in BatchRow.objects.order_by("-id")[:3]],
    })
