"""Why a job is or is not running (manage.py pgqueue_explain): reads the job's row and the rows that hold it
back or run it (its queue's state and limits, semaphores, rate keys, dependencies, worker processes) through
the ORM, read-only, and says what it found in words, with the numbers."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.db.models.functions import Now

from pgqueue import db
from pgqueue.conf import Settings, get_settings
from pgqueue.enqueuing.options import JOB_ID_MAX
from pgqueue.exceptions import InvalidJobId, JobNotFound
from pgqueue.lifecycle import bucket_tokens, lease_rescuable, process_silent
from pgqueue.models import (
    ArchivedJob,
    Attempt,
    Batch,
    Dependency,
    Job,
    Lock,
    QueueState,
    RateLimit,
    Semaphore,
    SemaphoreSlot,
    WorkerProcess,
)
from pgqueue.ops import retention
from pgqueue.sql import statement
from pgqueue.text import seconds_text, short_repr
from pgqueue.worker.maintenance import REAP_EVERY

AHEAD_MAX = 1_000  # ready jobs counted ahead of a job; beyond it: "at least 1000"
LISTED_MAX = 20  # jobs named in one reason (slot holders, open dependencies)
ERROR_MAX = 500  # characters of a last error quoted
FINISHED = ("succeeded", "dead", "cancelled")
SLOT_HOLDING = ("ready", "running", "scheduled")  # a job in these states holds its semaphore slot

JOB_FIELDS = (
    "id", "queue", "task", "state", "priority", "run_at", "attempts", "max_attempts", "lost_attempts", "crashes",
    "timeout", "leased_by", "lease_expires_at", "cancel_requested", "progress", "progress_message", "error_class",
    "last_error", "reason_code", "replay_of_id", "lock_key", "idempotency_key", "concurrency_key", "slot",
    "queue_slot", "concurrency_hold", "rate_key", "batch_id", "callback_of_id", "waiting_on", "created_at",
    "started_at", "finished_at",
)


@dataclass(frozen=True, slots=True)
class LastId:
    last_id: int | None  # the highest id the job sequence has given (None: none yet)


JOB_ID_LAST = statement("explain_job_id_last", LastId)


@dataclass(frozen=True, kw_only=True)
class Reason:
    """One thing that holds the job back, runs it, or ended it. `code` is stable, for scripts."""

    code: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """What pgqueue_explain says about one job: the most telling reason first, then the others."""

    job_id: int
    state: str
    summary: str
    reasons: tuple[Reason, ...]
    facts: dict[str, Any] = field(default_factory=dict)  # plain values: str, int, float, bool, None, lists, dicts

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        """For JSON: the same content, in plain values."""
        return {"job_id": self.job_id, "state": self.state, "summary": self.summary,
                "reasons": [{"code": r.code, "text": r.text} for r in self.reasons], "facts": dict(self.facts)}


def explain(job_id: int) -> Explanation:
    """Explain job `job_id` as it is now. InvalidJobId for an id that is not an int from 1 to 2**63 - 1,
    JobNotFound if there is no such job. Reads only."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidJobId(f"a job id is an integer from 1 to {JOB_ID_MAX}, got {type(job_id).__name__} "
                           f"{short_repr(job_id)}.")
    if not 1 <= job_id <= JOB_ID_MAX:
        raise InvalidJobId(f"job id {job_id} is out of range: job ids are integers from 1 to {JOB_ID_MAX}.")
    settings = get_settings()
    alias = settings.DATABASE
    row = Job.objects.using(alias).filter(pk=job_id).annotate(db_now=Now()).values(*JOB_FIELDS, "db_now").first()
    if row is None:
        raise JobNotFound(_not_found(alias, job_id, settings))
    return _Look(alias, settings, row).explain()


def _not_found(alias: str, job_id: int, settings: Settings) -> str:
    last = db.run_in_django(JOB_ID_LAST, using=alias)[0].last_id
    if last is None or job_id > last:
        given = "no id has been given yet" if last is None else f"the highest id given so far is {last}"
        return f"No job with id {job_id}: no job has been given that id yet ({given})."
    archived = ArchivedJob.objects.using(alias).filter(pk=job_id).values_list("archived_at", "state").first()
    if archived is not None:
        return (f"No job with id {job_id}: it was archived at {_iso(archived[0])} ({archived[1]}), past its "
                "retention; the archive keeps its row and attempts (/admin/pgqueue/archivedjob/).")
    rules = f", RETENTION rules for {', '.join(sorted(settings.RETENTION))}" if settings.RETENTION else ""
    return (f"No job with id {job_id}: it was deleted, or pruned after its retention (KEEP_SUCCEEDED_SECONDS = "
            f"{settings.KEEP_SUCCEEDED_SECONDS:g} s, KEEP_FAILED_SECONDS = {settings.KEEP_FAILED_SECONDS:g} s{rules}), "
            "or its enqueue rolled back or is not committed yet.")


@dataclass(frozen=True, slots=True)
class _Found:
    reason: Reason
    blocking: bool  # it holds the job back (the summary names the first one)
    short: str  # the same, in a few words, for the summary


