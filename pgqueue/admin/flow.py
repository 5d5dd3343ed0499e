"""Flow control in the admin: uniqueness and idempotency keys (who holds what, since when, release),
semaphores (limit, holders, blocked jobs, the oldest of them) and rate limits per key (tokens left, jobs
deferred, when the last of them is due)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Min
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from pgqueue import operations
from pgqueue.admin.actions import confirmed_action
from pgqueue.admin.base import PgQueueAdmin, alias, job_link
from pgqueue.lifecycle import bucket_tokens
from pgqueue.models import Job, Lock, RateLimit, Semaphore, SemaphoreSlot
from pgqueue.text import duration_text


def _age(when: Any) -> str:
    return "-" if when is None else duration_text((timezone.now() - when).total_seconds())


@admin.register(Lock)
class LockAdmin(PgQueueAdmin):
    list_display = ("kind", "key", "holder", "holder_state", "until", "status", "expires_at", "since")
    list_filter = ("kind", "released", "until")
    search_fields = ("key",)
    search_help_text = "Text in the key."
    ordering = ("-created_at",)
    readonly_fields = [f.name for f in Lock._meta.fields]
    actions = [
        confirmed_action(
            name="release_locks", description="Release", permission="release", target="lock",
            run=operations.release_locks,
            explain="The keys are free at once (a window they still have is ended too): the next enqueue with "
                    "one of them creates a job even if its holder still waits or runs.",
        ),
    ]

    def has_release_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("pgqueue.release_lock"))  # type: ignore[union-attr]

    @admin.display(description="job")
    def holder(self, lock: Lock) -> str:
        return job_link(lock.__dict__["job_id"])

    @admin.display(description="job state")
    def holder_state(self, lock: Lock) -> str:
        state = Job.objects.using(alias()).filter(id=lock.__dict__["job_id"]).values_list("state", flat=True).first()
        return state or "gone"

    @admin.display(description="status")
    def status(self, lock: Lock) -> str:
        if not lock.released:
            return "held"
        if lock.expires_at and lock.expires_at > timezone.now():
            return "held for its window"
        return "free"

    @admin.display(description="age", ordering="created_at")
    def since(self, lock: Lock) -> str:
        return _age(lock.created_at)


@admin.register(Semaphore)
class SemaphoreAdmin(PgQueueAdmin):
    list_display = ("key", "limit", "holders", "blocked", "oldest_blocked")
    search_fields = ("key",)
    search_help_text = "Text in the key (a queue's concurrency limit is pgqueue:queue:<name>)."
    ordering = ("key",)
    readonly_fields = ("key", "limit", "created_at", "holder_links", "blocked_link")
    fields = readonly_fields

    @admin.display(description="holding a slot")
    def holders(self, semaphore: Semaphore) -> int:
        return SemaphoreSlot.objects.using(alias()).filter(semaphore_id=semaphore.key, job_id__isnull=False).count()

    @admin.display(description="blocked")
    def blocked(self, semaphore: Semaphore) -> int:
        return Job.objects.using(alias()).filter(state="blocked", concurrency_key=semaphore.key).count()

    @admin.display(description="oldest blocked")
    def oldest_blocked(self, semaphore: Semaphore) -> str:
        first = (Job.objects.using(alias()).filter(state="blocked", concurrency_key=semaphore.key)
                 .aggregate(first=Min("created_at"))["first"])
        return _age(first)

    @admin.display(description="holders")
    def holder_links(self, semaphore: Semaphore) -> str:
        slots = (SemaphoreSlot.objects.using(alias()).filter(semaphore_id=semaphore.key, job_id__isnull=False)
                 .order_by("number").values_list("number", "job_id"))
        if not slots:
            return "-"
        return format_html_join(", ", "slot {}: {}", ((n, job_link(j)) for n, j in slots))

    @admin.display(description="blocked jobs")
    def blocked_link(self, semaphore: Semaphore) -> str:
        url = reverse("admin:pgqueue_job_changelist")
        query = urlencode({"state__exact": "blocked", "q": semaphore.key})
        return format_html('<a href="{}?{}">{} blocked</a>', url, query, self.blocked(semaphore))


def tokens_now(bucket: RateLimit) -> float:
    """The tokens the bucket holds now: what it held at updated_at, refilled since (as the lease counts)."""
    elapsed = max(0.0, (timezone.now() - bucket.updated_at).total_seconds())
    return bucket_tokens(bucket.tokens, elapsed, bucket.limit, bucket.window)


@admin.register(RateLimit)
class RateLimitAdmin(PgQueueAdmin):
    list_display = ("key", "rate", "tokens_left", "waiting", "last_due")
    search_fields = ("key",)
    search_help_text = "Text in the key."
    ordering = ("key",)
    readonly_fields = ("key", "rate", "tokens_left", "updated_at", "deferred_until", "created_at", "waiting_link")
    fields = readonly_fields

    @admin.display(description="rate")
    def rate(self, bucket: RateLimit) -> str:
        return f"{bucket.limit} per {duration_text(bucket.window)}"

    @admin.display(description="tokens now")
    def tokens_left(self, bucket: RateLimit) -> str:
        return f"{max(0.0, tokens_now(bucket)):.1f}"

    @admin.display(description="waiting (ready or scheduled)")
    def waiting(self, bucket: RateLimit) -> int:
        return Job.objects.using(alias()).filter(state__in=["ready", "scheduled"], rate_key=bucket.key).count()

    @admin.display(description="last deferred job due", ordering="deferred_until")
    def last_due(self, bucket: RateLimit) -> str:
        when = bucket.deferred_until
        if when is None or when <= timezone.now():
            return "-"
        return f"in {duration_text((when - timezone.now()).total_seconds())}"

    @admin.display(description="waiting jobs")
    def waiting_link(self, bucket: RateLimit) -> str:
        url = reverse("admin:pgqueue_job_changelist")
        return format_html('<a href="{}?{}">{} waiting</a>', url, urlencode({"q": bucket.key}), self.waiting(bucket))
