"""pgqueue: background jobs for Django on PostgreSQL. Public API only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Event",
    "JobContext",
    "JobHandle",
    "JobNotUnique",
    "Unique",
    "batch",
    "cancel",
    "current_job",
    "enqueue",
    "enqueue_many",
    "enqueue_workflow",
    "job",
    "publish",
    "publish_many",
    "replay",
    "schedule",
    "subscriber",
]

if TYPE_CHECKING:
    from pgqueue.context import JobContext, current_job
    from pgqueue.enqueuing.api import enqueue, enqueue_many
    from pgqueue.enqueuing.batches import Batch, batch
    from pgqueue.enqueuing.decorator import job
    from pgqueue.enqueuing.flow import Unique
    from pgqueue.enqueuing.handle import JobHandle
    from pgqueue.enqueuing.workflows import enqueue_workflow
    from pgqueue.exceptions import JobNotUnique
    from pgqueue.operations import cancel, replay
    from pgqueue.outbox import Event, publish, publish_many, subscriber
    from pgqueue.schedules import schedule

_LAZY = {
    "Batch": "pgqueue.enqueuing.batches",
    "batch": "pgqueue.enqueuing.batches",
    "enqueue_workflow": "pgqueue.enqueuing.workflows",
    "Event": "pgqueue.outbox",
    "publish": "pgqueue.outbox",
    "publish_many": "pgqueue.outbox",
    "subscriber": "pgqueue.outbox",
    "schedule": "pgqueue.schedules",
    "job": "pgqueue.enqueuing.decorator",
    "enqueue": "pgqueue.enqueuing.api",
    "enqueue_many": "pgqueue.enqueuing.api",
    "JobHandle": "pgqueue.enqueuing.handle",
    "JobNotUnique": "pgqueue.exceptions",
    # attempt rows name these (django.tasks' TaskError.exception_class imports them by that path)
    "LostLease": "pgqueue.exceptions",
    "WorkerDied": "pgqueue.exceptions",
    "ResultTooLarge": "pgqueue.exceptions",
    "UnreportableOutcome": "pgqueue.exceptions",
    "UnstorableOutcome": "pgqueue.exceptions",
    "TransactionLeftOpen": "pgqueue.exceptions",
    "Unique": "pgqueue.enqueuing.flow",
    "JobContext": "pgqueue.context",
    "current_job": "pgqueue.context",
    "cancel": "pgqueue.operations",
    "replay": "pgqueue.operations",
}


def __getattr__(name: str) -> Any:
    # Lazy so that "import pgqueue" works before Django's app registry is ready.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pgqueue' has no attribute {name!r}")