class _Look:
    """One explanation being put together: the job's row, the database's clock, what was found."""

    def __init__(self, alias: str, settings: Settings, row: dict[str, Any]) -> None:
        self.alias = alias
        self.settings = settings
        self.job = row
        self.now: dt.datetime = row["db_now"]
        self.found: list[_Found] = []
        self.facts: dict[str, Any] = {}
        self._queue_state: dict[str, Any] | None = None
        self._queue_state_read = False
        self._live: list[dict[str, Any]] | None = None  # live workers of the job's queue

    def add(self, code: str, text: str, *, blocking: bool = False, short: str = "") -> None:
        self.found.append(_Found(Reason(code=code, text=text), blocking, short or text))

    def _first_short(self, default: str) -> str:
        return next((f.short for f in self.found if f.blocking), default)

    def explain(self) -> Explanation:
        job = self.job
        self._base_facts()
        state = job["state"]
        if state == "scheduled":
            summary = self._scheduled()
        elif state == "ready":
            summary = self._ready()
        elif state == "blocked":
            summary = self._blocked()
        elif state == "waiting":
            summary = self._waiting()
        elif state == "running":
            summary = self._running()
        else:
            summary = self._finished()
        if state in ("scheduled", "blocked", "waiting"):
            self._queue_checks()  # it will need its queue open and served once it may run
        self._uniqueness()
        self._batch_facts()
        ordered = [f for f in self.found if f.blocking] + [f for f in self.found if not f.blocking]
        return Explanation(job_id=job["id"], state=state, summary=summary,
                           reasons=tuple(f.reason for f in ordered), facts=self.facts)

    # -- facts every job has ------------------------------------------------------------------------

    def _base_facts(self) -> None:
        job = self.job
        self.facts.update({
            "checked_at": _iso(self.now), "queue": job["queue"], "task": job["task"], "state": job["state"], "priority": job["priority"],
            "created_at": _iso(job["created_at"]), "run_at": _iso(job["run_at"]),
            "attempts": job["attempts"], "max_attempts": job["max_attempts"],
            "lost_attempts": job["lost_attempts"], "crashes": job["crashes"],
        })
        if job["run_at"] > self.now:
            self.facts["run_in_seconds"] = _round(self._until(job["run_at"]))
        for column, name in (("lock_key", "lock_key"), ("idempotency_key", "idempotency_key"),
                             ("concurrency_key", "concurrency_key"), ("slot", "slot"), ("queue_slot", "queue_slot"),
                             ("rate_key", "rate_key"), ("batch_id", "batch_id"), ("callback_of_id", "callback_of"),
                             ("replay_of_id", "replay_of")):
            if job[column] is not None:
                self.facts[name] = job[column]
        if job["started_at"] is not None:
            self.facts["started_at"] = _iso(job["started_at"])
        if job["finished_at"] is not None:
            self.facts["finished_at"] = _iso(job["finished_at"])

    # -- scheduled ------------------------------------------------------------------------------------

    def _scheduled(self) -> str:
        job = self.job
        label = _label(job)
        if job["run_at"] <= self.now:
            late = self._since(job["run_at"])
            due_ahead = _capped(Job.objects.using(self.alias).filter(
                state="scheduled", run_at__lte=self.now, run_at__lt=job["run_at"]))
            self.facts["due_ahead"] = due_ahead
            text = (f"Its run_at came {seconds_text(late)} ago, but it is not staged yet: the maintenance leader moves "
                    f"due jobs to ready every MAINTENANCE_SECONDS ({self.settings.MAINTENANCE_SECONDS:g} s), the "
                    f"oldest first, 5000 a round; {_count(due_ahead)} due job(s) are staged before it.")
            self.add("due_not_staged", text, blocking=True, short=f"it is due since {seconds_text(late)} but not staged")
            self._maintenance_check("stages due jobs")
            return f"{label} is scheduled and due since {seconds_text(late)}, but not staged yet."
        wait = self._until(job["run_at"])
        bucket = self._bucket()
        if (bucket is not None and bucket["deferred_until"] is not None and job["run_at"] <= bucket["deferred_until"]):
            rate = f"{bucket['limit']} per {bucket['window']:g} s"
            behind = _capped(Job.objects.using(self.alias).filter(
                state="scheduled", rate_key=job["rate_key"], run_at__lt=job["run_at"]))
            self.facts["deferred_ahead"] = behind
            self.add("rate_key_deferred",
                     f"It was deferred for want of a token of rate key {job['rate_key']!r} ({rate}): its token comes "
                     f"in {seconds_text(wait)} (at {_when(job['run_at'])}), after {_count(behind)} deferred job(s) "
                     f"of the key; the bucket holds {max(0.0, bucket['tokens_now']):.1f} token(s) now. Maintenance "
                     "makes it ready then.",
                     blocking=True, short=f"deferred by rate key {job['rate_key']!r} for {seconds_text(wait)}")
            return f"{label} is scheduled: rate key {job['rate_key']!r} deferred it; its token comes in {seconds_text(wait)}."
        last = self._last_attempt()
        if job["attempts"] > 0 and last is not None and last["outcome"] in ("failed", "timeout"):
            counted = job["attempts"] - job["lost_attempts"]
            text = (f"Attempt {job['attempts']} ({counted} of {job['max_attempts']} allowed) "
                    f"{'timed out' if last['outcome'] == 'timeout' else 'failed'}"
                    f"{_error_tail(job)}; it is retried in {seconds_text(wait)} (at {_when(job['run_at'])}).")
            if job["slot"] is not None and job["concurrency_hold"]:
                behind = _capped(Job.objects.using(self.alias).filter(state="blocked",
                                                                      concurrency_key=job["concurrency_key"]))
                text += (f" It keeps its slot of ordering key {job['concurrency_key']!r} meanwhile (it holds the line): "
                         f"{_count(behind)} blocked job(s) of the key wait for it to succeed or die.")
            self.add("retry_scheduled", text, blocking=True, short=f"it is retried in {seconds_text(wait)}")
            return f"{label} is scheduled to retry in {seconds_text(wait)} after a failed attempt."
        self.add("scheduled", f"Its run_at is {_when(job['run_at'])}, in {seconds_text(wait)}: it becomes ready then "
                              "(the maintenance leader stages it).",
                 blocking=True, short=f"it runs in {seconds_text(wait)}")
        if job["concurrency_key"] is not None and job["slot"] is None:
            self.add("semaphore", f"When it is due it also needs a slot of semaphore {job['concurrency_key']!r}: it "
                                  "waits 'blocked' if none is free then.")
        return f"{label} is scheduled: it becomes ready in {seconds_text(wait)} (at {_when(job['run_at'])})."

    # -- ready ----------------------------------------------------------------------------------------

    def _ready(self) -> str:
        job = self.job
        label = _label(job)
        suspect = job["crashes"] > 0
        self._queue_checks()
        workers = self._workers()
        if suspect:
            idle = [w for w in workers if w["running"] == 0]
            ahead = self._ready_ahead(suspects=True)
            text = (f"Its worker process crashed {job['crashes']} time(s) while running it, so it runs alone: a worker "
                    f"of queue {job['queue']!r} leases it (job_lease_suspect) only while it runs nothing else, and "
                    f"then leases nothing more until it ends. {len(idle)} of {len(workers)} live worker(s) of the "
                    f"queue are idle now; {_count(ahead)} crash suspect(s) of the queue are ahead of it. Queue "
                    "limits do not hold it back (its rate key's bucket may go below zero).")
            self.add("crash_suspect_alone", text, blocking=bool(workers) and not idle,
                     short="it is a crash suspect waiting for an idle worker to run alone")
        else:
            self._queue_limits()
            self._rate_key_ready()
            busy = [w for w in workers if w["running"] >= w["concurrency"] > 0]
            if workers and len(busy) == len(workers):
                running = sum(w["running"] for w in workers)
                slots = sum(w["concurrency"] for w in workers)
                self.add("workers_busy",
                         f"All {len(workers)} live worker(s) of queue {job['queue']!r} are full: {running} job(s) "
                         f"run in their {slots} slot(s); it is leased when a slot frees up.",
                         blocking=True, short=f"all {len(workers)} worker(s) of its queue are full")
            ahead = self._ready_ahead(suspects=False)
            if ahead:
                self.add("jobs_ahead",
                         f"{_count(ahead)} ready job(s) of queue {job['queue']!r} come before it in lease order "
                         "(priority, then run_at, then id).")
        if not any(f.blocking for f in self.found):
            self.add("nothing_blocks",
                     f"Nothing holds it back: a worker of queue {job['queue']!r} should lease it at its next lease "
                     f"(a NOTIFY wakes it at once, polling every POLL_SECONDS = {self.settings.POLL_SECONDS:g} s)"
                     f"{'' if not ahead else f', after the {_count(ahead)} job(s) ahead of it'}.")
            return f"{label} is ready and nothing holds it back: a worker should lease it soon."
        first = next(f for f in self.found if f.blocking)
        return f"{label} is ready but not picked up: {first.short}."

    def _ready_ahead(self, *, suspects: bool) -> int:
        job = self.job
        p, r = job["priority"], job["run_at"]
        rows = Job.objects.using(self.alias).filter(queue=job["queue"], state="ready").filter(
            Q(priority__gt=p) | Q(priority=p, run_at__lt=r) | Q(priority=p, run_at=r, id__lt=job["id"]))
        if suspects:
            ahead = _capped(rows.filter(crashes__gt=0))
        else:  # each count in one partial index: jobs without a rate key, and jobs with one
            ahead = min(AHEAD_MAX, _capped(rows.filter(crashes=0, rate_key__isnull=True))
                        + _capped(rows.filter(crashes=0, rate_key__isnull=False)))
        self.facts["ready_ahead"] = ahead
        self.facts["ready_ahead_capped"] = ahead >= AHEAD_MAX
        return ahead

    def _queue_limits(self) -> None:
        """The queue's concurrency limit (running slots) and rate limit (token bucket)."""
        job = self.job
        state = self._queue()
        if state is None:
            return
        limit = state["concurrency_limit"]
        if limit is not None:
            key = f"pgqueue:queue:{job['queue']}"
            slots = list(SemaphoreSlot.objects.using(self.alias).filter(semaphore_id=key)
                         .values_list("number", "job_id"))
            free = sum(1 for n, holder in slots if holder is None and n < limit)
            holders = sorted(holder for _n, holder in slots if holder is not None)
            self.facts["queue_concurrency_limit"] = limit
            self.facts["queue_running_slots_free"] = free
            if free == 0:
                self.facts["queue_slot_holders"] = self._states_of(holders)
                self.add("queue_concurrency_full",
                         f"Queue {job['queue']!r} allows {limit} running job(s) at once and all its running slots "
                         f"are taken, by {self._jobs_text(holders) or 'nobody (its slot rows are missing)'}; a slot "
                         "frees up when one of them stops running.",
                         blocking=True, short=f"queue {job['queue']!r} has its {limit} running slot(s) taken")
        rate, window = state["rate_limit"], state["rate_window"]
        if rate is not None and window:
            elapsed = max(0.0, (self.now - (state["rate_updated_at"] or self.now)).total_seconds())
            tokens = bucket_tokens(state["rate_tokens"] if state["rate_tokens"] is not None else float(rate),
                                   elapsed, rate, window)
            self.facts["queue_rate_limit"] = f"{rate} per {window:g} s"
            self.facts["queue_rate_tokens"] = round(tokens, 3)
            if tokens < 1:
                wait = (1 - tokens) * window / rate
                self.add("queue_rate_limited",
                         f"Queue {job['queue']!r} allows {rate} start(s) per {window:g} s and its bucket holds "
                         f"{max(0.0, tokens):.2f} token(s): the next start is possible in {seconds_text(wait)}.",
                         blocking=True, short=f"queue {job['queue']!r} is out of rate tokens for {seconds_text(wait)}")

    def _rate_key_ready(self) -> None:
        job = self.job
        bucket = self._bucket()
        if bucket is None:
            if job["rate_key"] is not None:
                self.add("rate_key", f"It has rate key {job['rate_key']!r}, whose bucket row is missing.")
            return
        tokens = bucket["tokens_now"]
        rate = f"{bucket['limit']} per {bucket['window']:g} s"
        self.facts["rate_key_tokens"] = round(tokens, 3)
        if tokens < 1:
            wait = (1 - tokens) * bucket["window"] / bucket["limit"]
            self.add("rate_key_no_token",
                     f"Its rate key {job['rate_key']!r} ({rate}) has {max(0.0, tokens):.2f} token(s): the next "
                     f"token comes in {seconds_text(wait)}; the next lease that reaches it defers it ('scheduled') "
                     "to when its token comes.",
                     blocking=True, short=f"rate key {job['rate_key']!r} has no token for {seconds_text(wait)}")
        else:
            self.add("rate_key", f"Its rate key {job['rate_key']!r} ({rate}) has {tokens:.1f} token(s): only a "
                                 "worker leasing with limits (job_lease_limited) starts it.")

    # -- blocked --------------------------------------------------------------------------------------

    def _blocked(self) -> str:
        job = self.job
        label = _label(job)
        key = job["concurrency_key"]
        if key is None:
            self.add("blocked_without_key", "It is blocked but has no semaphore key: nothing will hand it a slot; "
                                            "retry it (pgqueue.operations.retry) or cancel it.",
                     blocking=True, short="it is blocked without a semaphore (nothing will release it)")
            return f"{label} is blocked without a semaphore key: nothing will release it."
        semaphore = Semaphore.objects.using(self.alias).filter(key=key).values("limit").first()
        limit = semaphore["limit"] if semaphore is not None else None
        slots = list(SemaphoreSlot.objects.using(self.alias).filter(semaphore_id=key).order_by("number")
                     .values_list("number", "job_id"))
        holders = [holder for _n, holder in slots if holder is not None]
        free = [n for n, holder in slots if holder is None and (limit is None or n < limit)]
        held = {r["id"]: r for r in Job.objects.using(self.alias).filter(id__in=holders).values(
            "id", "state", "run_at", "concurrency_hold", "slot", "concurrency_key", "attempts", "max_attempts",
            "lost_attempts", "error_class", "last_error")}
        ahead = _capped(Job.objects.using(self.alias).filter(state="blocked", concurrency_key=key, id__lt=job["id"],
                                                             run_at__lte=self.now))
        kind = _semaphore_kind(key, job["concurrency_hold"])
        self.facts.update({"semaphore": key, "semaphore_kind": kind, "semaphore_limit": limit,
                           "semaphore_slots_free": len(free), "blocked_ahead": ahead,
                           "slot_holders": [{"id": h, "state": held[h]["state"] if h in held else "gone"}
                                            for h in holders[:LISTED_MAX]]})
        if limit is None:
            self.add("semaphore_missing", f"Its semaphore {key!r} has no row: nothing will hand it a slot until a "
                                          "job with the key is enqueued again (which creates it).",
                     blocking=True, short=f"its semaphore {key!r} is missing")
        if job["run_at"] > self.now:
            wait = self._until(job["run_at"])
            self.add("retry_delay",
                     f"It gave its slot up to wait for its retry: its delay ends in {seconds_text(wait)} (at "
                     f"{_when(job['run_at'])}); then it waits for a slot of {key!r} with the others.",
                     blocking=True, short=f"its retry delay ends in {seconds_text(wait)}")
        orphans = [h for h in holders if h not in held or held[h]["state"] not in SLOT_HOLDING
                   or held[h]["concurrency_key"] != key]
        if orphans:
            self.add("slot_orphaned",
                     f"{len(orphans)} slot(s) of {key!r} are held by job(s) that no longer hold them "
                     f"({self._jobs_text(orphans, held)}): the maintenance leader frees such slots every "
                     f"{REAP_EVERY:g} s and hands them on.",
                     blocking=not free, short=f"a slot of {key!r} is held by a job that is gone or finished")
            self._maintenance_check("frees orphaned slots")
        holding = [h for h in holders if h not in orphans]
        self._slot_wait(key, kind, limit, free, holding, held, ahead)
        return f"{label} is blocked: {self._first_short(f'it waits for a slot of {key!r}')}."

    def _slot_wait(self, key: str, kind: str, limit: int | None, free: list[int], holding: list[int],
                   held: dict[int, dict[str, Any]], ahead: int) -> None:
        """What a blocked job waits for, its semaphore's slots being as they are: the hand-off of a free one,
        an ordering key's holder waiting to retry, another copy of a unique job, or a slot of a full semaphore."""
        job = self.job
        line = [h for h in holding if held[h]["concurrency_hold"] and held[h]["state"] == "scheduled"]
        if free:
            if job["run_at"] <= self.now:  # else its retry delay holds it back, not the slots
                self.add("hand_off_pending",
                         f"{len(free)} slot(s) of {key!r} are free: the maintenance leader's hand-off sweep (every "
                         f"MAINTENANCE_SECONDS = {self.settings.MAINTENANCE_SECONDS:g} s) gives them to the oldest "
                         f"blocked jobs of the key; {_count(ahead)} blocked job(s) come before it.",
                         blocking=True, short=f"a slot of {key!r} is free and waits for the hand-off")
                self._maintenance_check("hands free slots to blocked jobs")
        elif line:
            holder = held[line[0]]
            wait = self._until(holder["run_at"])
            counted = holder["attempts"] - holder["lost_attempts"]
            self.add("ordering_key_held",
                     f"Ordering key {key!r} is held by job {line[0]}, which holds the line while it waits to retry "
                     f"(attempt {holder['attempts']}, {counted} of {holder['max_attempts']} allowed, failed"
                     f"{_error_tail(holder)}; retry in {seconds_text(wait)}): later jobs of the key wait until it "
                     f"succeeds or dies (ordering_retry='block'); {_count(ahead)} blocked job(s) come before it.",
                     blocking=True, short=f"ordering key {key!r} is held by job {line[0]}, waiting to retry")
        elif kind == "unique":
            self.add("unique_key_busy",
                     f"Copies with its uniqueness key run one at a time (Unique(until='running'), semaphore {key!r}): "
                     f"{self._jobs_text(holding, held) or 'no job'} holds it; {_count(ahead)} blocked copy(ies) "
                     "come before it.",
                     blocking=True, short=f"another copy with its uniqueness key holds {key!r}")
        elif limit is not None:
            self.add("semaphore_full",
                     f"It waits for a slot of {'ordering key' if kind == 'ordering' else 'semaphore'} {key!r} "
                     f"(limit {limit}): {len(holding)} held by {self._jobs_text(holding, held) or 'nobody'}; "
                     f"{_count(ahead)} blocked job(s) of the key come before it (slots go in enqueue order).",
                     blocking=True, short=f"the {limit} slot(s) of {key!r} are taken")

    # -- waiting ----------------------------------------------------------------------------------------

    def _waiting(self) -> str:
        job = self.job
        label = _label(job)
        edges = list(Dependency.objects.using(self.alias).filter(job_id=job["id"]).order_by("depends_on_id")
                     .values("depends_on_id", "on_failure", "settled_at"))
        unsettled = [e for e in edges if e["settled_at"] is None]
        parents = {r["id"]: r for r in Job.objects.using(self.alias).filter(
            id__in=[e["depends_on_id"] for e in unsettled]).values("id", "state", "task", "finished_at")}
        open_ = [e for e in unsettled if e["depends_on_id"] in parents
                 and parents[e["depends_on_id"]]["state"] not in FINISHED]
        done = [e for e in unsettled if e["depends_on_id"] in parents
                and parents[e["depends_on_id"]]["state"] in FINISHED]
        missing = [e for e in unsettled if e["depends_on_id"] not in parents]
        self.facts["waiting_on"] = job["waiting_on"]
        self.facts["depends_on"] = len(edges)
        self.facts["depends_on_open"] = [{"id": e["depends_on_id"], "state": parents[e["depends_on_id"]]["state"]}
                                         for e in open_[:LISTED_MAX]]
        if open_:
            ids = [e["depends_on_id"] for e in open_]
            cancel = sorted({e["on_failure"] for e in open_}) == ["cancel"]
            self.add("dependency_pending",
                     f"It waits for {len(open_)} of the {len(edges)} job(s) it depends on: "
                     f"{self._jobs_text(ids, parents)}. "
                     + ("If one of them is dead or cancelled, it is cancelled (on_dependency_failure='cancel')."
                        if cancel else "It runs once they have finished, whatever their outcome"
                        " (on_dependency_failure='run' for some)."),
                     blocking=True, short=f"it waits for {len(open_)} job(s) it depends on")
        if done:
            ids = [e["depends_on_id"] for e in done]
            ago = max([self._since(parents[i]["finished_at"]) for i in ids if parents[i]["finished_at"] is not None],
                      default=0.0)
            self.add("dependency_settle_pending",
                     f"{len(done)} job(s) it depends on have finished ({self._jobs_text(ids, parents)}) but their "
                     f"dependency is not settled yet (the earliest finished {seconds_text(ago)} ago): the process that "
                     "finished them settles it after its commit, else the maintenance leader's sweep does.",
                     blocking=not open_, short="a finished dependency is not settled yet")
            self._maintenance_check("settles dependencies left unsettled")
        if missing:
            ids = [e["depends_on_id"] for e in missing]
            self.add("dependency_missing",
                     f"It depends on job(s) {', '.join(map(str, ids[:LISTED_MAX]))}, which no longer exist (deleted, "
                     "or pruned before being settled): nothing will settle these dependencies, so it waits forever. "
                     "Retry it to run it now (pgqueue.operations.retry), or cancel it.",
                     blocking=True, short="it depends on a job that no longer exists")
        if not unsettled:
            self.add("dependency_stuck",
                     f"It is waiting (waiting_on = {job['waiting_on']}) but every dependency of it is settled: "
                     "nothing will release it. Retry it to run it now (pgqueue.operations.retry), or cancel it.",
                     blocking=True, short="every dependency is settled but it still waits")
        return f"{label} is waiting: {self._first_short('it waits for the jobs it depends on')}."

    # -- running --------------------------------------------------------------------------------------

    def _running(self) -> str:
        job = self.job
        label = _label(job)
        owner = job["leased_by"]
        expires = self._until(job["lease_expires_at"]) if job["lease_expires_at"] is not None else None
        started = self._since(job["started_at"]) if job["started_at"] is not None else None
        worker = (WorkerProcess.objects.using(self.alias).filter(id=owner)
                  .values("state", "hostname", "pid", "last_heartbeat", "vouched_at").first() if owner else None)
        age = self._since(worker["last_heartbeat"]) if worker is not None else None
        vouched = (self._since(worker["vouched_at"]) if worker is not None and worker["vouched_at"] is not None
                   else None)
        counted = job["attempts"] - job["lost_attempts"]
        self.facts.update({"lease_owner": owner, "lease_expires_in_seconds": _round(expires),
                           "running_for_seconds": _round(started), "cancel_requested": job["cancel_requested"],
                           "progress": job["progress"], "progress_message": job["progress_message"]})
        if worker is not None:
            self.facts.update({"owner_state": worker["state"], "owner_heartbeat_age_seconds": _round(age),
                               "owner_host": worker["hostname"], "owner_pid": worker["pid"]})
        where = f"worker {owner}" + (f" ({worker['hostname']}, pid {worker['pid']})" if worker is not None else "")
        progress = (f"; progress {job['progress']:g}%" + (f" ({job['progress_message']})" if job["progress_message"]
                                                           else "")) if job["progress"] is not None else ""
        self.add("running",
                 f"It runs on {where} since {_when(job['started_at'])} ({seconds_text(started or 0.0)}), attempt "
                 f"{job['attempts']} ({counted} of {job['max_attempts']} allowed); its worker's last heartbeat was "
                 f"{seconds_text(age) + ' ago' if age is not None else 'never seen'}"
                 f"{'' if expires is None or expires < 0 else f', its lease expires in {seconds_text(expires)}'}"
                 f"{progress}.")
        starved = self._holder(owner, worker, age, vouched)
        self._lease(worker, expires, starved)
        if job["cancel_requested"]:
            self.add("cancel_requested",
                     f"A cancel was requested: its worker sees it at its next heartbeat (every HEARTBEAT_SECONDS = "
                     f"{self.settings.HEARTBEAT_SECONDS:g} s) and the job stops when it checks "
                     "(ctx.raise_if_cancelled(), or its async task is cancelled); a retry or hand-back then becomes "
                     "'cancelled'.",
                     short="a cancel was requested")
        if job["timeout"] is not None and started is not None and started > job["timeout"]:
            self.add("past_timeout",
                     f"It has run {seconds_text(started)}, past its timeout of {job['timeout']:g} s: its worker should "
                     "record the timeout at once; if it does not, the worker is stuck or gone.")
        first = next((f for f in self.found if f.blocking), None)
        tail = f": {first.short}" if first is not None else (
            f", its lease expires in {seconds_text(expires)}" if expires is not None else "")
        return f"{label} is running on worker {owner} (attempt {job['attempts']}){tail}."

    def _holder(self, owner: str | None, worker: dict[str, Any] | None, age: float | None,
                vouched: float | None) -> bool:
        """What the worker holding the job says of it (workerprocess_reap's rule); True if its own heartbeat is
        silent while its supervisor vouches for it (a job holds its interpreter)."""
        dead_after = self.settings.WORKER_DEAD_AFTER
        silent = worker is not None and process_silent(worker["last_heartbeat"], worker["vouched_at"], self.now,
                                                       dead_after)
        starved = (worker is not None and worker["state"] != "dead" and age is not None and age > dead_after
                   and not silent)  # its own heartbeat is silent, its supervisor vouches for it
        if starved:
            self.add("worker_starved",
                     f"Its worker's own heartbeat is silent for {seconds_text(age or 0.0)} but its supervisor saw the "
                     f"process alive {seconds_text(vouched or 0.0)} ago: a job holds that process's interpreter. The "
                     "job is not taken back while the process lives (it may still be running it); past a job's "
                     "timeout the supervisor ends the process.",
                     short="its worker's process is busy holding the interpreter")
        elif worker is None:
            self.add("worker_silent",
                     f"Its worker {owner} has no process row (it never registered, or was forgotten a day after it "
                     "stopped): only its lease's expiry lets maintenance rescue the job.",
                     blocking=True, short=f"its worker {owner} is unknown")
        elif worker["state"] == "dead" or silent:
            self.add("worker_silent",
                     f"Its worker {owner} is {worker['state']}, last heartbeat {seconds_text(age or 0.0)} ago (a worker "
                     f"silent for WORKER_DEAD_AFTER = {dead_after:g} s is dead): the maintenance leader rescues the job "
                     "at its next round: ready again (the attempt counted as lost), or dead if lost too often.",
                     blocking=True, short=f"its worker {owner} is silent for {seconds_text(age or 0.0)}")
            self._maintenance_check("rescues jobs of dead workers")
        elif worker["state"] == "stopping":
            self.add("worker_stopping", f"Its worker {owner} is shutting down: the job finishes within the "
                                        "worker's --shutdown-timeout, or is handed back (ready again).")
        return starved

    def _lease(self, worker: dict[str, Any] | None, expires: float | None, starved: bool) -> None:
        """Whether the job's lease lets maintenance take it back (job_get_expired's rule)."""
        rescuable = lease_rescuable(worker["state"] if worker is not None else None, self.job["lease_expires_at"],
                                    worker["last_heartbeat"] if worker is not None else None, self.now)
        self.facts["rescuable"] = rescuable
        if expires is not None and expires < 0 and not rescuable and not starved:
            self.add("lease_ran_out_held",
                     f"Its lease ran out {seconds_text(-expires)} ago, but its worker, alive, has not heartbeated "
                     "since: it may still be running the job, so the job is not taken back until the worker "
                     "heartbeats without it or its process is dead.")
        elif expires is not None and expires < 0 and rescuable:
            self.add("lease_expired",
                     f"Its lease expired {seconds_text(-expires)} ago (its worker stopped extending it): the maintenance "
                     "leader rescues it at its next round: ready again (the attempt counted as lost), or dead if lost "
                     "too often.",
                     blocking=True, short=f"its lease expired {seconds_text(-expires)} ago")
            self._maintenance_check("rescues expired leases")

    # -- finished -------------------------------------------------------------------------------------

    def _finished(self) -> str:
        job = self.job
        label = _label(job)
        state = job["state"]
        finished = job["finished_at"]
        when = f" at {_when(finished)} ({seconds_text(self._since(finished))} ago)" if finished is not None else ""
        counted = job["attempts"] - job["lost_attempts"]
        tries = (f"after {job['attempts']} attempt(s) ({job['lost_attempts']} lost, {counted} of "
                 f"{job['max_attempts']} allowed)")
        self.facts.update({"reason_code": job["reason_code"], "error_class": job["error_class"],
                           "last_error": job["last_error"][:ERROR_MAX]})
        if state == "succeeded":
            text = f"It succeeded{when}, {tries}."
        elif state == "dead":
            text = (f"It died{when}, reason {job['reason_code'] or 'unknown'} "
                    f"({_REASONS.get(job['reason_code'], 'see reason codes')}), {tries}{_error_tail(job)}. "
                    "Retry it (pgqueue.operations.retry) or replay it (pgqueue.replay) to run it again.")
        elif job["reason_code"] == "dependency":
            text = f"It was cancelled{when} because {job['last_error'] or 'a job it depends on failed'}."
        else:
            text = (f"It was cancelled{when}: an operator or the code asked (pgqueue.cancel, Batch.cancel), "
                    f"{tries}.")
        keep = retention.from_settings(self.settings).keep_for(job["queue"], state)
        if finished is not None and keep is not None:  # a batch's jobs stay longer, until it has settled
            self.facts["pruned_after"] = _iso(finished + dt.timedelta(seconds=keep))
            self.facts["pruned_to"] = "the archive (pgqueue_archivedjob)" if self.settings.ARCHIVE else "deletion"
        self.add("finished", text)
        replays = list(Job.objects.using(self.alias).filter(replay_of_id=job["id"]).order_by("id")
                       .values_list("id", "state")[:LISTED_MAX])
        if replays:
            self.facts["replayed_by"] = [{"id": i, "state": s} for i, s in replays]
            self.add("replayed", "It was replayed as " + ", ".join(f"job {i} ({s})" for i, s in replays) + ".")
        return f"{label} is {state}" + (f" ({job['reason_code']})" if job["reason_code"] else "") + f"{when}."

    # -- what any open job needs: its queue open and served, maintenance alive ---------------------------

    def _queue_checks(self) -> None:
        job = self.job
        state = self._queue()
        name = job["queue"]
        if state is not None and state["paused"]:
            self.facts["queue_paused"] = True
            if state["resume_at"] is not None:
                wait = self._until(state["resume_at"])
                resume = (f"maintenance resumes it in {seconds_text(wait)} (at {_when(state['resume_at'])})" if wait > 0
                          else f"its cool-down ended {seconds_text(-wait)} ago: the maintenance leader resumes it at "
                               "its next round")
                self.facts["queue_resume_at"] = _iso(state["resume_at"])
                why = state["paused_reason"].removeprefix("circuit breaker: ") or "tripped"
                self.add("breaker_open",
                         f"Queue {name!r} is paused by its circuit breaker ({why}): "
                         f"{resume}; an operator may resume it now (manage.py pgqueue_queue resume {name}).",
                         blocking=True, short=f"queue {name!r} is paused by its circuit breaker")
                if wait <= 0:
                    self._maintenance_check("resumes queues whose breaker cooled down")
            else:
                why = f" ({state['paused_reason']})" if state["paused_reason"] else ""
                self.add("queue_paused",
                         f"Queue {name!r} is paused{why}: workers lease nothing from it until it is resumed "
                         f"(manage.py pgqueue_queue resume {name}, or the admin's queue list).",
                         blocking=True, short=f"queue {name!r} is paused")
        elif state is not None and state["pause_when_empty"]:
            self.add("queue_draining", f"Queue {name!r} is draining: it is worked until nothing in it is ready or "
                                       "running, then paused.")
        workers = self._workers()
        self.facts["live_workers"] = len(workers)
        if not workers:
            silent = self._silent_workers()
            tail = (f"; {len(silent)} worker process(es) of the queue are silent or dead "
                    f"({', '.join(silent[:LISTED_MAX])})" if silent else "")
            self.add("no_worker",
                     f"No live worker process serves queue {name!r} (a 'worker' row in state running, with a "
                     f"heartbeat or its supervisor's word in the last WORKER_DEAD_AFTER = "
                     f"{self.settings.WORKER_DEAD_AFTER:g} s, whose "
                     f"--queues include it){tail}. Start one: manage.py pgqueue_worker --queues {name}.",
                     blocking=True, short=f"no live worker serves queue {name!r}")

    def _maintenance_check(self, what: str) -> None:
        if any(f.reason.code == "no_maintenance" for f in self.found):
            return
        alive = sum(1 for w in WorkerProcess.objects.using(self.alias).filter(kind="maintenance", state="running")
                    .values("last_heartbeat", "vouched_at") if self._alive(w))
        self.facts["live_maintenance"] = alive
        if not alive:
            self.add("no_maintenance",
                     f"No live maintenance process (each pgqueue_worker supervisor runs one unless told not to; one "
                     f"of them leads, elected through pgqueue_leader): nothing {what}. Start pgqueue_worker.",
                     blocking=True, short="no maintenance process is running")

    def _uniqueness(self) -> None:
        job = self.job
        key = job["lock_key"]
        if key is None:
            return
        lock = Lock.objects.using(self.alias).filter(kind="unique", key=key).values(
            "job_id", "until", "released", "expires_at").first()
        mine = lock is not None and lock["job_id"] == job["id"]
        window = mine and lock is not None and lock["expires_at"] is not None and lock["expires_at"] > self.now
        held = mine and lock is not None and not lock["released"]
        self.facts["lock_held"] = bool(held or window)
        if held and lock is not None:
            until = {"started": "until it starts", "finished": "until it finishes"}.get(lock["until"], lock["until"])
            extra = f", and for its window until {_when(lock['expires_at'])}" if window else ""
            self.add("uniqueness", f"It holds uniqueness key {key!r} {until}{extra}: an enqueue with the same key is "
                                   "refused, discarded or merged into it (its on_conflict).")
        elif window and lock is not None:
            self.add("uniqueness", f"Its uniqueness key {key!r} still counts until {_when(lock['expires_at'])} (its "
                                   "window): an enqueue with the key until then is refused, discarded or merged.")
        elif lock is not None and not mine:
            self.facts["lock_holder"] = lock["job_id"]
            self.add("uniqueness", f"Its uniqueness key {key!r} is now held by job {lock['job_id']}.")

    def _batch_facts(self) -> None:
        for name, batch_id in (("batch", self.job["batch_id"]), ("callback_of", self.job["callback_of_id"])):
            if batch_id is None:
                continue
            row = Batch.objects.using(self.alias).filter(pk=batch_id).values(
                "closed_at", "cancelled_at", "finished_at").first()
            self.facts[f"{name}_state"] = (
                "gone" if row is None else "cancelled" if row["cancelled_at"] is not None
                else "finished" if row["finished_at"] is not None else "closed" if row["closed_at"] is not None
                else "open")

    # -- rows read once -------------------------------------------------------------------------------

    def _queue(self) -> dict[str, Any] | None:
        if not self._queue_state_read:
            self._queue_state = QueueState.objects.using(self.alias).filter(name=self.job["queue"]).values(
                "paused", "pause_when_empty", "paused_reason", "resume_at", "concurrency_limit", "rate_limit",
                "rate_window", "rate_tokens", "rate_updated_at").first()
            self._queue_state_read = True
        return self._queue_state

    def _workers(self) -> list[dict[str, Any]]:
        """Live worker processes serving the job's queue, each with the jobs it runs now."""
        if self._live is not None:
            return self._live
        rows = [w for w in WorkerProcess.objects.using(self.alias).filter(kind="worker", state="running").values(
                    "id", "queues", "concurrency", "last_heartbeat", "vouched_at")
                if self.job["queue"] in w["queues"].split(",") and self._alive(w)]
        running: dict[str, int] = {}
        if rows:
            for leased_by in Job.objects.using(self.alias).filter(
                    state="running", leased_by__in=[w["id"] for w in rows]).values_list("leased_by", flat=True):
                running[leased_by] = running.get(leased_by, 0) + 1
        self._live = [{**w, "running": running.get(w["id"], 0)} for w in rows]
        return self._live

    def _alive(self, process: dict[str, Any]) -> bool:
        """workerprocess_reap's rule: its own heartbeat or its supervisor's vouching within WORKER_DEAD_AFTER."""
        return not process_silent(process["last_heartbeat"], process["vouched_at"], self.now,
                                  self.settings.WORKER_DEAD_AFTER)

    def _silent_workers(self) -> list[str]:
        return [w["id"] for w in WorkerProcess.objects.using(self.alias).filter(
                    kind="worker", state__in=["running", "stopping", "dead"]).values("id", "queues")
                if self.job["queue"] in w["queues"].split(",")]

    def _bucket(self) -> dict[str, Any] | None:
        key = self.job["rate_key"]
        if key is None:
            return None
        row = RateLimit.objects.using(self.alias).filter(key=key).values(
            "limit", "window", "tokens", "updated_at", "deferred_until").first()
        if row is None:
            return None
        elapsed = max(0.0, (self.now - row["updated_at"]).total_seconds())
        row["tokens_now"] = bucket_tokens(row["tokens"], elapsed, row["limit"], row["window"])
        self.facts["rate_limit"] = f"{row['limit']} per {row['window']:g} s"
        return row

    def _last_attempt(self) -> dict[str, Any] | None:
        return (Attempt.objects.using(self.alias).filter(job_id=self.job["id"]).order_by("-id")
                .values("outcome", "finished_at").first())

    def _states_of(self, ids: list[int]) -> list[dict[str, Any]]:
        states = dict(Job.objects.using(self.alias).filter(id__in=ids[:LISTED_MAX]).values_list("id", "state"))
        return [{"id": i, "state": states.get(i, "gone")} for i in ids[:LISTED_MAX]]

    def _jobs_text(self, ids: list[int], rows: dict[int, dict[str, Any]] | None = None) -> str:
        """ "job 4 (running), job 7 (scheduled, in 30 s)": at most LISTED_MAX of them, then "and N more"."""
        if rows is None:
            rows = {r["id"]: r for r in Job.objects.using(self.alias).filter(id__in=ids[:LISTED_MAX])
                    .values("id", "state", "run_at")}
        parts = []
        for i in ids[:LISTED_MAX]:
            row = rows.get(i)
            if row is None:
                parts.append(f"job {i} (gone)")
            elif row["state"] == "scheduled" and row.get("run_at") is not None and row["run_at"] > self.now:
                parts.append(f"job {i} (scheduled, in {seconds_text(self._until(row['run_at']))})")
            else:
                parts.append(f"job {i} ({row['state']})")
        if len(ids) > LISTED_MAX:
            parts.append(f"and {len(ids) - LISTED_MAX} more")
        return ", ".join(parts)

    def _until(self, when: dt.datetime) -> float:
        return (when - self.now).total_seconds()

    def _since(self, when: dt.datetime) -> float:
        return (self.now - when).total_seconds()


