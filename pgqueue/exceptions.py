"""The errors pgqueue raises: one base class, a few precise kinds."""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of every pgqueue error."""


class InvalidJob(PgQueueError, ValueError):
    """An enqueue was refused before anything was written (bad arguments or options)."""


class UnknownJob(InvalidJob, LookupError):
    """No @job is registered under that name and none could be imported."""


class UnknownQueue(InvalidJob):
    """The queue is not among the declared PGQUEUE['QUEUES']."""


class PayloadTooLarge(InvalidJob):
    """The JSON payload is over PGQUEUE['MAX_PAYLOAD_BYTES']."""


class NotSerializable(InvalidJob, TypeError):
    """The arguments cannot be written as JSON."""


class JobNotFound(PgQueueError, LookupError):
    """No job row with that id."""


class JobCancelled(PgQueueError):
    """Raised inside a running job (by JobContext.raise_if_cancelled) after a cancel request."""


class NonRetryable(PgQueueError):
    """Raise (or subclass) to send a job straight to dead without further attempts."""
