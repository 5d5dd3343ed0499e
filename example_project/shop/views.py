from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from example_project.shop import jobs
from example_project.shop.models import Order
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
        elif action == "scheduled":
            handle = jobs.nightly_cleanup.options(delay=30).enqueue()
            messages.info(request, f"Job #{handle.id} is scheduled to run in 30 s.")
        return redirect("index")
    return render(request, "shop/index.html", {
        "orders": Order.objects.order_by("-id")[:10],
        "jobs": Job.objects.order_by("-id")[:15],
    })
