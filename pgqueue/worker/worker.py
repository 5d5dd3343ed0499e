"""A worker process: lease as many jobs as it has free slots, run them, heartbeat, drain on shutdown.

The main loop owns all job state (what runs, what is stuck, the phase); job threads only post how an
attempt ended to its inbox, and the loop turns each ending into a transition (pgqueue.lifecycle)."""

from __future__ import annotations

import logging
import math
import os
import queue
import random
import resource
import selectors
import signal
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pgqueue import db, events, sql
from pgqueue.conf import Settings
from pgqueue.context import JobContext
from pgqueue.lifecycle import AttemptEnd, Ending, RetryPolicy, decide
from pgqueue.text import counted
from pgqueue.types import LeasedJob
from pgqueue.worker.beacon import Beacon
from pgqueue.worker.completer import Completer
from pgqueue.worker.executor import Executor, complete_in_transaction, now, retry_policy, timed_out
from pgqueue.worker.heartbeat import Heartbeat
from pgqueue.worker.options import WorkerOptions
from pgqueue.worker.role import STOP_SIGNALS, ProcessRow
from pgqueue.worker.signals import SignalPipe
from pgqueue.worker.wakeups import Listener

logger = logging.getLogger("pgqueue.worker")

EXIT_OK = 0  # stopped or recycled on purpose
EXIT_STUCK = 3  # a job is stuck past its timeout (a sync thread, or an async job blocking the event loop)
ASYNC_TIMEOUT_GRACE = 1.0  # seconds past an async job's timeout before the loop is deemed blocked
BEACON_EVERY = 0.25  # seconds between the loop's updates of its beacon (the supervisor allows STALL_GRACE)


class Phase(Enum):
    RUNNING = "running"  # leasing and running jobs
    DRAINING = "draining"  # leasing nothing more; running jobs finish until the drain deadline
    EXITING = "exiting"  # leave now, handing back what still runs


class Isolation(Enum):
    """Running a crash suspect (a job whose process crashed before) alone in this process."""

    NONE = "none"
    MAKING_ROOM = "making_room"  # a suspect waits: lease nothing until the running jobs are done
    ALONE = "alone"  # a suspect runs, and nothing else


@dataclass(eq=False)
class Running:
    job: LeasedJob
    ctx: JobContext
    policy: RetryPolicy
    deadline: float | None  # monotonic
    lost: bool = False  # the heartbeat found the lease gone
    is_async: bool = False  # runs on the event loop


