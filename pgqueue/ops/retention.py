"""Retention: which finished jobs are past their keep time (per state, and per queue where a rule says so),
deleted, or archived, in bounded batches that skip locked rows; run by the maintenance role every minute
and by pgqueue_prune."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgqueue import sql
from pgqueue.conf import RETAINED_STATES, RETENTION_MAX, Settings, check_queue_name
from pgqueue.exceptions import InvalidJob
from pgqueue.settle import Runner

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Seconds each finished state is kept (None: never pruned), rules per queue, the queues it covers
    (None: all) and whether pruned jobs are archived."""

    keep: dict[str, float | None]
    rules: dict[str, dict[str, float]] = field(default_factory=dict)
    queues: tuple[str, ...] | None = None
    archive: bool = False

    def keep_for(self, queue: str, state: str) -> float | None:
        """Seconds a finished job of this queue and state is kept (None: never pruned): its queue's rule for the
        state if there is one, else the state's (job_prune applies the same order)."""
        rule = self.rules.get(queue, {}).get(state)
        return rule if rule is not None else self.keep.get(state)

    @property
    def prunes_anything(self) -> bool:
        return any(v is not None for v in self.keep.values()) or any(self.rules.values())

    def params(self) -> dict[str, Any]:
        """The parameters job_prune and job_prune_count share (job_prune takes a limit and archive too)."""
        rules = [(q, s, k) for q, states in sorted(self.rules.items()) for s, k in sorted(states.items())]
        keeps = [k for k in self.keep.values() if k is not None] + [k for _, _, k in rules]
        return {
            "keep_succeeded": self.keep.get("succeeded"), "keep_dead": self.keep.get("dead"),
            "keep_cancelled": self.keep.get("cancelled"),
            "rule_queues": [r[0] for r in rules], "rule_states": [r[1] for r in rules],
            "rule_keeps": [r[2] for r in rules], "min_keep": min(keeps, default=RETENTION_MAX),
            "queues": list(self.queues) if self.queues is not None else None,
        }


def from_settings(settings: Settings) -> Policy:
    """KEEP_SUCCEEDED_SECONDS, KEEP_FAILED_SECONDS (dead and cancelled), RETENTION rules, ARCHIVE."""
    return Policy(
        keep={"succeeded": settings.KEEP_SUCCEEDED_SECONDS, "dead": settings.KEEP_FAILED_SECONDS,
              "cancelled": settings.KEEP_FAILED_SECONDS},
        rules=settings.RETENTION, archive=settings.ARCHIVE,
    )


def policy(settings: Settings, *, states: list[str] | None = None, older_than: float | None = None,
           queues: list[str] | None = None, archive: bool | None = None) -> Policy:
    """The settings' policy narrowed by pgqueue_prune's options: only `states`, one age for all of them
    (queue rules then do not apply), only `queues`."""
    base = from_settings(settings)
    for state in states or ():
        if state not in RETAINED_STATES:
            raise InvalidJob(f"state {state!r} is not a finished state; prune one of {', '.join(RETAINED_STATES)}.")
    for queue in queues or ():
        check_queue_name(queue)
    chosen = states or list(RETAINED_STATES)
    if older_than is None:
        keep = {s: (base.keep[s] if s in chosen else None) for s in RETAINED_STATES}
        rules = {q: {s: k for s, k in r.items() if s in chosen} for q, r in base.rules.items()}
    else:
        keep = {s: (older_than if s in chosen else None) for s in RETAINED_STATES}
        rules = {}
    return Policy(keep=keep, rules=rules, queues=tuple(queues) if queues else None,
                  archive=base.archive if archive is None else archive)


def parse_age(text: str) -> float:
    """"90", "90s", "15m", "12h", "7d", "2w" -> seconds; InvalidJob otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidJob(f"age {text!r} is not a duration: write seconds, or a number with s, m, h, d or w "
                         "(\"7d\", \"12h\").")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > RETENTION_MAX:
        raise InvalidJob(f"age {text!r} is over {RETENTION_MAX:.0f} seconds (100 years).")
    return seconds


def count(runner: Runner, rules: Policy) -> dict[str, int]:
    """Finished jobs past their retention now, per state (what a prune would take)."""
    if not rules.prunes_anything:
        return {}
    return {row.state: row.count for row in runner.run(sql.job_prune_count, **rules.params())}


def prune(runner: Runner, rules: Policy, *, batch: int = 1_000, rounds: int | None = None, pause: float = 0.0,
          duty: float = 1.0, progress: Callable[[int, int], None] | None = None,
          stop: Callable[[], bool] | None = None) -> tuple[int, int]:
    """Delete (or archive) what is past its retention, `batch` jobs per transaction, until none is left,
    `rounds` batches were done, or stop() says so. Between batches it rests `pause` seconds, and at least
    long enough to spend only `duty` of its time deleting (0.5: rest as long as the last batch took), which
    leaves the database's CPU and disk to the workers. progress(jobs, attempts) after each batch. Returns
    (jobs, attempts) pruned."""
    if not rules.prunes_anything:
        return 0, 0
    params = rules.params()
    jobs = attempts = done_rounds = 0
    while True:
        started = time.monotonic()
        row = runner.run(sql.job_prune, **params, limit=batch, archive=rules.archive)[0]
        took = time.monotonic() - started
        jobs += row.jobs
        attempts += row.attempts
        done_rounds += 1
        if progress is not None:
            progress(jobs, attempts)
        if row.jobs < batch or (rounds is not None and done_rounds >= rounds) or (stop is not None and stop()):
            return jobs, attempts
        rest = max(pause, took * (1.0 - duty) / duty)
        if rest > 0:
            time.sleep(rest)


def prune_archive(runner: Runner, settings: Settings, *, batch: int = 5_000, rounds: int = 100) -> None:
    """Delete archived jobs past ARCHIVE_KEEP_SECONDS (if set)."""
    if settings.ARCHIVE_KEEP_SECONDS is None:
        return
    for _ in range(rounds):
        if runner.run(sql.archive_prune, keep=settings.ARCHIVE_KEEP_SECONDS, limit=batch)[0].count < batch:
            return
