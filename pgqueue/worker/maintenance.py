"""The maintenance role: one leader per cluster (elected through pgqueue_leader) stages due jobs, rescues lost ones, hands
free semaphore slots to blocked jobs, relays the outbox, settles dependents and batches a process left
unsettled, resumes queues whose circuit breaker cooled down, reaps orphaned locks and slots, prunes."""

from __future__ import annotations

import time
from typing import Any

from pgqueue import db, events, outbox, settle, sql
from pgqueue.conf import Settings
from pgqueue.ops import retention
from pgqueue.worker import rescue
from pgqueue.worker.leader import Lead
from pgqueue.worker.role import Role

LEADER_ROLE = "maintenance"  # its row in pgqueue_leader
PRUNE_EVERY = 60.0
REAP_EVERY = 10.0  # orphaned uniqueness keys and semaphore slots (a safety net: statements release them)
SWEEP_KEYS = 1_000  # semaphores looked at per hand-off sweep
BATCH = 5_000
PRUNE_ROUNDS = 100
STATS_KEEP_SECONDS = 8 * 24 * 3600.0  # per-minute outcome counts, for the admin's charts


class Maintenance(Role):
    kind = "maintenance"

    def __init__(self, process_id: str, supervisor_id: str, settings: Settings, db_params: dict[str, Any]) -> None:
        super().__init__(process_id, supervisor_id, settings,
                         db.Database(db_params, owner=process_id, role="maintenance"))
        self.db: db.Database = self.runner
        self.lead = Lead(self.db, LEADER_ROLE, process_id, settings.lead_seconds)
        self.next_prune = 0.0
        self.next_reap = 0.0
        self.policy = retention.from_settings(settings)
        self.batch_cursor = 0  # the settle sweep goes round the batches, SWEEP_KEYS at a time

    def round(self) -> float:
        """If leader (or now elected): stage, hand off, reap, rescue, relay, settle and (now and then) prune,
        each step only while the lead holds (renewed as it goes)."""
        if self.lead.hold():
            self.work()
        return self.settings.MAINTENANCE_SECONDS

    def close(self) -> None:
        try:
            self.lead.resign()  # another process takes over at its next round, not after the lead runs out
        except db.CONNECTION_ERRORS:
            pass
        super().close()

    def work(self) -> None:
        """One leader's round, step by step; each step runs only while the lead holds (renewed when due), so
        a leader whose lead ran out stops between steps."""
        for step in (self._stage, self._hand_off, self._processes_and_queues, self._rescue, self._relay,
                     self._settle, self._reap, self._prune):
            if not self.lead.hold():
                return
            step()

    def _stage(self) -> None:
        staged = self.db.run(sql.job_stage_due, limit=BATCH, channel=self.settings.NOTIFY_CHANNEL)[0].staged
        if staged:
            events.emit("job_staged", count=staged)

    def _settled(self) -> bool:
        """Whether the others have had WORKER_DEAD_AFTER to say they are alive since this process (re)gained
        the database: an outage silences everyone, and their processes, still running their jobs, would
        otherwise all look dead at once and their jobs run a second time beside them."""
        return time.monotonic() - self.connected_at >= self.settings.WORKER_DEAD_AFTER

    def _processes_and_queues(self) -> None:
        s = self.settings
        if self._settled():
            self.db.run(sql.workerprocess_reap, dead_after=s.WORKER_DEAD_AFTER)
        for row in self.db.run(sql.queuestate_pause_drained):
            events.emit("queue_paused", queue=row.name, reason="drained")
        for resumed in self.db.run(sql.queuestate_resume_due, channel=s.NOTIFY_CHANNEL):
            events.emit("queue_resumed", queue=resumed.name, reason="circuit breaker cool-down over")

    def _rescue(self) -> None:
        rescued = rescue.expired(self.db, self.settings, BATCH, by=self.id) if self._settled() else []
        if rescued:
            events.emit("job_rescued", count=len(rescued), worker=self.id, status=None)

    def _relay(self) -> None:
        while outbox.relay(self.db, self.settings) == outbox.RELAY_BATCH and not self.pipe.received:
            if not self.lead.hold():
                return  # more committed events wait

    def _settle(self) -> None:
        self.batch_cursor = settle.sweep(self.db, channel=self.settings.NOTIFY_CHANNEL, limit=SWEEP_KEYS,
                                         after=self.batch_cursor)

    def _prune(self) -> None:
        if time.monotonic() < self.next_prune:
            return
        s = self.settings
        self.next_prune = time.monotonic() + PRUNE_EVERY
        self.db.run(sql.stat_prune, keep=STATS_KEEP_SECONDS)
        self.db.run(sql.refusal_prune, keep=s.KEEP_FAILED_SECONDS)
        # up to PRUNE_ROUNDS x BATCH jobs a minute, while the lead holds
        retention.prune(self.db, self.policy, batch=BATCH, rounds=PRUNE_ROUNDS,
                        stop=lambda: bool(self.pipe.received) or not self.lead.hold())
        retention.prune_archive(self.db, s, batch=BATCH, rounds=PRUNE_ROUNDS)
        self.db.run(sql.schedule_tick_prune, keep=max(s.KEEP_SUCCEEDED_SECONDS, s.KEEP_FAILED_SECONDS), limit=BATCH)
        for _ in range(PRUNE_ROUNDS):  # relayed outbox events past their retention
            if self.db.run(sql.outbox_prune, keep=s.OUTBOX_KEEP_SECONDS, limit=BATCH)[0].count < BATCH:
                break

    def _hand_off(self, keys: list[str] | None = None) -> None:
        """Blocked jobs whose key has a free slot get it: the ones staged just now, a retry whose delay is
        over, and any a hand-off missed (a slot freed while the job that would take it was not committed)."""
        if keys is None:
            keys = [row.key for row in self.db.run(sql.semaphore_waiting_keys, limit=SWEEP_KEYS)]
        if keys:
            unblocked = self.db.run(sql.semaphore_hand_off, **db.hand_off_params(
                [], channel=self.settings.NOTIFY_CHANNEL, keys=keys))
            if unblocked:
                events.emit("job_unblocked", count=len(unblocked))

    def _reap(self) -> None:
        """Every REAP_EVERY: release uniqueness keys and semaphore slots that no job holds any more."""
        if time.monotonic() < self.next_reap:
            return
        self.next_reap = time.monotonic() + REAP_EVERY
        locks = self.db.run(sql.lock_reap, limit=BATCH)[0]
        slots = [row.key for row in self.db.run(sql.semaphore_slot_reap)]
        if locks.released or slots:
            events.emit("flow_reaped", locks=locks.released, slots=len(slots))
        if slots:
            self._hand_off(slots)
