#!/usr/bin/env python3
"""pgqueue's chaos suite: jobs run while processes are killed and PostgreSQL restarts, and the record of
what really ran is checked against pgqueue's two promises: nothing is lost, and no job runs twice at once.

    python3 tests/chaos/run.py            # the short run (about a minute; CI runs it)
    python3 tests/chaos/run.py --long     # the long run (docs/reliability.md reports it)
    python3 tests/chaos/run.py --pooled   # the same through PgBouncer in transaction mode

It starts its own embedded PostgreSQL (in a temporary directory: it restarts it) and two supervisors
(`manage.py pgqueue_worker`, 2 worker processes x 4 threads each). Every job records each execution (job
id, attempt, pid, start and end by the database clock) in its own table, chaos_execution. While an
enqueuer thread enqueues the jobs (with idempotency keys, retrying through the outages), the driver
SIGKILLs worker processes, kills one whole supervisor tree (and starts another), terminates pgqueue's
database sessions, holds a session idle in transaction with a ready job's row locked, restarts PostgreSQL
twice and enqueues a job that holds the interpreter lock past its lease. Then it waits for the queue to
drain and checks: every job succeeded, none is lost, no two executions of a job overlap in time, and
every repeated execution follows an attempt a fault interrupted. It prints a report (and --report FILE
writes it as JSON); the exit code is 0 only if every check holds.

Needs Django and pgqueue importable: it re-runs itself with .venv/bin/python (installing pgqueue's dev
extras there first) when the interpreter it was started with has neither.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "chaos"


@dataclass(frozen=True)
class Plan:
    jobs: int  # record() jobs enqueued
    work: tuple[float, float]  # seconds each works (uniform)
    enqueue_seconds: float  # the enqueuer spreads the jobs over this long
    worker_kills: int  # single worker processes SIGKILLed, spread over the run
    processes: int = 2  # worker processes per supervisor
    concurrency: int = 4


POOL_SIZE = 6  # --pooled: server connections PgBouncer keeps, for some 20 clients (processes, job threads)
SHORT = Plan(jobs=1_500, work=(0.005, 0.05), enqueue_seconds=30.0, worker_kills=3)
LONG = Plan(jobs=20_000, work=(0.005, 0.2), enqueue_seconds=240.0, worker_kills=20)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)  # the server runs on this host: the same clock as clock_timestamp()


@dataclass
class Fault:
    kind: str
    at: dt.datetime
    detail: dict[str, Any] = field(default_factory=dict)


# -- the environment ------------------------------------------------------------------------------------

def ensure_django() -> None:
    """Re-run under .venv/bin/python (with pgqueue's dev extras) unless Django and pgqueue import here."""
    try:
        import django  # noqa: F401
        import psycopg  # noqa: F401

        import pgqueue  # noqa: F401
        return
    except ImportError:
        pass
    python = ROOT / ".venv" / "bin" / "python"
    if os.environ.get("PGQUEUE_CHAOS_REEXEC"):
        sys.exit("tests/chaos/run.py: Django, psycopg or pgqueue cannot be imported even from .venv")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", f"{ROOT}[dev]"],
                   check=True)
    os.environ["PGQUEUE_CHAOS_REEXEC"] = "1"
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


class Server:
    """The chaos run's own embedded PostgreSQL: restarting it harms nothing else."""

    def __init__(self, data: Path) -> None:
        from pgqueue import devdb

        self.data = data
        self.url = devdb.database_url(data, "chaos")
        self.dsn = self.url

    def restart(self) -> None:
        from pgqueue import devdb

        devdb.restart(self.data)

    def stop(self) -> None:
        from pgqueue import devdb

        devdb.stop(self.data)

    def query(self, sql: str, params: Any = None, *, tries: int = 50) -> list[tuple[Any, ...]]:
        """One statement in autocommit, retried while the server is away."""
        import psycopg

        for attempt in range(tries):
            try:
                with psycopg.connect(self.dsn, autocommit=True, application_name="chaos driver") as conn:
                    cur = conn.execute(sql, params)
                    return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.2)
        return []


