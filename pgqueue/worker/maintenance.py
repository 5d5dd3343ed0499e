"""The maintenance role: one leader per cluster (advisory lock) stages due jobs, rescues lost ones, prunes."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from typing import Any

from pgqueue import events
from pgqueue.conf import Settings
from pgqueue.worker.database import CONNECTION_ERRORS, Database
from pgqueue.worker.signals import SignalPipe

logger = logging.getLogger("pgqueue.maintenance")

LEADER_LOCK_KEY = 0x70677175  # "pgqu": the advisory lock that elects the maintenance leader
PRUNE_EVERY = 60.0
BATCH = 5_000
PRUNE_ROUNDS = 100
STATS_KEEP_SECONDS = 8 * 24 * 3600.0  # per-minute outcome counts, for the admin's charts


class Maintenance:
    def __init__(self, process_id: str, supervisor_id: str, settings: Settings, db_params: dict[str, Any]) -> None:
        self.id = process_id
        self.supervisor_id = supervisor_id
        self.settings = settings
        self.db = Database(db_params, owner=process_id, role="maintenance")
        self.pipe = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        self.leader = False
        self.next_prune = 0.0
        self.registered = False

    def run(self) -> int:
        logger.info("maintenance %s started", self.id)
        while not self.pipe.drain():
            try:
                self.tick()
            except CONNECTION_ERRORS:
                self.leader = False  # the lock went with the connection
                self.registered = False
                self._sleep(self.db.backoff())
                continue
            self._sleep(self.settings.MAINTENANCE_SECONDS)
        try:
            self.db.run("workerprocess_set_state", ids=[self.id], state="stopped")
        except CONNECTION_ERRORS:
            pass
        self.db.close()
        return 0

    def tick(self) -> None:
        """One round: heartbeat; if leader, stage, rescue, reap and (now and then) prune."""
        if not self.registered:
            self.db.run("workerprocess_register", id=self.id, kind="maintenance", supervisor=self.supervisor_id,
                        hostname=socket.gethostname(), pid=os.getpid(), queues="", concurrency=0)
            self.registered = True
        else:
            self.db.run("workerprocess_heartbeat", id=self.id)
        if not self.leader:
            self.leader = bool(self.db.run("maintenance_try_lead", key=LEADER_LOCK_KEY)[0][0])
            if self.leader:
                logger.info("maintenance %s is the leader", self.id)
            else:
                return
        s = self.settings
        staged = self.db.run("job_stage_due", limit=BATCH, channel=s.NOTIFY_CHANNEL)[0][0]
        if staged:
            events.emit("job_staged", count=staged)
        self.db.run("workerprocess_reap", dead_after=s.WORKER_DEAD_AFTER)
        for (name,) in self.db.run("queuestate_pause_drained"):
            logger.info("queue %s is drained and now paused", name)
        rescued = self.db.run("job_rescue", workers=[], dead_after=s.WORKER_DEAD_AFTER, channel=s.NOTIFY_CHANNEL)
        if rescued:
            logger.warning("rescued %d jobs from dead workers or expired leases", len(rescued))
            events.emit("job_rescued", count=len(rescued))
        if time.monotonic() >= self.next_prune:
            self.next_prune = time.monotonic() + PRUNE_EVERY
            self.db.run("stat_prune", keep=STATS_KEEP_SECONDS)
            for _ in range(PRUNE_ROUNDS):  # up to PRUNE_ROUNDS x BATCH jobs a minute
                deleted = self.db.run("job_prune", keep_succeeded=s.KEEP_SUCCEEDED_SECONDS,
                                      keep_failed=s.KEEP_FAILED_SECONDS, limit=BATCH)[0][0]
                if deleted < BATCH or self.pipe.received:
                    break

    def _sleep(self, seconds: float) -> None:
        select.select([self.pipe.read_fd], [], [], seconds)
