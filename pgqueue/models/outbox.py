"""The transactional outbox: events published in the caller's transaction (pgqueue.publish), and their
deliveries, one per (event, subscriber), each the job that the relay enqueued for it (docs/outbox.md).

The delivery's unique (event, subscriber) constraint is what makes the relay idempotent: a relay killed
mid-run rolls back whole, and a relay run again cannot enqueue the same delivery twice."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutboxEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    topic = models.CharField(max_length=255, help_text="What happened, dotted: order.paid.")
    key = models.CharField(max_length=255, null=True, blank=True,
                           help_text="Events with the same key reach an ordered subscriber in publish order.")
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), help_text="When its transaction published it.")
    relayed_at = models.DateTimeField(null=True, blank=True,
                                      help_text="When the relay enqueued its subscribers' jobs.")
    deliveries = models.IntegerField(null=True, blank=True, help_text="Subscribers it was delivered to.")

    class Meta:
        db_table = "pgqueue_outbox"
        ordering = ["-id"]
        verbose_name = "outbox event"
        indexes = [
            # Serves the relay: pending events in publish order.
            models.Index(fields=["id"], name="pgqueue_outbox_pending", condition=Q(relayed_at__isnull=True)),
            # Serves the retention prune.
            models.Index(fields=["relayed_at"], name="pgqueue_outbox_relayed", condition=Q(relayed_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"event {self.id} {self.topic}"


class Delivery(models.Model):
    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(OutboxEvent, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                              related_name="delivery_rows")
    subscriber = models.CharField(max_length=255, help_text="The subscriber's job name.")
    job_id = models.BigIntegerField(help_text="The job enqueued for it.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_outbox_delivery"
        ordering = ["id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "subscriber"], name="pgqueue_delivery_once"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} -> {self.subscriber}"
