"""The errors pgqueue raises: one base class, a few precise kinds."""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of every pgqueue error."""


class InvalidJob(PgQueueError, ValueError):
    """A job, an enqueue or an operation was refused before anything was written (bad input)."""


class UnknownJob(InvalidJob, LookupError):
    """No @job is registered under that name and none could be imported."""


class UnknownQueue(InvalidJob):
    """The queue is not among the declared PGQUEUE['QUEUES']."""


class PayloadTooLarge(InvalidJob):
    """The JSON payload is over PGQUEUE['MAX_PAYLOAD_BYTES']."""


class NotSerializable(InvalidJob, TypeError):
    """The arguments cannot be written as JSON."""


class InvalidJobId(InvalidJob, TypeError):
    """A job id given to cancel, replay, retry or delete is not an integer from 1 to 2**63 - 1.

    Also a TypeError, so code written for the earlier "non-integer id raises TypeError" keeps working.
    """


class JobNotUnique(PgQueueError):
    """A job's uniqueness key is held by another job (Unique(on_conflict="reject")); nothing was written."""

    def __init__(self, message: str, *, key: str, job_id: int | None) -> None:
        super().__init__(message)
        self.key = key
        self.job_id = job_id  # the job holding the key (None: an earlier call of the same enqueue_many)


class EnqueueRefused(PgQueueError):
    """A guardrail refused the enqueue (PGQUEUE['ENQUEUE_RATE_LIMITS']); nothing was written."""

    def __init__(self, message: str, *, queue: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.queue = queue
        self.reason = reason
        self.retry_after = retry_after  # seconds until the call would fit (rate limit)


class JobNotFound(PgQueueError, LookupError):
    """No job row with that id."""


class JobCancelled(PgQueueError):
    """Raised inside a running job (by JobContext.raise_if_cancelled) after a cancel request."""


class NonRetryable(PgQueueError):
    """Raise (or subclass) to send a job straight to dead without further attempts."""


# The error classes an attempt row names when the job itself raised nothing (pgqueue.lifecycle and the
# executor write these paths): real classes, so a django.tasks TaskError's exception_class resolves them.

class AttemptProblem(PgQueueError):
    """Base class of the endings pgqueue records for an attempt whose job raised nothing."""


class LostLease(AttemptProblem):
    """The worker went silent or the attempt's lease expired: the job was taken back to run again."""


class WorkerDied(LostLease):
    """The worker process ended (killed, crashed) while the attempt ran."""


class ResultTooLarge(AttemptProblem):
    """The job returned more JSON than PGQUEUE['MAX_RESULT_BYTES']: not stored, the job not run again."""


class UnreportableOutcome(AttemptProblem):
    """How the attempt ended could not be described (its exception misbehaved)."""


class UnstorableOutcome(AttemptProblem):
    """The database refused the attempt's outcome as written; it was stored without its details."""


class TransactionLeftOpen(AttemptProblem):
    """The job left a database transaction open; pgqueue rolled it back."""
