"""The example's jobs: the worker finds them because pgqueue imports every app's jobs module."""

import time

from django.utils import timezone

from example_project.shop.models import Order
from pgqueue import JobContext, job


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