_REASONS = {
    "max_attempts": "its last allowed attempt failed or timed out",
    "non_retryable": "it raised a non-retryable error",
    "unknown_task": "no @job was found under its name",
    "lost": "its worker died or went silent during more attempts than max_attempts",
    "crashed": "its process crashed again while it ran alone: the likely cause",
    "result_too_large": "it returned a result over MAX_RESULT_BYTES",
}


def _semaphore_kind(key: str, hold: bool) -> str:
    if key.startswith("pgqueue:unique:"):
        return "unique"
    return "ordering" if hold else "concurrency"


def _capped(rows: Any) -> int:
    """How many rows, counting at most AHEAD_MAX of them."""
    return int(rows.values("id")[:AHEAD_MAX].count())


def _count(n: int) -> str:
    return f"at least {n}" if n >= AHEAD_MAX else str(n)


def _label(job: dict[str, Any]) -> str:
    return f"Job {job['id']} ({job['task']})"


def _error_tail(job: dict[str, Any]) -> str:
    if not job["last_error"] and not job["error_class"]:
        return ""
    error = job["last_error"] or job["error_class"]
    if len(error) > ERROR_MAX:
        error = error[:ERROR_MAX] + "..."
    return f": {error}"


def _when(when: dt.datetime | None) -> str:
    return "an unknown time" if when is None else when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.UTC).isoformat()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def format_text(explanation: Explanation) -> Iterable[str]:
    """The lines pgqueue_explain prints: the summary, one line per reason, then the facts."""
    yield explanation.summary
    for reason in explanation.reasons:
        yield f"  [{reason.code}] {reason.text}"
    yield "facts:"
    for name, value in explanation.facts.items():
        yield f"  {name}: {value if isinstance(value, str) else json.dumps(value)}"
