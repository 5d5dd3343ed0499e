"""The supervisor: forks worker, maintenance and scheduler processes, reaps and replaces them, never runs
jobs."""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

import psycopg
from django.db import connections

from pgqueue import db, events, sql
from pgqueue.conf import Settings
from pgqueue.sql import Statement
from pgqueue.worker import rescue
from pgqueue.worker.beacon import Beacon
from pgqueue.worker.options import WorkerOptions
from pgqueue.worker.signals import SignalPipe, reset_to_default
from pgqueue.worker.wakeups import Relay

logger = logging.getLogger("pgqueue.supervisor")
R = TypeVar("R")

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD)
EXIT_STUCK = 3  # a worker's exit code when a job thread is stuck past its timeout (see worker.py)
# A child's id is its supervisor's, this letter and its slot: w0, m0 (maintenance), s0 (scheduler), x0 (metrics)
CHILD_LETTERS = {"worker": "w", "maintenance": "m", "scheduler": "s", "metrics": "x"}
EXIT_DATABASE = 4  # a child stopped on a database error of pgqueue's own statements: not its jobs' fault
KILL_GRACE = 10.0  # seconds after the shutdown timeout before children are killed


@dataclass
class Child:
    pid: int
    id: str
    kind: str
    slot: int
    started: float
    beacon: Beacon | None = None  # a worker's: its loop's last sign of life and earliest job deadline
    stalled: bool = False  # killed because its loop stalled past a deadline (a job holding the interpreter)
    replaced: bool = False  # its replacement started before it exited (it asked: a job is stuck in it)


