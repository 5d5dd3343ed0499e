"""Writes decided transitions and progress in batches: one guarded statement per flush. A finished job is
never turned into a re-run here: a refused batch is split, a refused row is written with its details
stripped, and a job whose completion is still queued keeps its lease (see in_flight)."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

from pgqueue import db, events, settle
from pgqueue.conf import Settings
from pgqueue.lifecycle import stripped
from pgqueue.types import Progress, Transition

logger = logging.getLogger("pgqueue.worker")

_STOP = object()
# A transition that gives a semaphore slot up is written within this many seconds, not the usual window:
# the next job of its key waits for it (measured: W1 under a semaphore ran at ~0.5 of plain W1 with 25 ms).
SLOT_FLUSH = 0.002


def _frees_slot(item: Any) -> bool:
    return isinstance(item, Transition) and item.release_slot


class Completer:
    """A thread that collects Transition/Progress items and flushes them every few ms or N items."""

    def __init__(self, database: db.Database, worker_id: str, settings: Settings) -> None:
        self.database = database
        self.worker_id = worker_id
        self.settings = settings
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.written = 0  # transitions applied
        self.lost = 0  # transitions refused because the lease was gone
        self._in_flight: dict[uuid.UUID, int] = {}  # lease token -> job id, queued and not yet written
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgqueue-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, item: Transition | Progress) -> None:
        if isinstance(item, Transition):
            with self._lock:
                self._in_flight[item.lease_token] = item.job_id
        self.items.put(item)

    def in_flight(self) -> list[tuple[int, uuid.UUID]]:
        """(job id, lease token) of jobs whose completion is not written yet: the heartbeat keeps them leased."""
        with self._lock:
            return [(job_id, token) for token, job_id in self._in_flight.items()]

    def close(self, timeout: float) -> bool:
        """Flush what is queued and stop; False if the database did not take it in time."""
        self._stopping.set()
        self.items.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        batch_size = self.settings.COMPLETION_BATCH
        window = self.settings.COMPLETION_FLUSH_MS / 1000
        pending: list[Any] = []
        stop = False
        while not stop:
            if not pending:
                item = self.items.get()
                if item is _STOP:
                    break
                pending.append(item)
            deadline = time.monotonic() + (SLOT_FLUSH if _frees_slot(pending[0]) else window)
            while len(pending) < batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = self.items.get(timeout=remaining) if remaining > 0 else self.items.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                pending.append(item)
                if _frees_slot(item):  # a blocked job may wait for this slot: write it soon
                    deadline = min(deadline, time.monotonic() + SLOT_FLUSH)
            pending = self._flush(pending)
        while pending:  # stopping: keep trying while the process is allowed to live
            pending = self._flush(pending)
            if pending:
                time.sleep(self.database.backoff())

    def _flush(self, items: list[Any]) -> list[Any]:
        """Write a batch; return what must be tried again (everything, after a connection error)."""
        transitions = [i for i in items if isinstance(i, Transition)]
        latest: dict[int, Progress] = {}
        for item in items:
            if isinstance(item, Progress):
                latest[item.job_id] = item
        try:
            if latest:
                self._write_progress(list(latest.values()))
        except db.CONNECTION_ERRORS:
            time.sleep(self.database.backoff())
            return items
        except Exception:
            logger.exception("pgqueue could not record %d progress reports; they are dropped", len(latest))
        try:
            self._write(transitions)
        except db.CONNECTION_ERRORS:
            time.sleep(self.database.backoff())
            return transitions
        return []

    def _write(self, transitions: list[Transition]) -> None:
        """Apply transitions; a batch the database refuses is split until the refused row is found."""
        if not transitions:
            return
        try:
            self._apply(transitions)
        except db.CONNECTION_ERRORS:
            raise
        except Exception as exc:
            if len(transitions) > 1:
                half = len(transitions) // 2
                self._write(transitions[:half])
                self._write(transitions[half:])
                return
            self._write_stripped(transitions[0], exc)

    def _write_stripped(self, transition: Transition, exc: Exception) -> None:
        problem = f"{type(exc).__name__}: {exc}"[:500]
        logger.error("job %s: the database refused its outcome (%s); writing it without details",
                     transition.job_id, problem)
        try:
            self._apply([stripped(transition, problem)])
        except db.CONNECTION_ERRORS:
            raise
        except Exception:
            logger.exception("job %s: the database refused even its stripped outcome; its lease will expire and "
                             "it will be rescued", transition.job_id)
            self._forget([transition])

    def _apply(self, transitions: list[Transition]) -> None:
        rows = db.apply_transitions(self.database, transitions, worker=self.worker_id,
                                    channel=self.settings.NOTIFY_CHANNEL)
        self._forget(transitions)
        settle.moved(self.database, rows, channel=self.settings.NOTIFY_CHANNEL)  # committed: dependents, batches
        applied = {row.id: row.state for row in rows}
        self.written += len(applied)
        for t in transitions:
            if t.job_id not in applied:
                self.lost += 1
                events.emit("job_completion_refused", worker=self.worker_id, job_id=t.job_id,
                            outcome=t.outcome.value)
        events.attempts_ended(transitions, applied, self.worker_id)

    def _forget(self, transitions: list[Transition]) -> None:
        with self._lock:
            for t in transitions:
                self._in_flight.pop(t.lease_token, None)

    def _write_progress(self, reports: list[Progress]) -> None:
        self.database.run(
            "job_progress_many",
            ids=[p.job_id for p in reports],
            tokens=[p.lease_token for p in reports],
            values=[p.value for p in reports],
            messages=[p.message for p in reports],
        )