class Supervisor:
    def __init__(self, name: str, plan: Plan, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"supervisor-{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "pgqueue_worker", "--queues", QUEUE, "--processes", str(plan.processes),
             "--concurrency", str(plan.concurrency), "--log-level", "INFO"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill_tree(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


# -- the enqueuer ---------------------------------------------------------------------------------------

class Enqueuer(threading.Thread):
    """Enqueues the plan's jobs in small batches through pgqueue's API, each with an idempotency key, so
    a batch retried after an error whose commit is unknown cannot enqueue a job twice."""

    BATCH = 25

    def __init__(self, plan: Plan) -> None:
        super().__init__(name="enqueuer", daemon=True)
        self.plan = plan
        self.acknowledged = 0
        self.finished_at: dt.datetime | None = None
        self.errors: list[tuple[str, str, str]] = []  # (when, exception class, message)
        self.failed: BaseException | None = None

    def run(self) -> None:
        from django.db import connection

        from tests.chaos import jobs

        rng = random.Random(7)
        pause = self.plan.enqueue_seconds / (self.plan.jobs / self.BATCH)
        try:
            for start in range(0, self.plan.jobs, self.BATCH):
                calls = [jobs.record.options(idempotency_key=f"chaos-{n}").call(n, round(rng.uniform(*self.plan.work), 3))
                         for n in range(start, min(start + self.BATCH, self.plan.jobs))]
                while True:
                    try:
                        import pgqueue

                        pgqueue.enqueue_many(calls)
                        break
                    except Exception as exc:  # the outage: a clear error, then success after it
                        self.errors.append((now().isoformat(), type(exc).__name__, str(exc).splitlines()[0][:200]))
                        connection.close()
                        time.sleep(0.2)
                self.acknowledged += len(calls)
                if self.acknowledged < self.plan.jobs:
                    time.sleep(pause)
        except BaseException as exc:  # pragma: no cover - reported as a failed check
            self.failed = exc
        finally:
            self.finished_at = now()
            connection.close()


# -- the faults -----------------------------------------------------------------------------------------

def worker_to_kill(server: Server, rng: random.Random) -> tuple[int, str] | None:
    """A running worker process (pid, id) with a job. Not one running a crash suspect alone: killing it again
    would make pgqueue blame that job (two crashes while alone: dead, reason 'crashed'), by design."""
    rows = server.query(
        "SELECT w.pid, w.id FROM pgqueue_workerprocess w WHERE w.kind = 'worker' AND w.state = 'running' "
        "AND EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.leased_by = w.id AND j.state = 'running') "
        "AND NOT EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.leased_by = w.id AND j.state = 'running' "
        "                AND (j.crashes > 0 OR j.task LIKE '%%.hold_interpreter'))")
    return tuple(rng.choice(rows)) if rows else None  # type: ignore[return-value]


def kill_worker(server: Server, rng: random.Random, faults: list[Fault]) -> None:
    for _ in range(50):
        target = worker_to_kill(server, rng)
        if target is not None:
            pid, worker = target
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            faults.append(Fault("kill_worker", now(), {"pid": pid, "worker": worker}))
            return
        time.sleep(0.1)


def terminate_sessions(server: Server, faults: list[Fault]) -> None:
    rows = server.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'pgqueue%%' AND pid <> pg_backend_pid()")
    faults.append(Fault("terminate_sessions", now(), {"sessions": rows[0][0]}))


def hold_idle_transaction(server: Server, seconds: float, faults: list[Fault]) -> threading.Thread:
    """A session idle in transaction that holds the newest job's row lock (ready or running: its lease, or
    its completion and the others written with it, wait) and the oldest snapshot, for a while."""
    import psycopg

    def hold() -> None:
        try:
            with psycopg.connect(server.dsn, application_name="chaos idle in transaction") as conn:
                row = conn.execute("SELECT id FROM pgqueue_job ORDER BY id DESC LIMIT 1 FOR UPDATE").fetchone()
                faults.append(Fault("idle_in_transaction", now(), {"locked_job": row[0] if row else None,
                                                                   "seconds": seconds}))
                time.sleep(seconds)
                conn.rollback()
        except psycopg.OperationalError:
            pass  # a restart ended it early

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def restart_server(server: Server, faults: list[Fault]) -> None:
    began = now()
    server.restart()
    faults.append(Fault("restart_postgresql", began, {"seconds": round((now() - began).total_seconds(), 2)}))


def hog(server: Server, faults: list[Fault]) -> None:
    from django.db import connection

    from pgqueue.conf import get_settings
    from tests.chaos import jobs

    seconds = int(get_settings().LEASE_SECONDS) + 3
    for _ in range(50):
        try:
            handle = jobs.hold_interpreter.enqueue(seconds)
            faults.append(Fault("job_holds_interpreter", now(), {"job": handle.id, "seconds": seconds}))
            return
        except Exception:
            connection.close()
            time.sleep(0.2)


# -- the checks -----------------------------------------------------------------------------------------

def check(server: Server, plan: Plan, faults: list[Fault], enqueuer: Enqueuer, last_fault: dt.datetime,
          drained_at: dt.datetime | None) -> dict[str, Any]:
    jobs = server.query("SELECT id, task, state, args FROM pgqueue_job WHERE queue = %s", [QUEUE])
    states: dict[str, int] = {}
    for _, _, state, _ in jobs:
        states[state] = states.get(state, 0) + 1
    numbers = sorted(args[0] for _, task, _, args in jobs if task.endswith(".record"))
    expected = list(range(plan.jobs))
    lost = sorted(set(expected) - set(numbers))
    twice = len(numbers) - len(set(numbers))
    executions = server.query("SELECT job_id, attempt, pid, started_at, finished_at FROM chaos_execution "
                              "ORDER BY job_id, started_at")
    attempts = {(job_id, number): (outcome, finished)
                for job_id, number, outcome, finished in server.query(
                    "SELECT job_id, number, outcome, finished_at FROM pgqueue_attempt")}
    killed_at: dict[int, dt.datetime] = {}
    for fault in sorted(faults, key=lambda f: f.at):  # a pid's first kill ended it (the tree names the dead too)
        for pid in [fault.detail["pid"]] if fault.kind == "kill_worker" else fault.detail.get("pids", []):
            killed_at.setdefault(pid, fault.at)
    by_job: dict[int, list[tuple[Any, ...]]] = {}
    for row in executions:
        by_job.setdefault(row[0], []).append(row)
    overlaps, unbounded = [], 0
    repeats: dict[str, int] = {}
    for job_id, runs in by_job.items():
        for previous, current in zip(runs, runs[1:], strict=False):
            _, attempt, pid, _, finished = previous
            outcome, recorded = attempts.get((job_id, attempt)) or ("unrecorded", None)
            # when it ended: as it recorded; else when its worker recorded how it ended (the function had
            # returned or raised); else, taken back as lost, when its process was killed
            end = finished or (recorded if outcome not in ("lost", "unrecorded") else killed_at.get(pid))
            if end is None:
                unbounded += 1
                end = dt.datetime.max.replace(tzinfo=dt.UTC)
            if current[3] < end:
                overlaps.append({"job": job_id, "first": [str(previous[3]), str(end)],
                                 "second": [str(current[3]), str(current[4])], "pids": [pid, current[2]]})
            if outcome == "lost" and pid in killed_at:
                cause = "its process was killed"
            elif outcome == "failed":
                cause = "it failed on a database fault"  # the only failures these jobs have
            else:
                cause = f"an attempt that ended {outcome}"
            repeats[cause] = repeats.get(cause, 0) + 1
    rescues = []
    for fault in faults:
        workers = [fault.detail["worker"]] if fault.kind == "kill_worker" else fault.detail.get("workers", [])
        if not workers:
            continue
        rows = server.query("SELECT max(finished_at) FROM pgqueue_attempt WHERE worker = ANY(%s) AND outcome = 'lost'",
                            [workers])
        if rows and rows[0][0] is not None:
            rescues.append(round((rows[0][0] - fault.at).total_seconds(), 2))
    hogs = [f.detail["job"] for f in faults if f.kind == "job_holds_interpreter"]
    hog_runs = [len(by_job.get(j, [])) for j in hogs]
    # the job starving its process's heartbeat may be interrupted by another fault (its process killed, the
    # server restarted), never taken back from a living process by its lease's expiry alone
    killed_workers = {w for f in faults for w in ([f.detail["worker"]] if f.kind == "kill_worker" else
                                                   f.detail.get("workers", []))}
    hog_rescued_alive = server.query(
        "SELECT count(*) FROM pgqueue_attempt WHERE job_id = ANY(%s) AND outcome = 'lost' AND NOT worker = ANY(%s)",
        [hogs, sorted(killed_workers)])[0][0]
    outage_errors = len(enqueuer.errors)
    report: dict[str, Any] = {
        "jobs": len(jobs), "states": states, "acknowledged_enqueues": enqueuer.acknowledged,
        "lost": len(lost), "enqueued_twice": twice,
        "executions": len(executions), "repeated_executions": sum(repeats.values()),
        "repeated_after": repeats, "overlaps": len(overlaps), "overlap_examples": overlaps[:5],
        "unbounded_executions": unbounded,
        "faults": {k: sum(1 for f in faults if f.kind == k) for k in sorted({f.kind for f in faults})},
        "rescue_seconds_after_a_kill": rescues, "rescue_seconds_max": max(rescues, default=None),
        "drain_seconds_after_last_fault": round((drained_at - last_fault).total_seconds(), 2) if drained_at else None,
        "drain_seconds_after_last_enqueue": (round((drained_at - enqueuer.finished_at).total_seconds(), 2)
                                             if drained_at and enqueuer.finished_at else None),
        "hog_executions": hog_runs, "hog_rescued_from_a_living_process": hog_rescued_alive,
        "enqueue_errors_during_outages": outage_errors,
        "enqueue_error_examples": sorted({f"{c}: {m}" for _, c, m in enqueuer.errors})[:5],
    }
    problems = []
    if states.get("succeeded", 0) != len(jobs) or len(jobs) != plan.jobs + len(hogs):
        problems.append(f"not every job succeeded: {states} of {plan.jobs + len(hogs)} expected")
    if lost or twice or enqueuer.acknowledged != plan.jobs or enqueuer.failed is not None:
        problems.append(f"lost {len(lost)}, enqueued twice {twice}, acknowledged {enqueuer.acknowledged}, "
                        f"enqueuer failure {enqueuer.failed!r}")
    if overlaps:
        problems.append(f"{len(overlaps)} executions overlap another of the same job")
    unexplained = {c: n for c, n in repeats.items() if c.startswith("an attempt")}
    if unexplained:
        problems.append(f"executions repeated after an attempt no fault interrupted: {unexplained}")
    if hog_rescued_alive or not all(hog_runs):
        problems.append(f"the job holding the interpreter was taken back from a living process "
                        f"{hog_rescued_alive} times (executions: {hog_runs})")
    if drained_at is None:
        problems.append("the queue did not drain")
    report["problems"] = problems
    return report


# -- the run --------------------------------------------------------------------------------------------

def run(plan: Plan, workdir: Path, *, pooled: bool = False) -> dict[str, Any]:
    server = Server(workdir / "pgdata")
    os.environ["DATABASE_URL"] = server.url
    if pooled:  # every pgqueue connection and the enqueuer through PgBouncer; LISTEN and the driver direct
        from pgqueue import devdb

        os.environ["DATABASE_URL"] = devdb.start_pooler(server.url, workdir / "pgbouncer", pool_size=POOL_SIZE)
        os.environ.update({"PGQUEUE_POOLER": "transaction", "PGQUEUE_LISTEN_DATABASE": "direct",
                           "PGQUEUE_TEST_DIRECT_URL": server.url})
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ.pop("PGQUEUE_TEST_DEVDB", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    server.query("CREATE TABLE IF NOT EXISTS chaos_execution (id bigserial PRIMARY KEY, job_id bigint NOT NULL, "
                 "attempt int NOT NULL, pid int NOT NULL, started_at timestamptz NOT NULL, finished_at timestamptz)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    rng = random.Random(11)
    faults: list[Fault] = []
    supervisors = [Supervisor("a", plan, env, logs), Supervisor("b", plan, env, logs)]
    enqueuer = Enqueuer(plan)
    began = time.monotonic()
    enqueuer.start()
    span = plan.enqueue_seconds
    # (fraction of the enqueue span, fault): the same schedule every run, so the figures compare
    # (the job holding the interpreter runs after the supervisor tree's kill and ends before the second
    # restart, and no worker running it is picked for a kill: what it shows is not blurred by other faults)
    schedule: list[tuple[float, str]] = [(0.10, "kill_worker"), (0.20, "terminate_sessions"),
                                         (0.28, "idle_in_transaction"), (0.36, "restart_postgresql"),
                                         (0.50, "kill_supervisor_tree"), (0.56, "job_holds_interpreter"),
                                         (0.95, "restart_postgresql")]
    schedule += [(0.10 + 0.8 * (i + 1) / (plan.worker_kills + 1), "kill_worker") for i in range(plan.worker_kills - 1)]
    schedule.sort()
    holders: list[threading.Thread] = []
    for fraction, kind in schedule:
        time.sleep(max(0.0, began + fraction * span - time.monotonic()))
        print(f"[{time.monotonic() - began:6.1f} s] {kind}", flush=True)
        if kind == "kill_worker":
            kill_worker(server, rng, faults)
        elif kind == "terminate_sessions":
            terminate_sessions(server, faults)
        elif kind == "idle_in_transaction":
            holders.append(hold_idle_transaction(server, min(20.0, 0.15 * span), faults))
        elif kind == "restart_postgresql":
            restart_server(server, faults)
        elif kind == "job_holds_interpreter":
            hog(server, faults)
        elif kind == "kill_supervisor_tree":
            victim = supervisors.pop(0)
            killed = {f.detail["pid"] for f in faults if f.kind == "kill_worker"}
            children = [c for c in server.query(
                "SELECT id, pid FROM pgqueue_workerprocess WHERE supervisor_id = (SELECT id FROM pgqueue_workerprocess "
                "WHERE kind = 'supervisor' AND pid = %s AND state = 'running') AND kind = 'worker'", [victim.proc.pid])
                if c[1] not in killed]
            victim.kill_tree()
            faults.append(Fault("kill_supervisor_tree", now(), {"pid": victim.proc.pid,
                                                                "workers": [c[0] for c in children],
                                                                "pids": [c[1] for c in children]}))
            victim.log.close()
            supervisors.append(Supervisor("c", plan, env, logs))
    enqueuer.join(timeout=span * 3)
    for holder in holders:
        holder.join(timeout=30)
    last_fault = max(f.at for f in faults)
    print(f"[{time.monotonic() - began:6.1f} s] faults done; waiting for the queue to drain", flush=True)
    drained_at = None
    deadline = time.monotonic() + max(120.0, span)
    while time.monotonic() < deadline:
        left = server.query("SELECT count(*), max(finished_at) FROM pgqueue_job WHERE queue = %s "
                            "AND state <> 'succeeded'", [QUEUE])[0][0]
        if left == 0 and enqueuer.acknowledged == plan.jobs:
            drained_at = server.query("SELECT max(finished_at) FROM pgqueue_job WHERE queue = %s", [QUEUE])[0][0]
            break
        time.sleep(0.5)
    for supervisor in supervisors:
        supervisor.stop()
    report = check(server, plan, faults, enqueuer, last_fault, drained_at)
    report["plan"] = asdict(plan)
    report["pooled"] = pooled
    report["seconds"] = round(time.monotonic() - began, 1)
    report["logs"] = str(logs)
    report["fault_log"] = [{"kind": f.kind, "at": f.at.isoformat(), **f.detail} for f in faults]
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long run (20,000 jobs, about 5 minutes)")
    parser.add_argument("--report", type=Path, help="also write the report here, as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the server's data and the logs")
    parser.add_argument("--pooled", action="store_true", help="run pgqueue and the enqueuer through PgBouncer in "
                        "transaction mode (POOLER 'transaction', LISTEN on the server itself)")
    args = parser.parse_args(argv)
    ensure_django()
    plan = LONG if args.long else SHORT
    workdir = Path(tempfile.mkdtemp(prefix="pgqueue-chaos-"))
    workdir.chmod(0o755)  # as root, the server runs as another user, who must reach its data directory
    server_dir = workdir / "pgdata"
    try:
        report = run(plan, workdir, pooled=args.pooled)
    finally:
        try:
            from pgqueue import devdb

            devdb.stop_pooler(workdir / "pgbouncer")
            devdb.stop(server_dir)
        except Exception as exc:  # pragma: no cover
            print(f"could not stop the chaos server: {exc}", file=sys.stderr)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.report:
        args.report.write_text(text)
    if not args.keep and not report["problems"]:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    print("chaos: " + ("OK" if not report["problems"] else "FAILED: " + "; ".join(report["problems"])))
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