class Supervisor:
    def __init__(self, options: WorkerOptions, settings: Settings, db_params: dict[str, Any], *,
                 listen_params: dict[str, Any] | None = None, metrics_server: WSGIServer | None = None,
                 open_metrics: bool = False) -> None:
        self.options = options
        self.metrics_server = metrics_server  # bound by launch; served by the metrics process
        self.open_metrics = open_metrics
        self.settings = settings
        self.db_params = db_params
        host = socket.gethostname().split(".")[0][:20]
        self.id = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.db = db.Database(db_params, owner=self.id, role="supervisor")
        self.listen_params = listen_params  # None: nobody listens (a transaction pooler, no LISTEN_DATABASE)
        # --share-connections: one LISTEN for all its workers, on its own connection (or on LISTEN_DATABASE
        # behind a transaction pooler); else each worker listens on a connection of its own
        listen_db = None if listen_params is None or not options.share_connections else \
            self.db if listen_params == db_params else db.Database(listen_params, owner=self.id, role="listener")
        self.relay = Relay(listen_db, settings.NOTIFY_CHANNEL)
        self.children: dict[int, Child] = {}
        self.pending: list[tuple[float, str, int]] = []  # (when, kind, slot) to (re)start
        self.restarts: deque[float] = deque()
        self.stopping = False
        self.stop_deadline = 0.0
        self.next_heartbeat = 0.0
        self.pipe: SignalPipe | None = None

    def run(self) -> int:
        self.pipe = SignalPipe(HANDLED)
        self._db_call(sql.workerprocess_register, id=self.id, kind="supervisor", supervisor="",
                      hostname=socket.gethostname(), pid=os.getpid(), queues=",".join(self.options.queues),
                      concurrency=self.options.concurrency, connections=self._connections())
        events.emit("worker_started", worker=self.id, kind="supervisor", queues=self.options.queues,
                    concurrency=self.options.concurrency, processes=self.options.processes)
        for slot in range(self.options.processes):
            self._spawn("worker", slot)
        if self.options.maintenance:
            self._spawn("maintenance", 0)
        if self.options.scheduler:
            self._spawn("scheduler", 0)
        if self.metrics_server is not None:
            self._spawn("metrics", 0)
        while True:
            self._handle_signals()
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if not self.children:
                    break
                if now >= self.stop_deadline:
                    self._signal_children(signal.SIGKILL)
            else:
                self._start_due(now)
            self._watch_workers(now)
            if now >= self.next_heartbeat:
                self.next_heartbeat = now + self.settings.HEARTBEAT_SECONDS
                # for itself and its children: a job that starves its process's own heartbeat does not
                # make the process look dead while it runs (the job would run twice at once)
                self._db_call(sql.supervisor_heartbeat, id=self.id, children=[c.id for c in self.children.values()])
            if not self.stopping:
                self.relay.ensure()
                self.relay.owed()
            watched = [self.pipe.read_fd] if self.relay.fd < 0 else [self.pipe.read_fd, self.relay.fd]
            ready, _, _ = select.select(watched, [], [], self._timeout())
            if self.relay.fd in ready:
                self.relay.read()
        self._db_call(sql.workerprocess_set_state, ids=[self.id], state="stopped")
        self.relay.close()
        self.db.close()
        events.emit("worker_stopped", worker=self.id, kind="supervisor", reason="stopped")
        return 0

    def _connections(self) -> int:
        """Its own connection, and one for the shared LISTEN when that goes to LISTEN_DATABASE."""
        return 1 if self.relay.database in (None, self.db) else 2

    def _timeout(self) -> float:
        timeout = 1.0
        if self.pending and not self.stopping:
            timeout = min(timeout, max(0.0, min(p[0] for p in self.pending) - time.monotonic()))
        return timeout

    # -- signals --------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        assert self.pipe is not None
        for sig in self.pipe.drain():
            if sig == signal.SIGCHLD:
                continue
            if sig == signal.SIGQUIT or (sig == signal.SIGINT and self.stopping):
                logger.warning("supervisor %s: exit now", self.id)
                self._begin_stop(immediate=True)
            else:
                logger.info("supervisor %s: %s, draining (up to %s s)", self.id, signal.Signals(sig).name,
                            self.options.shutdown_timeout)
                self._begin_stop(immediate=False)

    def _begin_stop(self, *, immediate: bool) -> None:
        if not self.stopping:
            self.stop_deadline = time.monotonic() + self.options.shutdown_timeout + KILL_GRACE
        self.stopping = True
        self.pending.clear()
        self._signal_children(signal.SIGQUIT if immediate else signal.SIGTERM)
        if immediate:
            self.stop_deadline = min(self.stop_deadline, time.monotonic() + 3.0)

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # -- children -------------------------------------------------------------------------------

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            self.relay.remove(pid)
            if child is not None:
                self._child_exited(child, status)

    def _watch_workers(self, now: float) -> None:
        """A worker with a job stuck past its timeout gets its replacement at once. A worker whose loop has not
        run since a job's deadline (or its drain deadline) passed is held by a job that keeps the
        interpreter: only ending the process ends that job."""
        for child in list(self.children.values()):
            if child.beacon is not None and not child.replaced and child.beacon.wants_replacement():
                child.replaced = True
                logger.info("worker %s (pid %d) has a job stuck past its timeout: starting its replacement now",
                            child.id, child.pid)
                if not self.stopping:
                    self._spawn(child.kind, child.slot)
            if child.beacon is not None and not child.stalled and child.beacon.stalled(now):
                child.stalled = True
                logger.error("worker %s (pid %d) has not run its loop since a deadline passed: a job holds its "
                             "interpreter; killing the process", child.id, child.pid)
                events.emit("child_stalled", worker=child.id, pid=child.pid)
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _child_exited(self, child: Child, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        # recycled, replaced because a job is stuck past its timeout, or killed for that by us
        planned = code in (0, EXIT_STUCK) or child.stalled
        events.emit("child_exited", worker=child.id, kind=child.kind, pid=child.pid, status=code)
        if child.beacon is not None:
            child.beacon.close()
        if child.kind == "worker":
            # A job still held after an exit nobody asked for was there when its process crashed.
            self._rescue(child, code, crash=not planned and not self.stopping and code != EXIT_DATABASE)
        self._db_call(sql.workerprocess_set_state, ids=[child.id], state="stopped" if code == 0 else "dead")
        if self.stopping or child.replaced:
            return
        delay = 0.0 if planned else self._restart_delay()
        self.pending.append((time.monotonic() + delay, child.kind, child.slot))

    def _rescue(self, child: Child, code: int, *, crash: bool) -> None:
        """Whatever the child still held goes back now, not after its lease expires."""
        held = self._retrying(sql.job_get_held_by_worker,
                              lambda: rescue.held_by_worker(self.db, self.settings, child.id, code, crash=crash,
                                                            stalled=child.stalled))
        if held:
            events.emit("job_rescued", count=len(held), worker=child.id, status=code)

    def _restart_delay(self) -> float:
        """Back off when children keep dying: RESTART_LIMIT restarts per RESTART_WINDOW, then doubling."""
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - self.settings.RESTART_WINDOW:
            self.restarts.popleft()
        excess = len(self.restarts) - self.settings.RESTART_LIMIT
        if excess <= 0:
            return 0.5
        delay = min(60.0, 2.0 ** excess)
        logger.error("children keep dying (%d restarts in %.0f s): waiting %.0f s before the next",
                     len(self.restarts), self.settings.RESTART_WINDOW, delay)
        return delay

    def _start_due(self, now: float) -> None:
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, kind, slot in due:
            self._spawn(kind, slot)

    def _spawn(self, kind: str, slot: int) -> None:
        child_id = f"{self.id}-{CHILD_LETTERS[kind]}{slot}-{uuid.uuid4().hex[:4]}"
        beacon = Beacon() if kind == "worker" else None
        wake_read, wake_write = self.relay.pipe() if kind == "worker" and self.relay.active else (None, None)
        run = self._role(kind, child_id, beacon, wake_read)
        # Nothing connected may cross the fork: a child closing an inherited socket ends the parent's session.
        # (The relay listens again at the next loop, and tells every worker it may have missed a NOTIFY.)
        self.db.close()
        self.relay.close()
        connections.close_all()
        sys.stdout.flush()
        sys.stderr.flush()
        # Everything imported and set up so far (Django, the job modules) is shared with the child until one
        # of them writes to it: frozen, the child's garbage collector never walks (and so copies) it.
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            if self.metrics_server is not None and kind != "metrics":
                self.metrics_server.socket.close()  # only the metrics process listens
            self.relay.close_in_child()
            if wake_write is not None:
                os.close(wake_write)
            self._run_child(run)
        if wake_read is not None and wake_write is not None:
            os.close(wake_read)
            self.relay.add(pid, wake_write)
        self.children[pid] = Child(pid=pid, id=child_id, kind=kind, slot=slot, started=time.monotonic(), beacon=beacon)

    def _role(self, kind: str, child_id: str, beacon: Beacon | None, wake_fd: int | None) -> Callable[[], int]:
        from pgqueue.worker.maintenance import Maintenance
        from pgqueue.worker.scheduler import Scheduler
        from pgqueue.worker.worker import Worker

        if kind == "maintenance":
            return lambda: Maintenance(child_id, self.id, self.settings, self.db_params).run()
        if kind == "scheduler":
            return lambda: Scheduler(child_id, self.id, self.settings).run()
        if kind == "metrics":
            from pgqueue.worker.exporter import Exporter

            server = self.metrics_server
            assert server is not None
            return lambda: Exporter(child_id, self.id, self.settings, self.db_params, server,
                                    open_access=self.open_metrics).run()
        return lambda: Worker(self.options, child_id, self.id, self.settings, self.db_params,
                              listen_params=self.listen_params, wake_fd=wake_fd, beacon=beacon).run()

    def _run_child(self, run: Callable[[], int]) -> None:
        """In the forked child: drop the parent's pipe and handlers, run the role, never return."""
        code = 1
        try:
            if self.pipe is not None:
                self.pipe.close()
            reset_to_default(HANDLED)
            for conn in connections.all(initialized_only=True):
                conn.connection = None  # closed by the parent before the fork; never reuse its socket
            code = run()
        except psycopg.Error:
            logger.exception("pgqueue child process stopped on a database error (its jobs are not blamed)")
            code = EXIT_DATABASE
        except BaseException:
            logger.exception("pgqueue child process crashed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    # -- database -------------------------------------------------------------------------------

    def _db_call(self, statement: Statement[R], **params: Any) -> list[R]:
        return self._retrying(statement, lambda: self.db.run(statement, **params))

    def _retrying(self, statement: Statement[Any], call: Callable[[], list[R]]) -> list[R]:
        """Best effort, three tries: the supervisor keeps supervising while the database is away."""
        for attempt in range(3):
            try:
                rows = call()
                self.relay.read()  # NOTIFYs that came in while it ran wait in the driver, not on the socket
                return rows
            except psycopg.Error:  # a lost connection, or a statement a pooler refused: try again
                if attempt < 2:
                    time.sleep(self.db.backoff())
        events.emit("db_unavailable", worker=self.id, statement=statement.name)
        return []
