"""Operator verbs on existing jobs (cancel, replay), shared by the API, the admin and commands."""

from __future__ import annotations

from collections.abc import Iterable

from pgqueue import db
from pgqueue.conf import get_settings


def _ids(job_ids: int | Iterable[int]) -> list[int]:
    ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"job ids must be integers, got {i!r}")
    return ids


def cancel(job_ids: int | Iterable[int]) -> dict[int, str]:
    """Cancel waiting jobs at once; ask running ones to stop. Returns {job id: "cancelled" | "cancelling"}.

    Jobs already finished (or unknown) are left alone and absent from the result.
    """
    rows = db.run_in_django("job_cancel_many", ids=_ids(job_ids))
    return {row[0]: row[1] for row in rows}


def replay(job_ids: int | Iterable[int]) -> dict[int, int]:
    """Enqueue a new job copying each dead or cancelled job. Returns {old id: new id}."""
    rows = db.run_in_django("job_replay_many", ids=_ids(job_ids), channel=get_settings().NOTIFY_CHANNEL)
    return {row[0]: row[1] for row in rows}


def retry(job_ids: int | Iterable[int]) -> list[int]:
    """Run waiting jobs now, and give dead or cancelled ones one more attempt. Returns the ids moved."""
    rows = db.run_in_django("job_retry_many", ids=_ids(job_ids), channel=get_settings().NOTIFY_CHANNEL)
    return [row[0] for row in rows]


def delete_finished(job_ids: int | Iterable[int]) -> list[int]:
    """Delete finished jobs with their attempts; jobs not finished are kept. Returns the ids deleted."""
    return [row[0] for row in db.run_in_django("job_delete_finished_many", ids=_ids(job_ids))]


def pause(queues: str | Iterable[str]) -> list[str]:
    """Stop workers leasing from these queues (running jobs finish). Returns the queue names."""
    return _set_paused(queues, True)


def resume(queues: str | Iterable[str]) -> list[str]:
    """Let workers lease from these queues again."""
    return _set_paused(queues, False)


def _set_paused(queues: str | Iterable[str], paused: bool) -> list[str]:
    from pgqueue.conf import check_queue_name

    names = [check_queue_name(q) for q in ([queues] if isinstance(queues, str) else list(queues))]
    return [row[0] for row in db.run_in_django("queuestate_set_paused", names=names, paused=paused)]


def drain_and_pause(queues: str | Iterable[str]) -> list[str]:
    """Keep working a queue until nothing in it is ready or running, then pause it (maintenance does)."""
    from pgqueue.conf import check_queue_name

    names = [check_queue_name(q) for q in ([queues] if isinstance(queues, str) else list(queues))]
    return [row[0] for row in db.run_in_django("queuestate_drain", names=names)]