class Worker:
    def __init__(self, options: WorkerOptions, worker_id: str, supervisor_id: str, settings: Settings,
                 db_params: dict[str, Any], *, listen_params: dict[str, Any] | None = None,
                 wake_fd: int | None = None, beacon: Beacon | None = None) -> None:
        self.options = options
        self.beacon = beacon or Beacon()  # read by the supervisor
        self.queue_array = db.text_array(options.queues)  # bound as one string, lease after lease
        # each lease names the queues in the next rotation: which queue goes first within a turn changes
        qs = options.queues
        self.rotations = [db.text_array(qs[i:] + qs[:i]) for i in range(len(qs))]
        self.settings = settings
        self.id = worker_id
        self.supervisor_id = supervisor_id
        self.lease_db = db.Database(db_params, owner=worker_id, role="worker")
        # --share-connections: the completer writes on the loop's connection, in turn with leases and heartbeats
        completions = self.lease_db if options.share_connections else \
            db.Database(db_params, owner=worker_id, role="completer")
        self.completer = Completer(completions, worker_id, settings)
        self.heartbeat = Heartbeat(self.lease_db, worker_id, settings.LEASE_SECONDS)
        self.selector = selectors.DefaultSelector()
        # NOTIFYs come down the supervisor's pipe (--share-connections), or to a LISTEN connection of our own;
        # with neither (a transaction pooler and no LISTEN_DATABASE) nobody listens and we poll
        listen_db = None if listen_params is None or wake_fd is not None else \
            db.Database(listen_params, owner=worker_id, role="listener")
        opened = {id(d) for d in (self.lease_db, completions, listen_db) if d is not None}
        self.row = ProcessRow(self.lease_db, worker_id, "worker", supervisor_id, queues=",".join(options.queues),
                              concurrency=options.concurrency, connections=len(opened))
        self.listener = Listener(self.selector, options.queues, pipe=wake_fd, database=listen_db,
                                 channel=settings.NOTIFY_CHANNEL)
        self.inbox: queue.SimpleQueue[tuple[LeasedJob, AttemptEnd | None]] = queue.SimpleQueue()
        self.executor = Executor(options.concurrency, settings, worker_id, self._report)
        self.pipe = SignalPipe(STOP_SIGNALS)
        self.selector.register(self.pipe.read_fd, selectors.EVENT_READ, "pipe")
        self.phase = Phase.RUNNING
        self.isolation = Isolation.NONE
        self.stop_signal: int | None = None  # the TERM/INT that began the drain: a further INT exits now
        self.stop_reason = ""
        self.running: dict[int, Running] = {}
        self.stuck = 0  # jobs given up on past their timeout whose thread (or event loop) is still busy
        self.loop_blocked = False  # an async job ran past its timeout: the event loop does not run
        self.leased = 0
        self.leases = 0  # lease statements run (picks the rotation of the queues)
        self.started = time.monotonic()
        self.parent = os.getppid()  # the supervisor: if it is gone, nobody would replace or rescue us
        self.drain_deadline = 0.0
        self.more_ready = True  # the last lease filled every slot, or a NOTIFY came: lease again soon
        self.suspects_possible = True  # crash suspects may wait in our queues: look when running nothing
        self.next_poll = 0.0
        self.next_heartbeat = 0.0
        self.next_beacon = 0.0
        self.shown_deadline = math.inf
        self.sleeping = False  # the loop is in select(): a job thread posting an ending wakes it
        self.policies: dict[str, RetryPolicy] = {}  # task -> its retry policy
        # one of our queues has a concurrency or rate limit, or jobs with a rate key (asked at every heartbeat,
        # and told by a NOTIFY when jobs with a rate key become ready)
        self.limited = False

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        self.completer.start()
        self._register()
        events.emit("worker_started", worker=self.id, kind="worker", queues=self.options.queues,
                    concurrency=self.options.concurrency)
        while self.phase is not Phase.EXITING:
            self._handle_signals()
            if self._exiting():  # a signal may have ended the run
                break
            self._collect()
            self._check_timeouts()
            clock = time.monotonic()
            if clock >= self.next_beacon or clock >= self.shown_deadline:
                self._show_beacon(clock)
            if clock >= self.next_heartbeat:
                self._heartbeat()
                self._check_recycle()
            elif self.options.max_jobs and self.leased >= self.options.max_jobs:
                self._begin_stop(f"recycling after {counted(self.leased, 'job')}")
            if self.phase is Phase.DRAINING:
                if not self.running or clock >= self.drain_deadline or self._only_blocked_left():
                    break
            elif self.phase is Phase.RUNNING and self._free_slots() > 0 and (self.more_ready or clock >= self.next_poll):
                self._lease()
                continue
            self._wait()
        if self.phase is Phase.EXITING:
            return self._exit_now()
        self._shutdown()
        return EXIT_STUCK if self.stuck else EXIT_OK

    def _show_beacon(self, clock: float) -> None:
        """Tell the supervisor the loop runs, and by when it must run again: a job's deadline, or the end of
        the drain. A loop that misses it is starved by a job holding the interpreter. Every BEACON_EVERY
        seconds at most (every loop pass cost W1 a tenth of its throughput): a deadline shown late is a
        later kill, and one shown after its job ended is replaced long before STALL_GRACE runs out."""
        self.next_beacon = clock + BEACON_EVERY
        deadline = self.drain_deadline if self.phase is Phase.DRAINING else math.inf
        for entry in self.running.values():
            if entry.deadline is not None and entry.deadline < deadline:
                deadline = entry.deadline
        self.shown_deadline = deadline
        self.beacon.show(clock, deadline)

    def _only_blocked_left(self) -> bool:
        """Every job still running is async, on an event loop a job blocks: waiting cannot finish them."""
        return self.loop_blocked and all(r.is_async for r in self.running.values())

    def _free_slots(self) -> int:
        busy = len(self.running) + self.stuck
        if self.isolation is Isolation.ALONE or (self.isolation is Isolation.MAKING_ROOM and busy):
            return 0
        free = self.options.concurrency - busy
        if self.options.max_jobs:
            free = min(free, self.options.max_jobs - self.leased)  # never lease past the recycle point
        return free

    def _wait(self) -> None:
        if self.phase is Phase.RUNNING and self.listener.ensure():
            self.more_ready = self.suspects_possible = True  # NOTIFYs may have been missed while not listening
        clock = time.monotonic()
        wake_at = min(self.next_heartbeat, self.drain_deadline if self.phase is Phase.DRAINING else self.next_poll)
        deadlines = [r.deadline for r in self.running.values() if r.deadline is not None]
        if deadlines:
            wake_at = min(wake_at, min(deadlines))
        # and at the deadline the beacon shows, even if its job has ended: a loop asleep past it looks stalled
        wake_at = min(wake_at, self.shown_deadline)
        self.sleeping = True  # from here on, a job thread posting an ending writes to the pipe
        try:
            # ...so re-check what may have arrived just before: never sleep on work to do
            idle = self.inbox.empty() and (
                not self.running if self.phase is Phase.DRAINING else self._free_slots() <= 0 or not self.more_ready
            )
            ready = self.selector.select(timeout=max(0.0, wake_at - clock) if idle else 0)
        finally:
            self.sleeping = False
        for key, _mask in ready:
            if key.data == "listen":
                wake = self.listener.read()
                if wake.suspects:  # a crash left suspects: make room to run one alone
                    self.suspects_possible = True
                    if self.isolation is Isolation.NONE and (self.running or self.stuck):
                        self.isolation = Isolation.MAKING_ROOM
                if wake.rated:
                    self.limited = True
                if wake.work or wake.suspects:
                    self.more_ready = True
            # the pipe is drained in _handle_signals

    def _report(self, job: LeasedJob, end: AttemptEnd | None) -> None:
        """From a job thread or the event loop: post how an attempt ended to the loop."""
        self.inbox.put((job, end))
        if self.sleeping:
            self.pipe.wake()

    def _collect(self) -> None:
        """Turn posted endings into transitions for the completer, and free their slots."""
        transitions = []
        while True:
            try:
                job, end = self.inbox.get_nowait()
            except queue.Empty:
                break
            entry = self.running.get(job.id)
            if entry is None or entry.job.lease_token != job.lease_token:
                self.stuck = max(0, self.stuck - 1)  # a job given up on past its timeout ended at last
                continue
            del self.running[job.id]
            if end is not None:  # None: it completed in its own transaction
                transitions.append(decide(job, end, entry.policy, rand=random.random()))
        self.completer.add_many(transitions)
        if self.isolation is Isolation.ALONE and not self.running:
            self.isolation = Isolation.NONE
            self.more_ready = True  # more suspects, or the jobs held back meanwhile

    # -- leasing ----------------------------------------------------------------------------------

    def _lease(self) -> None:
        free = self._free_slots()
        self.next_poll = time.monotonic() + self.settings.POLL_SECONDS
        queues = self.rotations[self.leases % len(self.rotations)]
        self.leases += 1
        try:
            if (self.suspects_possible or not self.listener.active) and not self.running and not self.stuck:
                suspect = self.lease_db.run(sql.job_lease_suspect, queues=queues, worker=self.id,
                                            lease_seconds=self.settings.LEASE_SECONDS)
                if suspect:  # it runs alone: nothing else is leased until it ends
                    self.isolation = Isolation.ALONE
                    self.leased += 1
                    events.emit("job_isolated", worker=self.id, job_id=suspect[0].id, crashes=suspect[0].crashes)
                    events.emit("job_leased", worker=self.id, count=1, jobs=suspect)
                    self._start(suspect[0])
                    return
                self.suspects_possible = False
                self.isolation = Isolation.NONE
            jobs: list[LeasedJob] = self.lease_db.run(
                sql.job_lease_limited if self.limited else sql.job_lease, queues=queues, limit=free, worker=self.id,
                lease_seconds=self.settings.LEASE_SECONDS,
            )
        except db.CONNECTION_ERRORS:
            self.more_ready = False
            self.next_poll = time.monotonic() + self.lease_db.backoff()
            return
        self.more_ready = len(jobs) == free
        self.leased += len(jobs)
        if jobs:
            events.emit("job_leased", worker=self.id, count=len(jobs), jobs=jobs)
        for job in jobs:
            self._start(job)

    def _start(self, job: LeasedJob) -> None:
        fn = self.executor.function(job.task)
        ctx = JobContext(job_id=job.id, attempt=job.attempt, max_attempts=job.max_attempts, queue=job.queue,
                         task=job.task, lease_token=job.lease_token, batch_id=job.batch_id,
                         callback_of=job.callback_of, worker=self.id, _job=job, _report=self.completer.add,
                         _complete=lambda result: complete_in_transaction(job, self.id, self.settings, result))
        deadline = None
        is_async = bool(getattr(fn, "is_async", False))
        if job.timeout:  # async jobs time out in their event loop; the loop here catches a blocked one
            grace = ASYNC_TIMEOUT_GRACE if is_async else 0.0
            deadline = time.monotonic() + job.timeout + grace
            if deadline < self.shown_deadline:  # at once: the job may hold the interpreter from its first line
                self.shown_deadline = deadline
                self.beacon.show(time.monotonic(), deadline)
        policy = self.policies.get(job.task)
        if policy is None:
            policy = retry_policy(fn, self.settings)
            if not isinstance(fn, BaseException):  # a module that failed to import may arrive later
                self.policies[job.task] = policy
        self.running[job.id] = Running(job=job, ctx=ctx, policy=policy, deadline=deadline, is_async=is_async)
        self.executor.submit(fn, job, ctx)

    def _check_timeouts(self) -> None:
        clock = time.monotonic()
        expired = [r for r in self.running.values() if r.deadline is not None and r.deadline <= clock]
        for entry in expired:
            del self.running[entry.job.id]
            self.stuck += 1
            self.loop_blocked = self.loop_blocked or entry.is_async
            events.emit("job_stuck", worker=self.id, job_id=entry.job.id, task=entry.job.task,
                        timeout=entry.job.timeout)
            self.completer.add(decide(entry.job, timed_out(entry.job.timeout, self.id), entry.policy,
                                      rand=random.random()))
        if self.stuck and self.phase is Phase.RUNNING:
            self.beacon.ask_replacement()  # its retry and new jobs need not wait for this process to drain
            self._begin_stop("a job is stuck past its timeout: this process will be replaced")

    # -- heartbeat, cancel requests, recycling ---------------------------------------------------

    def _heartbeat(self) -> None:
        self.next_heartbeat = time.monotonic() + self.settings.HEARTBEAT_SECONDS
        held = list(self.running.values())
        result = self.heartbeat.beat([(r.job.id, r.job.lease_token) for r in held] + self.completer.in_flight())
        if result is None:
            self.next_heartbeat = time.monotonic() + self.lease_db.backoff()
            return
        try:
            self.limited = self.lease_db.run(sql.queuestate_limited, queues=self.queue_array)[0].limited
        except db.CONNECTION_ERRORS:
            pass  # the next heartbeat asks again
        for entry in held:
            job_id = entry.job.id
            if job_id in result.cancel_requested and not entry.ctx.cancel_requested:
                events.emit("job_cancel_requested", worker=self.id, job_id=job_id)
                self.executor.cancel(entry.ctx)
            elif job_id not in result.extended and not entry.lost and not entry.ctx._completed:
                # Rescued elsewhere (this worker looked dead): its outcome will be refused; ask it to stop.
                # (A job that completed in its own transaction and runs on is not lost: it is done.)
                entry.lost = True
                events.emit("job_lease_lost", worker=self.id, job_id=job_id)
                self.executor.cancel(entry.ctx)

    def _check_recycle(self) -> None:
        if self.phase is not Phase.RUNNING:
            return
        opts = self.options
        if os.getppid() != self.parent:
            self._begin_stop("its supervisor is gone")
        elif opts.max_jobs and self.leased >= opts.max_jobs:
            self._begin_stop(f"recycling after {counted(self.leased, 'job')}")
        elif opts.max_lifetime and time.monotonic() - self.started >= opts.max_lifetime:
            self._begin_stop(f"recycling after {opts.max_lifetime} s")
        elif opts.max_memory_mb and rss_mib() >= opts.max_memory_mb:
            self._begin_stop(f"recycling at {rss_mib():.0f} MiB RSS")

    # -- stopping -----------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        for sig in self.pipe.drain():
            if sig == signal.SIGQUIT or (sig == signal.SIGINT and self.stop_signal is not None):
                self.phase = Phase.EXITING
                return
            if self.stop_signal is None:
                self.stop_signal = sig
            self._begin_stop(f"received {signal.Signals(sig).name}")

    def _begin_stop(self, reason: str) -> None:
        if self.phase is not Phase.RUNNING:
            return
        self.phase = Phase.DRAINING
        self.stop_reason = reason
        self.drain_deadline = time.monotonic() + self.options.shutdown_timeout
        self.listener.stop()
        events.emit("worker_stopping", worker=self.id, reason=reason, running=len(self.running),
                    timeout=self.options.shutdown_timeout)
        self._set_state("stopping")

    def _shutdown(self) -> None:
        """Hand back what is still running, flush completions, mark this process stopped. Async jobs on a
        blocked event loop are not handed back: they could go on if the loop woke up, beside their next
        copy. They stay held until this process has exited; its supervisor then takes them back."""
        self._collect()
        abandoned = [r for r in self.running.values() if r.is_async] if self.loop_blocked else []
        for entry in abandoned:
            del self.running[entry.job.id]
        self._release_running()
        # The supervisor kills children KILL_GRACE (10 s) after the shutdown timeout: stay inside it.
        left = self.drain_deadline + 8.0 - time.monotonic() if self.stop_signal is not None else 30.0
        clock = time.monotonic()
        self.beacon.show(clock, clock + max(1.0, left) + 2.0)  # the loop is over: writing what remains
        if not self.completer.close(timeout=max(1.0, left)):
            logger.error("worker %s could not record all completions before exiting", self.id)
        if abandoned:
            events.emit("job_abandoned", worker=self.id, count=len(abandoned))
        else:  # (with jobs left held, the row stays 'stopping': maintenance must not take them before we exit)
            self._set_state("stopped")
        events.emit("worker_stopped", worker=self.id, kind="worker", reason=self.stop_reason or "stopped")
        self.executor.shutdown()
        self.listener.close()
        for database in {self.lease_db, self.completer.database}:
            database.close()

    def _exit_now(self) -> int:
        self.stop_reason = "exit now"
        clock = time.monotonic()
        self.beacon.show(clock, clock + 5.0)
        events.emit("worker_exiting", worker=self.id, running=len(self.running))
        self._collect()
        self._release_running()
        self.completer.close(timeout=2.0)
        self._set_state("stopped")
        return EXIT_OK

    def _release_running(self) -> None:
        """Hand unfinished jobs back: each gets a RELEASED transition (ready again, the attempt given back)."""
        left = list(self.running.values())
        self.running.clear()
        for entry in left:
            end = AttemptEnd(how=Ending.RELEASED, worker=self.id, finished_at=now())
            self.completer.add(decide(entry.job, end, entry.policy))
        if left:
            events.emit("job_released", worker=self.id, count=len(left))

    def _exiting(self) -> bool:
        return self.phase is Phase.EXITING

    def _register(self) -> None:
        while self.phase is Phase.RUNNING:
            try:
                self.row.register()
                return
            except db.CONNECTION_ERRORS:
                self._handle_signals()
                if self.phase is Phase.RUNNING:
                    time.sleep(self.lease_db.backoff())

    def _set_state(self, state: str) -> None:
        self.row.set_state(state)


def rss_mib() -> float:
    """Current resident set size of this process, in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
