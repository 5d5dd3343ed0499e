"""Writes attempt outcomes and progress in batches: one statement per flush, guarded by lease token."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from pgqueue import events
from pgqueue.conf import Settings
from pgqueue.types import Finish, Progress
from pgqueue.worker.database import CONNECTION_ERRORS, Database

logger = logging.getLogger("pgqueue.worker")

_STOP = object()


class Completer:
    """A thread that collects Finish/Progress items and flushes them every few ms or N items."""

    def __init__(self, database: Database, worker_id: str, settings: Settings) -> None:
        self.database = database
        self.worker_id = worker_id
        self.settings = settings
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.written = 0  # attempts whose completion was applied
        self.lost = 0  # completions refused because the lease was gone
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgqueue-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, item: Finish | Progress) -> None:
        self.items.put(item)

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
            deadline = time.monotonic() + window
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
            pending = self._flush(pending)
        while pending:  # stopping: keep trying while the process is allowed to live
            pending = self._flush(pending)
            if pending:
                time.sleep(self.database.backoff())

    def _flush(self, items: list[Any]) -> list[Any]:
        """Write a batch; return what must be retried (everything, after a connection error)."""
        finishes = [i for i in items if isinstance(i, Finish)]
        latest: dict[int, Progress] = {}
        for item in items:
            if isinstance(item, Progress):
                latest[item.job_id] = item
        try:
            if latest:
                self._write_progress(list(latest.values()))
            if finishes:
                self._write_finishes(finishes)
        except CONNECTION_ERRORS:
            time.sleep(self.database.backoff())
            return items
        except Exception:
            if len(items) > 1:
                logger.exception("pgqueue could not record a batch of %d items; writing them one by one",
                                 len(items))
                return [left for item in items for left in self._flush([item])]
            logger.exception("pgqueue dropped an update the database refuses: %r; the job's lease will "
                             "expire and it will be rescued", items[0])
        return []

    def _write_finishes(self, finishes: list[Finish]) -> None:
        rows = self.database.run(
            "job_finish_many",
            ids=[f.job_id for f in finishes],
            tokens=[f.lease_token for f in finishes],
            states=[f.state.value for f in finishes],
            outcomes=[f.outcome.value for f in finishes],
            run_ats=[f.run_at for f in finishes],
            results=[f.result for f in finishes],
            error_classes=[f.error_class for f in finishes],
            messages=[f.error_message for f in finishes],
            tracebacks=[f.traceback for f in finishes],
            reasons=[f.reason_code for f in finishes],
            attempts=[f.attempt for f in finishes],
            started=[f.started_at for f in finishes],
            finished=[f.finished_at for f in finishes],
            worker=self.worker_id,
            channel=self.settings.NOTIFY_CHANNEL,
        )
        applied = {row[0] for row in rows}
        self.written += len(applied)
        listening = events.has_subscribers("job_finished")
        for f in finishes:
            if f.job_id not in applied:
                self.lost += 1
                logger.warning("job %s: lease lost before its %s was recorded; not applied", f.job_id,
                               f.outcome.value)
            if listening:
                events.emit(
                    "job_finished", worker=self.worker_id, job_id=f.job_id, outcome=f.outcome.value,
                    state=f.state.value, applied=f.job_id in applied,
                    duration=(f.finished_at - f.started_at).total_seconds(),
                )

    def _write_progress(self, reports: list[Progress]) -> None:
        self.database.run(
            "job_progress_many",
            ids=[p.job_id for p in reports],
            tokens=[p.lease_token for p in reports],
            values=[p.value for p in reports],
            messages=[p.message for p in reports],
        )
