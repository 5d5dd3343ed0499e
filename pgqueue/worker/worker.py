"""A worker process: lease as many jobs as it has free slots, run them, heartbeat, drain on shutdown."""

from __future__ import annotations

import logging
import os
import resource
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue import events
from pgqueue.conf import Settings
from pgqueue.context import JobContext
from pgqueue.types import Finish, LeasedJob, Outcome
from pgqueue.worker.completer import Completer
from pgqueue.worker.database import CONNECTION_ERRORS, Database
from pgqueue.worker.executor import Executor, failed
from pgqueue.worker.signals import SignalPipe

logger = logging.getLogger("pgqueue.worker")

EXIT_OK = 0  # stopped or recycled on purpose
EXIT_STUCK = 3  # a job thread is stuck past its timeout: replace this process


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    worker_id: str
    supervisor_id: str
    queues: tuple[str, ...]
    concurrency: int
    shutdown_timeout: float
    max_jobs: int | None = None
    max_memory_mb: float | None = None
    max_lifetime: float | None = None


@dataclass(eq=False)
class Running:
    job: LeasedJob
    ctx: JobContext
    deadline: float | None  # monotonic
    lost: bool = False  # the heartbeat found the lease gone


class Worker:
    """One process; the main thread owns the state machine, job threads only report back."""

    def __init__(self, config: WorkerConfig, settings: Settings, db_params: dict[str, Any]) -> None:
        self.config = config
        self.settings = settings
        self.id = config.worker_id
        self.lease_db = Database(db_params, owner=self.id, role="worker")
        self.listen_db = Database(db_params, owner=self.id, role="listener")
        self.completer = Completer(Database(db_params, owner=self.id, role="completer"), self.id, settings)
        self.executor = Executor(config.concurrency, settings)
        self.pipe = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        self.lock = threading.Lock()
        self.running: dict[int, Running] = {}
        self.stuck = 0  # threads still busy with a job we gave up on (timeout)
        self.finished = 0
        self.leased = 0
        self.started = time.monotonic()
        self.stopping = False
        self.signalled = False  # a TERM/INT arrived: a further INT means exit now
        self.stop_reason = ""
        self.drain_deadline = 0.0
        self.more_ready = True  # the last lease filled every slot: lease again as soon as one frees
        self.next_poll = 0.0
        self.next_heartbeat = 0.0
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.pipe.read_fd, selectors.EVENT_READ, "pipe")
        self.listening = False
        self.listen_fd = -1
        self.sleeping = False
        self.exit_requested = False  # QUIT, or INT after TERM/INT: leave without draining

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        self.completer.start()
        self._register()
        events.emit("worker_started", worker=self.id, kind="worker")
        logger.info("worker %s started: queues=%s concurrency=%d", self.id, ",".join(self.config.queues),
                    self.config.concurrency)
        code = EXIT_OK
        while True:
            if self.exit_requested or self._handle_signals():
                return self._exit_now()
            self._check_timeouts()
            now = time.monotonic()
            if now >= self.next_heartbeat:
                self._heartbeat()
                self._check_recycle()
            elif self.config.max_jobs and self.leased >= self.config.max_jobs and not self.stopping:
                self._begin_stop(f"recycling after {self.leased} jobs")
            if self.stopping:
                if not self.running or now >= self.drain_deadline:
                    break
            elif self._free_slots() > 0 and (self.more_ready or now >= self.next_poll):
                self._lease()
                continue
            self._wait()
        if self.stuck:
            code = EXIT_STUCK
        self._shutdown()
        return code

    def _free_slots(self) -> int:
        free = self.config.concurrency - len(self.running) - self.stuck
        if self.config.max_jobs:
            free = min(free, self.config.max_jobs - self.leased)  # never lease past the recycle point
        return free

    def _wait(self) -> None:
        self._listen()
        now = time.monotonic()
        wake_at = min(self.next_heartbeat, self.next_poll if not self.stopping else self.drain_deadline)
        # list() copies in one step; job threads remove entries concurrently
        deadlines = [r.deadline for r in list(self.running.values()) if r.deadline is not None]
        if deadlines:
            wake_at = min(wake_at, min(deadlines))
        self.sleeping = True  # from here on, a finishing job writes to the pipe
        try:
            # ...so re-check what a job may have changed just before: never sleep on work to do
            nothing_to_do = (not self.running) if self.stopping else (self._free_slots() <= 0 or not self.more_ready)
            ready = self.selector.select(timeout=max(0.0, wake_at - now) if nothing_to_do else 0)
        finally:
            self.sleeping = False
        for key, _mask in ready:
            if key.data == "listen":
                self._read_notifies()
            # the pipe is drained in _handle_signals

    # -- leasing ----------------------------------------------------------------------------------

    def _lease(self) -> None:
        free = self._free_slots()
        self.next_poll = time.monotonic() + self.settings.POLL_SECONDS
        try:
            rows = self.lease_db.run(
                "job_lease", queues=list(self.config.queues), limit=free, worker=self.id,
                lease_seconds=self.settings.LEASE_SECONDS,
            )
        except CONNECTION_ERRORS:
            self.more_ready = False
            self.next_poll = time.monotonic() + self.lease_db.backoff()
            return
        self.more_ready = len(rows) == free
        self.leased += len(rows)
        if rows:
            events.emit("job_leased", worker=self.id, count=len(rows))
        for row in rows:
            self._start(LeasedJob(
                id=row[0], queue=row[1], task=row[2], args=row[3], kwargs=row[4], attempt=row[5],
                max_attempts=row[6], timeout=row[7], lease_token=row[8], started_at=row[9],
            ))

    def _start(self, job: LeasedJob) -> None:
        ctx = JobContext(job_id=job.id, attempt=job.attempt, max_attempts=job.max_attempts, queue=job.queue,
                         task=job.task, lease_token=job.lease_token, _report=self.completer.add)
        # sync jobs are timed here; async jobs time out inside their event loop
        deadline = time.monotonic() + job.timeout if job.timeout and not self.executor.runs_async(job.task) else None
        entry = Running(job=job, ctx=ctx, deadline=deadline)
        with self.lock:
            self.running[job.id] = entry
        self.executor.submit(job, ctx, lambda finish: self._done(job.id, finish))

    def _done(self, job_id: int, finish: Finish) -> None:
        """Called from a job thread: hand the outcome to the completer and free the slot."""
        with self.lock:
            entry = self.running.pop(job_id, None)
            if entry is None or entry.job.lease_token != finish.lease_token:
                if entry is not None:  # a newer lease of the same job: not ours to end
                    self.running[job_id] = entry
                # we already gave up on it (timeout): its slot was held as stuck until now
                self.stuck = max(0, self.stuck - 1)
                self.pipe.wake()
                return
            self.finished += 1
            # queued before the loop can see an empty `running` and close the completer
            self.completer.add(finish)
        if self.sleeping:  # the loop is in select(): wake it to lease for the freed slot
            self.pipe.wake()

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        expired = [r for r in list(self.running.values()) if r.deadline is not None and r.deadline <= now]
        for entry in expired:
            with self.lock:
                if self.running.pop(entry.job.id, None) is None:
                    continue
                self.stuck += 1
                self.finished += 1
            logger.error("job %s (%s) ran past its %s s timeout; its thread is abandoned and this worker "
                         "will be replaced", entry.job.id, entry.job.task, entry.job.timeout)
            error = TimeoutError(f"timed out after {entry.job.timeout} s")
            self.completer.add(failed(
                entry.job, self.executor.job_function(entry.job.task), error, self.settings,
                outcome=Outcome.TIMEOUT, cancel_requested=entry.ctx.cancel_requested,
            ))
        if self.stuck and not self.stopping:
            self._begin_stop("a job thread is stuck past its timeout")

    # -- LISTEN/NOTIFY ----------------------------------------------------------------------------

    def _listen(self) -> None:
        if self.listening or self.stopping:
            return
        try:
            conn = self.listen_db.connect()
            channel = self.settings.NOTIFY_CHANNEL.replace('"', '""')
            conn.execute(f'LISTEN "{channel}"')
            self.listen_fd = conn.fileno()
            self.selector.register(self.listen_fd, selectors.EVENT_READ, "listen")
            self.listening = True
            self.more_ready = True  # notifications may have been missed while not listening
        except CONNECTION_ERRORS as exc:
            self.listen_db.broken(exc)
            self.next_poll = min(self.next_poll, time.monotonic() + self.listen_db.backoff())

    def _read_notifies(self) -> None:
        conn = self.listen_db.conn
        if conn is None:
            self._stop_listening()
            return
        try:
            for note in conn.notifies(timeout=0):
                if note.payload in self.config.queues:
                    self.more_ready = True
        except psycopg.Error as exc:
            self._stop_listening()
            self.listen_db.broken(exc)
            self.more_ready = True

    def _stop_listening(self) -> None:
        """Forget the LISTEN socket by the fd we registered (a lost connection can no longer tell it)."""
        if self.listening:
            try:
                self.selector.unregister(self.listen_fd)
            except (KeyError, ValueError, OSError):
                pass
            self.listening = False

    # -- heartbeat, cancel requests, recycling ---------------------------------------------------

    def _heartbeat(self) -> None:
        self.next_heartbeat = time.monotonic() + self.settings.HEARTBEAT_SECONDS
        with self.lock:
            held = {r.job.lease_token: r for r in self.running.values()}
        try:
            rows = self.lease_db.run(
                "job_heartbeat", worker=self.id, tokens=list(held),
                lease_seconds=self.settings.LEASE_SECONDS,
            )
        except CONNECTION_ERRORS:
            self.next_heartbeat = time.monotonic() + self.lease_db.backoff()
            return
        by_id = {r.job.id: r for r in held.values()}
        for job_id, cancel_requested in rows:
            entry = by_id.get(job_id)
            if cancel_requested and entry is not None and not entry.ctx.cancel_requested:
                logger.info("job %s: cancel requested", job_id)
                self.executor.cancel(entry.ctx)
        extended = {row[0] for row in rows}
        for entry in held.values():
            if entry.job.id not in extended and not entry.lost and self.running.get(entry.job.id) is entry:
                # Rescued elsewhere (this worker looked dead): its outcome will be refused; ask it to stop.
                entry.lost = True
                logger.warning("job %s: lease lost (rescued while this worker was unreachable); asking it to "
                               "stop, its outcome will not be recorded", entry.job.id)
                self.executor.cancel(entry.ctx)

    def _check_recycle(self) -> None:
        if self.stopping:
            return
        cfg = self.config
        if cfg.max_jobs and self.leased >= cfg.max_jobs:
            self._begin_stop(f"recycling after {self.leased} jobs")
        elif cfg.max_lifetime and time.monotonic() - self.started >= cfg.max_lifetime:
            self._begin_stop(f"recycling after {cfg.max_lifetime} s")
        elif cfg.max_memory_mb and rss_mib() >= cfg.max_memory_mb:
            self._begin_stop(f"recycling at {rss_mib():.0f} MiB RSS")

    # -- stopping -----------------------------------------------------------------------------------

    def _handle_signals(self) -> bool:
        """Act on received signals; True means exit now."""
        for sig in self.pipe.drain():
            if sig == signal.SIGQUIT or (sig == signal.SIGINT and self.signalled):
                return True
            self.signalled = True
            self._begin_stop(f"received {signal.Signals(sig).name}")
        return False

    def _begin_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.drain_deadline = time.monotonic() + self.config.shutdown_timeout
        logger.info("worker %s stopping (%s): draining %d running jobs for up to %s s", self.id, reason,
                    len(self.running), self.config.shutdown_timeout)
        self._set_state("stopping")

    def _shutdown(self) -> None:
        """Release what is still running, flush completions, mark this process stopped."""
        self._release_running()
        # The supervisor kills children KILL_GRACE (10 s) after the shutdown timeout: stay inside it.
        left = self.drain_deadline + 8.0 - time.monotonic() if self.signalled else 30.0
        if not self.completer.close(timeout=max(1.0, left)):
            logger.error("worker %s could not record all completions before exiting", self.id)
        self._set_state("stopped")
        events.emit("worker_stopped", worker=self.id, kind="worker", reason=self.stop_reason or "stopped")
        self.executor.shutdown()
        for database in (self.lease_db, self.listen_db, self.completer.database):
            database.close()

    def _exit_now(self) -> int:
        logger.warning("worker %s exiting now; %d running jobs are released", self.id, len(self.running))
        self.stop_reason = "exit now"
        self.completer.close(timeout=2.0)
        self._release_running()
        self._set_state("stopped")
        return EXIT_OK

    def _release_running(self) -> None:
        with self.lock:
            left = list(self.running.values())
            self.running.clear()
        if not left:
            return
        logger.warning("worker %s releasing %d unfinished jobs", self.id, len(left))
        try:
            self.lease_db.run(
                "job_release_many", ids=[r.job.id for r in left], tokens=[r.job.lease_token for r in left],
                worker=self.id, channel=self.settings.NOTIFY_CHANNEL,
            )
        except CONNECTION_ERRORS:
            logger.error("worker %s could not release its jobs; maintenance will rescue them", self.id)

    def _register(self) -> None:
        params = dict(id=self.id, kind="worker", supervisor=self.config.supervisor_id,
                      hostname=socket.gethostname(), pid=os.getpid(), queues=",".join(self.config.queues),
                      concurrency=self.config.concurrency)
        while True:
            try:
                self.lease_db.run("workerprocess_register", **params)
                return
            except CONNECTION_ERRORS:
                if self._handle_signals():
                    self.exit_requested = True
                    return
                if self.stopping:
                    return
                time.sleep(self.lease_db.backoff())

    def _set_state(self, state: str) -> None:
        try:
            self.lease_db.run("workerprocess_set_state", ids=[self.id], state=state)
        except CONNECTION_ERRORS:
            pass


def rss_mib() -> float:
    """Current resident set size of this process, in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
