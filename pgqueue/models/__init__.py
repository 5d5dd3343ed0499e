"""pgqueue's tables: schema, indexes and constraints (no business logic; runtime SQL is in sql/)."""

from pgqueue.models.archive import ArchivedJob
from pgqueue.models.attempts import Attempt
from pgqueue.models.audit import AuditEntry
from pgqueue.models.batches import Batch
from pgqueue.models.dependencies import Dependency
from pgqueue.models.jobs import Job
from pgqueue.models.leaders import Leader
from pgqueue.models.locks import Lock
from pgqueue.models.outbox import Delivery, OutboxEvent
from pgqueue.models.queues import QueueState
from pgqueue.models.refusals import Refusal
from pgqueue.models.schedules import Schedule, ScheduleTick
from pgqueue.models.semaphores import RateLimit, Semaphore, SemaphoreSlot
from pgqueue.models.stats import QueueStat
from pgqueue.models.workers import WorkerProcess

__all__ = [
    "ArchivedJob", "Attempt", "AuditEntry", "Batch", "Delivery", "Dependency", "Job", "Leader", "Lock", "OutboxEvent", "QueueStat", "QueueState", "RateLimit", "Refusal", "Schedule", "ScheduleTick", "Semaphore", "SemaphoreSlot", "WorkerProcess",
]
