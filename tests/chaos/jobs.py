"""The chaos suite's jobs: each execution is recorded in chaos_execution (job id, attempt, pid, start and
end by the database clock), outside pgqueue's own tables, so the driver can check what really ran."""

from __future__ import annotations

import ctypes
import os
import time

from django.db import connection

from pgqueue import current_job, job

MAX_ATTEMPTS = 100  # faults interrupt attempts; none may make a job dead


def _started() -> int:
    ctx = current_job()
    assert ctx is not None
    with connection.cursor() as cur:
        cur.execute("INSERT INTO chaos_execution (job_id, attempt, pid, started_at) "
                    "VALUES (%s, %s, %s, clock_timestamp()) RETURNING id", [ctx.job_id, ctx.attempt, os.getpid()])
        return int(cur.fetchone()[0])


def _finished(execution: int) -> None:
    with connection.cursor() as cur:
        cur.execute("UPDATE chaos_execution SET finished_at = clock_timestamp() WHERE id = %s", [execution])


@job(queue="chaos", max_attempts=MAX_ATTEMPTS, retry_backoff=0.05, retry_backoff_max=0.5)
def record(n: int, work: float) -> int:
    """Record the start, work for `work` seconds, record the end."""
    execution = _started()
    time.sleep(work)
    _finished(execution)
    return n


@job(queue="chaos", max_attempts=MAX_ATTEMPTS, retry_backoff=0.05, retry_backoff_max=0.5)
def hold_interpreter(seconds: int) -> int:
    """Keep the interpreter lock `seconds` (a C sleep through ctypes.PyDLL, which does not release it): the
    heartbeat thread of this process cannot run, and the lease expires meanwhile."""
    execution = _started()
    ctypes.PyDLL(None).sleep(ctypes.c_uint(seconds))
    _finished(execution)
    return seconds
