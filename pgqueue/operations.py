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
