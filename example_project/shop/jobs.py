"""The example's jobs: the worker finds them because pgqueue imports every app's jobs module."""

import time

from django.utils import timezone

from example_project.shop.models import Order
from pgqueue import Event, JobContext, job, schedule, subscriber


@job(queue="emails", max_attempts=5)
def send_confirmation(order_id: int) -> str:
    """Runs only if the order's transaction committed; marks the order as confirmed."""
    order = Order.objects.get(pk=order_id)
    order.confirmation_sent_at = timezone.now()
    order.save(update_fields=["confirmation_sent_at"])
    return f"confirmation sent to {order.email}"


@job(queue="default", max_attempts=3, retry_backoff=1.0)
def charge_card(order_id: int) -> None:
    """Always fails: watch it retry with backoff, then go dead (reason: max_attempts)."""
    raise ConnectionError(f"payment gateway unreachable for order {order_id}")


@job(queue="reports", pass_context=True, timeout=600)
def build_report(ctx: JobContext, steps: int = 20) -> dict[str, int]:
    """A long job that reports progress and honours cancel requests."""
    for step in range(1, steps + 1):
        ctx.raise_if_cancelled()
        time.sleep(0.5)
        ctx.progress(100 * step / steps, f"step {step} of {steps}")
    return {"rows": steps * 1000}


@job(queue="default")
def nightly_cleanup() -> int:
    """Enqueued with a delay from the page: it waits as 'scheduled', then runs."""
    return Order.objects.filter(confirmation_sent_at__isnull=True).count()


@job(queue="default")
def resize_image(order_id: int, size: int) -> str:
    """One job of the "thumbnails" batch: takes a moment, so the batch's progress bar moves."""
    time.sleep(2.0)
    return f"order {order_id}: {size}px"


@job(queue="default", pass_context=True)
def thumbnails_done(ctx: JobContext, order_id: int) -> str:
    """The batch's on_success callback: runs once, after every resize_image job of the batch succeeded."""
    return f"all thumbnails of order {order_id} are ready (batch {ctx.callback_of})"


@job(queue="default")
def workflow_step(name: str) -> str:
    """A step of the small workflow: fetch, then clean and enrich side by side, then report."""
    time.sleep(1.0)
    return f"{name} done"


@subscriber("order.paid", queue="emails")
def email_receipt(event: Event) -> str:
    """One of two subscribers of order.paid: each event becomes one job for each of them."""
    return f"receipt for order {event.payload['order']} sent"


@subscriber("order.*", queue="default")
def update_ledger(event: Event) -> str:
    """The other subscriber (every order.* event)."""
    return f"ledger: {event.topic} for order {event.payload['order']}"


@schedule("*/2 * * * *", name="shop.orders-report")
@job(queue="reports")
def orders_report() -> int:
    """A recurring job: every 2 minutes, counts the orders (see Schedules in the admin)."""
    return Order.objects.count()
