"""What jobs reaching a final state set off, once their transitions have committed: the jobs that depend on
them are released or cancelled (pgqueue.lifecycle.release decides, job_release_waiting_many applies), and
their batches' callbacks fire (batch_settle's guarded update).

Every step is guarded in SQL, so running it twice, or in two processes at once, does what running it once
does. It runs after the commit that finished the jobs (in its own transactions), so it sees everything
committed before: maintenance's sweep runs it for what a process that died in between left unsettled."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from django.db import transaction

from pgqueue import db, events, sql
from pgqueue.enqueuing import rows as newjobs
from pgqueue.lifecycle import release
from pgqueue.sql import Statement
from pgqueue.types import FINISHED_STATES

logger = logging.getLogger("pgqueue.settle")

FINISHED = frozenset(s.value for s in FINISHED_STATES)
R = TypeVar("R")


class Runner(Protocol):
    """Runs named statements: a worker role's db.Database, or Django's connection (InDjango)."""

    def run(self, statement: Statement[R], /, **params: Any) -> list[R]: ...

    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...


class InDjango:
    """A Runner on Django's connection for the pgqueue alias (joining the caller's transaction, if any)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def run(self, statement: Statement[R], /, **params: Any) -> list[R]:
        return db.run_in_django(statement, using=self.alias, **params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with transaction.atomic(using=self.alias):
            yield


def needed(rows: Iterable[Any]) -> tuple[list[int], list[int]]:
    """From rows of a statement that moved jobs (Moved, Cancelled, Released): the finished jobs
    that have dependents, and the batches of finished jobs. Both empty for plain jobs."""
    parents: list[int] = []
    batches: list[int] = []
    for row in rows:
        if row.state in FINISHED:
            if row.has_dependents:
                parents.append(row.id)
            if row.batch_id is not None:
                batches.append(row.batch_id)
    return parents, batches


def settle(runner: Runner, *, parents: Iterable[int] = (), batches: Iterable[int] = (), channel: str) -> None:
    """Release or cancel the jobs waiting for `parents` (and, in turn, for the jobs that cancels), then fire
    the callbacks of `batches` (and of the batches of the jobs cancelled) whose moment came."""
    pending = sorted(set(parents))
    to_settle = set(batches)
    released = cancelled = waiting = 0
    while pending:
        with runner.transaction():
            decisions = release(runner.run(sql.dependency_settle, ids=pending))
            rows = runner.run(
                sql.job_release_waiting_many, ids=[d.job_id for d in decisions],
                satisfied=[d.satisfied for d in decisions], reasons=[d.cancel_reason for d in decisions],
                channel=channel,
            ) if decisions else []
            keys = sorted({r.key for r in rows if r.key is not None})
            if keys:  # released jobs with a semaphore take its free slots now
                runner.run(sql.semaphore_hand_off, **db.hand_off_params([], channel=channel, keys=keys))
        gone = [r for r in rows if r.state == "cancelled"]
        released += sum(1 for r in rows if r.state not in ("waiting", "cancelled"))
        waiting += sum(1 for r in rows if r.state == "waiting")
        cancelled += len(gone)
        to_settle.update(r.batch_id for r in gone if r.batch_id is not None)
        pending = sorted(r.id for r in gone if r.has_dependents)  # their dependents, in turn
    if released or cancelled or waiting:
        events.emit("job_dependencies_settled", released=released, cancelled=cancelled, waiting=waiting)
    if to_settle:
        with runner.transaction():  # the guards set and the callback jobs inserted together
            fired = runner.run(sql.batch_settle, ids=sorted(to_settle))
            jobs, ids = [], []
            for row in fired:
                more, reserved = newjobs.callbacks(row.id, row.callbacks)
                jobs += more
                ids += reserved
            if jobs:
                runner.run(sql.job_insert_many, **newjobs.insert_params(jobs, ids, channel))
        for row in fired:
            events.emit("batch_settled", batch_id=row.id, failed=row.failed, finished=row.finished,
                        succeeded=row.succeeded)


def after_commit(alias: str, rows: Iterable[Any], *, channel: str) -> None:
    """Settle what these rows (jobs moved in Django's current transaction on `alias`) set off, once it commits."""
    parents, batches = needed(rows)
    on_commit(alias, parents=parents, batches=batches, channel=channel)


def on_commit(alias: str, *, parents: Iterable[int] = (), batches: Iterable[int] = (), channel: str) -> None:
    """Settle these jobs' dependents and these batches once Django's current transaction on `alias` commits
    (at once outside a transaction). A failure is logged: maintenance's sweep settles it instead."""
    parents, batches = list(parents), list(batches)
    if parents or batches:
        transaction.on_commit(lambda: safely(InDjango(alias), parents=parents, batches=batches, channel=channel),
                              using=alias)


def moved(runner: Runner, rows: Iterable[Any], *, channel: str) -> None:
    """Settle what these rows (jobs moved by a statement that has committed) set off, if anything: plain
    jobs set off nothing, and cost nothing here."""
    parents, batches = needed(rows)
    if parents or batches:
        safely(runner, parents=parents, batches=batches, channel=channel)


def safely(runner: Runner, *, parents: Iterable[int] = (), batches: Iterable[int] = (), channel: str) -> bool:
    """settle(), logging instead of raising: the jobs' own transitions have committed whatever happens here,
    and maintenance's sweep settles what this could not. False if it failed."""
    try:
        settle(runner, parents=parents, batches=batches, channel=channel)
    except Exception:
        logger.warning("pgqueue could not settle dependents or batches now (maintenance will): parents %s, "
                       "batches %s", sorted(set(parents))[:20], sorted(set(batches))[:20], exc_info=True)
        return False
    return True


def sweep(runner: Runner, *, channel: str, limit: int, after: int = 0) -> int:
    """Settle what a settle that did not run left: finished jobs with dependencies not settled, and closed
    batches not settled, `limit` batches after id `after` (maintenance runs this every round, going round
    all batches). Returns the `after` for the next round."""
    parents = [row.id for row in runner.run(sql.dependency_unsettled, limit=limit)]
    batches = [row.id for row in runner.run(sql.batch_unsettled, limit=limit, after=after)]
    if parents or batches:
        settle(runner, parents=parents, batches=batches, channel=channel)
    return batches[-1] if len(batches) == limit else 0
