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

from pgqueue import db, events, settle, sql
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
    """A thread that collects Transition/Progress items and flushes them every few ms or N items.

    It sleeps through its window instead of waking for every item added: it is woken early only when a
    batch is full, when a transition gives a semaphore slot up (then within SLOT_FLUSH), or to stop."""

    def __init__(self, database: db.Database, worker_id: str, settings: Settings) -> None:
        self.database = database
        self.worker_id = worker_id
        self.settings = settings
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.written = 0  # transitions applied
        self.lost = 0  # transitions refused because the lease was gone
        self._in_flight: dict[uuid.UUID, int] = {}  # lease token -> job id, queued and not yet written
        self._lock = threading.Lock()
        self._queued = 0  # items added and not yet taken by the thread (under _lock)
        self._urgent = False  # an item added since the thread last looked gives a slot up (under _lock)
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgqueue-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, item: Transition | Progress) -> None:
        self.add_many([item])

    def add_many(self, items: list[Any]) -> None:
        """Queue transitions and progress reports (one hand-over for all of them)."""
        if not items:
            return
        with self._lock:
            urgent = False
            for item in items:
                if isinstance(item, Transition):
                    self._in_flight[item.lease_token] = item.job_id
                    urgent = urgent or item.release_slot
            self._queued += len(items)
            self._urgent = self._urgent or urgent
            wake = urgent or self._queued >= self.settings.COMPLETION_BATCH
        self.items.put(items)
        if wake:
            self._wake.set()

    def in_flight(self) -> list[tuple[int, uuid.UUID]]:
        """(job id, lease token) of jobs whose completion is not written yet: the heartbeat keeps them leased."""
        with self._lock:
            return [(job_id, token) for token, job_id in self._in_flight.items()]

    def close(self, timeout: float) -> bool:
        """Flush what is queued and stop; False if the database did not take it in time."""
        self.items.put(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self, pending: list[Any], limit: int) -> bool:
        """Move queued items into `pending` (up to about `limit`); True once _STOP was taken."""
        while len(pending) < limit:
            try:
                batch = self.items.get_nowait()
            except queue.Empty:
                return False
            if batch is _STOP:
                return True
            pending.extend(batch)
            with self._lock:
                self._queued -= len(batch)
        return False

    def _loop(self) -> None:
        batch_size = self.settings.COMPLETION_BATCH
        window = self.settings.COMPLETION_FLUSH_MS / 1000
        pending: list[Any] = []
        stop = False
        while not stop:
            if not pending:
                first = self.items.get()  # sleep until there is something to write
                if first is _STOP:
                    break
                pending.extend(first)
                with self._lock:
                    self._queued -= len(first)
            opened = time.monotonic()
            deadline = opened + (SLOT_FLUSH if any(_frees_slot(i) for i in pending) else window)
            while True:
                stop = self._take(pending, batch_size)
                if stop or len(pending) >= batch_size:
                    break
                with self._lock:
                    if self._urgent:  # a blocked job may wait for a slot given up: write it soon
                        deadline = min(deadline, time.monotonic() + SLOT_FLUSH)
                        self._urgent = False
                    self._wake.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            self._take(pending, batch_size)
            pending = self._flush(pending)
        while True:  # stopping: write what is left, trying while the process is allowed to live
            self._take(pending, 1 << 30)
            if not pending:
                break
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
            sql.job_progress_many,
            ids=[p.job_id for p in reports],
            tokens=[p.lease_token for p in reports],
            values=[p.value for p in reports],
            messages=[p.message for p in reports],
        )
