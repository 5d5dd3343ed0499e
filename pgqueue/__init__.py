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
    from pgqueue.batches import Batch, batch
    from pgqueue.context import JobContext, current_job
    from pgqueue.decorator import job
    from pgqueue.enqueueing import JobHandle, enqueue, enqueue_many
    from pgqueue.exceptions import JobNotUnique
    from pgqueue.flow import Unique
    from pgqueue.operations import cancel, replay
    from pgqueue.outbox import Event, publish, publish_many, subscriber
    from pgqueue.schedules import schedule
    from pgqueue.workflows import enqueue_workflow

_LAZY = {
    "Batch": "pgqueue.batches",
    "batch": "pgqueue.batches",
    "enqueue_workflow": "pgqueue.workflows",
    "Event": "pgqueue.outbox",
    "publish": "pgqueue.outbox",
    "publish_many": "pgqueue.outbox",
    "subscriber": "pgqueue.outbox",
    "schedule": "pgqueue.schedules",
    "job": "pgqueue.decorator",
    "enqueue": "pgqueue.enqueueing",
    "enqueue_many": "pgqueue.enqueueing",
    "JobHandle": "pgqueue.enqueueing",
    "JobNotUnique": "pgqueue.exceptions",
    "Unique": "pgqueue.flow",
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
