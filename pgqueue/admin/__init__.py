"""The Django admin as pgqueue's operator console: jobs, attempts, batches, outbox events, schedules, queues, locks, semaphores, workers,
audit log, overview."""

from pgqueue.admin.audit import AuditEntryAdmin
from pgqueue.admin.batches import BatchAdmin
from pgqueue.admin.flow import LockAdmin, RateLimitAdmin, SemaphoreAdmin
from pgqueue.admin.history import ArchivedJobAdmin, RefusalAdmin
from pgqueue.admin.jobs import AttemptAdmin, JobAdmin
from pgqueue.admin.outbox import OutboxEventAdmin
from pgqueue.admin.queues import QueueStateAdmin
from pgqueue.admin.schedules import ScheduleAdmin
from pgqueue.admin.workers import WorkerProcessAdmin

__all__ = [
    "ArchivedJobAdmin", "AttemptAdmin", "AuditEntryAdmin", "BatchAdmin", "JobAdmin", "LockAdmin", "OutboxEventAdmin", "QueueStateAdmin", "RateLimitAdmin", "RefusalAdmin", "ScheduleAdmin", "SemaphoreAdmin", "WorkerProcessAdmin",
]
