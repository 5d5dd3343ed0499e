"""The checks of manage.py pgqueue_doctor: is the database side of pgqueue healthy (schema, the lease
statement's plan, bloat and vacuum, stuck leases and workers, transactions holding back VACUUM, clock skew,
LISTEN/NOTIFY)? Each check reads, measures and returns a Check: a verdict, the facts and the fix."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models import UniqueConstraint

from pgqueue import db, sql
from pgqueue.checks import unapplied_names
from pgqueue.conf import Settings, get_settings
from pgqueue.sql import statement
from pgqueue.sql.rows import Leadership
from pgqueue.text import seconds_text, size_text
from pgqueue.worker.maintenance import LEADER_ROLE

APP = "pgqueue"
JOB_TABLE = "pgqueue_job"
LEASE_INDEX = "pgqueue_job_ready"  # serves job_lease (pgqueue.models.jobs)
LISTED = 10  # rows named in one detail (sessions, workers)
# Per-table autovacuum settings advised for the job table, each with the highest value taken as tuned: every
# change of a job's state leaves a dead row, so vacuum once 1% of the rows are dead (not the server default
# 20%), and ANALYZE once 2% changed (the lease plan depends on how many rows are ready).
AUTOVACUUM_ADVICE = {"autovacuum_vacuum_scale_factor": ("vacuumed once {} of its rows are dead", 0.05, "0.01"),
                     "autovacuum_analyze_scale_factor": ("analyzed once {} of its rows changed", 0.05, "0.02")}


class Verdict(StrEnum):
    OK = "ok"
    WARNING = "warning"  # works, but will hurt: fix it when you can
    ERROR = "error"  # broken now: jobs are late, lost to polling, or not rescued


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One check's result: `detail` gives the facts measured, `fix` says what to do (empty when ok)."""

    name: str
    verdict: Verdict
    detail: str
    fix: str = ""


# -- rows of pgqueue/sql/doctor.sql -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexRow:
    table_name: str
    index_name: str
    valid: bool
    ready: bool


@dataclass(frozen=True, slots=True)
class PreparedRow:
    name: str
    parameters: int


@dataclass(frozen=True, slots=True)
class PlanLine:
    line: str


@dataclass(frozen=True, slots=True)
class TableRow:
    table_name: str
    table_bytes: int
    index_bytes: int
    live_rows: int
    dead_rows: int
    last_vacuum: dt.datetime | None
    last_analyze: dt.datetime | None
    last_autovacuum: dt.datetime | None
    last_autoanalyze: dt.datetime | None
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class SettingRow:
    name: str
    server_value: str
    table_value: str | None


@dataclass(frozen=True, slots=True)
class ExpiredLeases:
    count: int
    oldest_seconds: float | None
    ids: list[int]


@dataclass(frozen=True, slots=True)
class SilentProcess:
    id: str
    kind: str
    hostname: str
    pid: int
    state: str
    silent_seconds: float
    running_jobs: int


@dataclass(frozen=True, slots=True)
class Session:
    pid: int
    database: str
    username: str
    application_name: str
    state: str
    xact_seconds: float
    state_seconds: float
    holds_xmin: bool
    query: str


@dataclass(frozen=True, slots=True)
class PreparedXact:
    gid: str
    database: str
    owner: str
    age_seconds: float


@dataclass(frozen=True, slots=True)
class Slot:
    slot_name: str
    slot_type: str
    active: bool
    xmin_age: int


@dataclass(frozen=True, slots=True)
class Clock:
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class Connections:
    max_connections: int
    reserved: int
    sessions: int
    pgqueue_sessions: int


@dataclass(frozen=True, slots=True)
class Supervisor:
    id: str
    hostname: str
    workers: int
    job_threads: int
    roles: int
    connections: int  # what its processes opened, as they registered (see docs/worker.md)

    @property
    def fewest(self) -> int:
        """Connections it holds when its jobs do not use the ORM."""
        return self.connections

    @property
    def most(self) -> int:
        """...and when every job thread holds a Django connection too."""
        return self.fewest + self.job_threads


INDEXES = statement("doctor_indexes", IndexRow)
PREPARED_STATEMENTS = statement("doctor_prepared_statements", PreparedRow)
PLAN_FUNCTION = statement("doctor_plan_function")
PLAN = statement("doctor_plan", PlanLine)
TABLE_SIZES = statement("doctor_table_sizes", TableRow)
AUTOVACUUM = statement("doctor_autovacuum", SettingRow)
EXPIRED_LEASES = statement("doctor_expired_leases", ExpiredLeases)
DEAD_WORKERS = statement("doctor_dead_workers", SilentProcess)
LONG_TRANSACTIONS = statement("doctor_long_transactions", Session)
PREPARED_TRANSACTIONS = statement("doctor_prepared_transactions", PreparedXact)
REPLICATION_SLOTS = statement("doctor_replication_slots", Slot)
CLOCK = statement("doctor_clock", Clock)
CONNECTIONS = statement("doctor_connections", Connections)
SUPERVISORS = statement("doctor_supervisors", Supervisor)


# -- the checks -----------------------------------------------------------------------------------------------


def check_settings() -> Check:
    """PGQUEUE's values that the other checks depend on, and timing that leaves no room for a late heartbeat."""
    try:
        s = get_settings()
    except ImproperlyConfigured as exc:
        return Check(name="settings", verdict=Verdict.ERROR, detail=str(exc),
                     fix="Fix settings.PGQUEUE or the PGQUEUE_* environment variable named above.")
    where = connections[s.DATABASE].settings_dict
    detail = [f"database alias {s.DATABASE!r}: {where.get('NAME')} on {where.get('HOST') or 'the local socket'}"
              f"{':' + str(where['PORT']) if where.get('PORT') else ''}",
              ", ".join(f"{name} {_number(getattr(s, name))}" for name in (
                  "LEASE_SECONDS", "HEARTBEAT_SECONDS", "WORKER_DEAD_AFTER", "POLL_SECONDS", "MAINTENANCE_SECONDS",
                  "KEEP_SUCCEEDED_SECONDS", "KEEP_FAILED_SECONDS")),
              f"POOLER {s.POOLER!r}, PREPARE_STATEMENTS {s.prepare}, NOTIFY_CHANNEL {s.NOTIFY_CHANNEL!r}"]
    tight = [f"{name} ({_number(getattr(s, name))} s) is under 3 x HEARTBEAT_SECONDS ({_number(s.HEARTBEAT_SECONDS)} s)"
             for name in ("LEASE_SECONDS", "WORKER_DEAD_AFTER") if getattr(s, name) < 3 * s.HEARTBEAT_SECONDS]
    if tight:
        return Check(name="settings", verdict=Verdict.WARNING, detail="\n".join([*tight, *detail]),
                     fix=f"Two late heartbeats in a row lose a lease or declare a live worker dead (its job then "
                         f"runs twice): set PGQUEUE['LEASE_SECONDS'] and PGQUEUE['WORKER_DEAD_AFTER'] to at least "
                         f"{_number(3 * s.HEARTBEAT_SECONDS)}, or lower PGQUEUE['HEARTBEAT_SECONDS'].")
    return Check(name="settings", verdict=Verdict.OK, detail="\n".join(detail))


def check_migrations() -> Check:
    """pgqueue's migrations are all applied on its database, and it has none this code does not know."""
    alias = get_settings().DATABASE
    executor = MigrationExecutor(connections[alias])
    loader = executor.loader
    plan = executor.migration_plan([key for key in loader.graph.leaf_nodes() if key[0] == APP])
    applied = {name for app, name in loader.applied_migrations if app == APP}
    unknown = sorted(applied - {name for app, name in loader.disk_migrations if app == APP})
    if plan:
        return Check(name="migrations", verdict=Verdict.ERROR,
                     detail=f"not applied on database {alias!r}: {unapplied_names([m for m, _ in plan])}",
                     fix=f"python manage.py migrate pgqueue --database {alias}")
    if unknown:
        return Check(name="migrations", verdict=Verdict.WARNING,
                     detail=f"database {alias!r} has pgqueue migrations this code does not have: {', '.join(unknown)} "
                            "(a newer pgqueue migrated it)",
                     fix="Run the same pgqueue version everywhere: upgrade this deployment (or migrate the database "
                         "back with the newer code: python manage.py migrate pgqueue <migration>).")
    return Check(name="migrations", verdict=Verdict.OK,
                 detail=f"all {len(applied)} pgqueue migrations are applied on database {alias!r}")


def check_indexes() -> Check:
    """Every index pgqueue's models declare exists on its table and is valid (a failed CREATE INDEX
    CONCURRENTLY leaves an invalid one, which queries do not use)."""
    alias = get_settings().DATABASE
    declared = _declared_indexes()
    rows = _index_rows(_tables())
    found = {(r.table_name, r.index_name): r for r in rows}
    no_table = sorted({t for t, _, _ in declared} - {r.table_name for r in rows})  # every table has a primary key
    if no_table:
        return Check(name="indexes", verdict=Verdict.ERROR, detail=f"no table {', '.join(no_table)}",
                     fix=f"python manage.py migrate pgqueue --database {alias}")
    missing = [(t, i, create) for t, i, create in declared if (t, i) not in found]
    invalid = [(t, i) for t, i, _ in declared if (t, i) in found and not (found[t, i].valid and found[t, i].ready)]
    if not missing and not invalid:
        return Check(name="indexes", verdict=Verdict.OK,
                     detail=f"all {len(declared)} indexes pgqueue's models declare exist and are valid")
    detail = [f"missing: {i} on {t}" for t, i, _ in missing] + [f"invalid: {i} on {t}" for t, i in invalid]
    fix = [create for _, _, create in missing] + [f"REINDEX INDEX CONCURRENTLY {i};" for _, i in invalid]
    return Check(name="indexes", verdict=Verdict.ERROR, detail="\n".join(detail),
                 fix="\n".join([f"Run on database {alias!r} (python manage.py dbshell --database {alias}), or, if the "
                                "migrations check fails too, python manage.py migrate pgqueue:", *fix]))


def check_lease_plan(*, small_table_rows: int = 1000) -> Check:
    """EXPLAIN job_lease as a worker's connection keeps it (prepared, plan_cache_mode = force_generic_plan):
    it must read pgqueue_job through pgqueue_job_ready, not scan it. A table of fewer than
    `small_table_rows` rows may be scanned: the planner rightly finds that cheaper."""
    settings = get_settings()
    params = db.listen_kwargs(settings) if settings.transaction_pooled else db.connection_kwargs(settings.DATABASE)
    if params is None:
        return Check(name="lease_plan", verdict=Verdict.OK,
                     detail="not checked: a prepared plan is a session's, and POOLER is 'transaction' with no "
                            "LISTEN_DATABASE (a direct connection) to keep one on; behind the pooler workers plan "
                            "each statement as they run it")
    plan = _lease_plan(settings, params)
    estimate = max(0, db.run_in_django(sql.table_estimated_rows, table=JOB_TABLE)[0].estimate)
    index = [r for r in _index_rows([JOB_TABLE]) if r.index_name == LEASE_INDEX]
    index_ok = bool(index) and index[0].valid and index[0].ready
    scans = [re.sub(r"\s+\(cost=[^)]*\)", "", line).strip().removeprefix("->").strip() for line in plan
             if re.search(rf"\bon {JOB_TABLE}\b", line) and "Scan" in line]
    seq_scan = any(line.startswith("Seq Scan") for line in scans)
    uses_index = any(LEASE_INDEX in line for line in scans)
    facts = (f"job_lease's generic plan reads {JOB_TABLE} with: {'; '.join(scans) or 'no scan'} "
             f"({JOB_TABLE} holds about {estimate} rows)")
    if uses_index and not seq_scan:
        return Check(name="lease_plan", verdict=Verdict.OK, detail=facts)
    if seq_scan and estimate < small_table_rows and index_ok:
        return Check(name="lease_plan", verdict=Verdict.OK,
                     detail=f"{facts}: a scan is cheaper at this size; worker connections plan again every "
                            f"{_number(db.REPLAN_SECONDS)} s as the table grows")
    if not index_ok:
        fix = f"Index {LEASE_INDEX} is {'invalid' if index else 'missing'}: restore it as the indexes check says."
    else:
        fix = (f"The statistics of {JOB_TABLE} may be stale: run ANALYZE {JOB_TABLE}; then run pgqueue_doctor "
               f"again (and see the autovacuum check). If the plan still does not use {LEASE_INDEX}, report it "
               "with this plan.")
    return Check(name="lease_plan", verdict=Verdict.ERROR if seq_scan else Verdict.WARNING,
                 detail=f"{facts}: every lease "
                        + ("scans the whole table" if seq_scan else f"does not use {LEASE_INDEX}"),
                 fix=fix)


def check_tables(*, dead_ratio: float = 0.2, min_dead_rows: int = 10_000) -> Check:
    """Size of pgqueue's tables and their indexes, and dead rows (what VACUUM has not reclaimed yet): a
    warning for a table with at least `min_dead_rows` dead rows making up `dead_ratio` of its rows."""
    settings = get_settings()
    rows = db.run_in_django(TABLE_SIZES, tables=_tables())
    bloated = [r for r in rows
               if r.dead_rows >= min_dead_rows and r.dead_rows >= dead_ratio * (r.live_rows + r.dead_rows)]
    shown = [r for r in rows if r in bloated or r.table_name in (JOB_TABLE, "pgqueue_attempt")
             or r.table_bytes + r.index_bytes >= 1024 * 1024]
    rest = [r for r in rows if r not in shown]
    detail = [_table_line(r) for r in shown]
    if rest:
        detail.append(f"{len(rest)} other tables: {size_text(sum(r.table_bytes + r.index_bytes for r in rest))} in all")
    if not bloated:
        return Check(name="tables", verdict=Verdict.OK, detail="\n".join(detail))
    names = ", ".join(r.table_name for r in bloated)
    return Check(name="tables", verdict=Verdict.WARNING,
                 detail=f"dead rows make up {dead_ratio:.0%} or more of {names}\n" + "\n".join(detail),
                 fix="\n".join([*(f"VACUUM (ANALYZE, VERBOSE) {r.table_name};" for r in bloated),
                                "If VACUUM removes few of the dead rows, an old transaction holds them (see "
                                "long_transactions). If autovacuum falls behind, tune it per table (see autovacuum).",
                                f"Keep less history: PGQUEUE['KEEP_SUCCEEDED_SECONDS'] (now "
                                f"{_number(settings.KEEP_SUCCEEDED_SECONDS)}) and PGQUEUE['KEEP_FAILED_SECONDS'] (now "
                                f"{_number(settings.KEEP_FAILED_SECONDS)}).",
                                "VACUUM does not give space back to the system: VACUUM FULL <table> does (it locks "
                                "the table; pg_repack does not)."]))


def check_autovacuum() -> Check:
    """pgqueue_job's autovacuum settings (its reloptions, else the server's): a warning when they are the
    server defaults meant for ordinary tables, an error when autovacuum is off."""
    rows = {r.name: r for r in db.run_in_django(AUTOVACUUM, table=JOB_TABLE)}

    def effective(name: str) -> str:
        row = rows[name]
        return str(row.table_value if row.table_value is not None else row.server_value)

    detail = [f"{name} = {effective(name)}"
              + (f" (table; server {row.server_value})" if row.table_value is not None else " (server)")
              for name, row in rows.items()]
    off = [name for name in ("autovacuum", "track_counts") if effective(name) in ("off", "false")]
    if off:
        fixes = [f"ALTER TABLE {JOB_TABLE} RESET (autovacuum_enabled);" if name == "autovacuum"
                 and rows[name].table_value is not None else f"ALTER SYSTEM SET {name} = on; SELECT pg_reload_conf();"
                 for name in off]
        return Check(name="autovacuum", verdict=Verdict.ERROR,
                     detail=f"{' and '.join(off)} off for {JOB_TABLE}: autovacuum never removes its dead rows\n"
                            + "\n".join(detail),
                     fix="\n".join(fixes))
    loose = [(name, text, advised) for name, (text, limit, advised) in AUTOVACUUM_ADVICE.items()
             if float(effective(name)) > limit]
    if not loose:
        return Check(name="autovacuum", verdict=Verdict.OK, detail="\n".join(detail))
    said = " and ".join(text.format(f"{float(effective(n)):.0%}") + f" ({n} = {effective(n)})" for n, text, _ in loose)
    return Check(name="autovacuum", verdict=Verdict.WARNING,
                 detail=f"{JOB_TABLE} has the settings of an ordinary table, though each job leaves dead rows as it "
                        f"runs: it is {said}\n" + "\n".join(detail),
                 fix=f"ALTER TABLE {JOB_TABLE} SET ({', '.join(f'{n} = {v}' for n, _, v in loose)});")


def check_expired_leases(*, grace: float | None = None) -> Check:
    """Running jobs whose lease expired more than `grace` seconds ago (default: 10 maintenance rounds, at
    least 5 s): the maintenance leader rescues them each round, so they mean it is not running."""
    settings = get_settings()
    grace = _grace(settings) if grace is None else grace
    row = db.run_in_django(EXPIRED_LEASES, grace=grace)[0]
    if not row.count:
        return Check(name="expired_leases", verdict=Verdict.OK,
                     detail=f"no running job's lease expired more than {_number(grace)} s ago")
    leader = _leader()
    return Check(name="expired_leases", verdict=Verdict.ERROR,
                 detail=f"{row.count} running job(s) whose lease expired, the oldest "
                        f"{seconds_text(row.oldest_seconds or 0)} ago (jobs {', '.join(map(str, row.ids))}"
                        f"{', ...' if row.count > len(row.ids) else ''}); "
                        f"{_leader_text(leader)}",
                 fix=_maintenance_fix(leader) + " It rescues these jobs at its next round (retried, or dead once "
                     "they were lost too often).")


def check_dead_workers(*, dead_after: float | None = None) -> Check:
    """Processes still marked running or stopping with no heartbeat for `dead_after` seconds (default:
    WORKER_DEAD_AFTER plus the expired-lease grace): maintenance marks them dead and rescues their jobs."""
    settings = get_settings()
    dead_after = settings.WORKER_DEAD_AFTER + _grace(settings) if dead_after is None else dead_after
    rows = db.run_in_django(DEAD_WORKERS, dead_after=dead_after, limit=LISTED)
    if not rows:
        return Check(name="dead_workers", verdict=Verdict.OK,
                     detail=f"every process marked running has sent a heartbeat in the last {_number(dead_after)} s")
    leader = _leader()
    detail = [f"{r.kind} {r.id} ({r.hostname} pid {r.pid}), {r.state}, silent for {seconds_text(r.silent_seconds)}, "
              f"holds {r.running_jobs} running job(s)" for r in rows]
    return Check(name="dead_workers", verdict=Verdict.ERROR,
                 detail="\n".join([*detail, _leader_text(leader)]),
                 fix="On each host, see whether the process lives (ps -p <pid>); a hung one: kill -TERM <pid>, then "
                     "kill -KILL <pid>. " + _maintenance_fix(leader) + " It marks them dead and rescues their jobs.")


def check_long_transactions(*, warn_after: float = 60.0, error_after: float = 600.0) -> Check:
    """Transactions that stop VACUUM from removing dead rows of any table, pgqueue_job among them: sessions
    of any database of the server in a transaction for over `warn_after` seconds (an error over
    `error_after`), prepared transactions, and replication slots holding an xmin."""
    sessions = db.run_in_django(LONG_TRANSACTIONS, older_than=warn_after, limit=LISTED)
    prepared = db.run_in_django(PREPARED_TRANSACTIONS, older_than=warn_after)
    slots = [s for s in db.run_in_django(REPLICATION_SLOTS) if not s.active]
    if not sessions and not prepared and not slots:
        return Check(name="long_transactions", verdict=Verdict.OK,
                     detail=f"no transaction older than {_number(warn_after)} s, no prepared transaction, no "
                            "inactive replication slot holds back VACUUM")
    detail = [f"pid {s.pid} ({s.database}, user {s.username}, application {s.application_name!r}): {s.state} for "
              f"{seconds_text(s.state_seconds)}, transaction open {seconds_text(s.xact_seconds)}"
              f"{', holds back VACUUM' if s.holds_xmin else ''}; query: {s.query!r}" for s in sessions]
    detail += [f"prepared transaction {p.gid!r} ({p.database}, owner {p.owner}) for {seconds_text(p.age_seconds)}"
               for p in prepared]
    detail += [f"inactive {s.slot_type} replication slot {s.slot_name!r} holds xmin, {s.xmin_age} transactions old"
               for s in slots]
    fix = []
    if sessions:
        pids = [str(s.pid) for s in sessions]
        fix += [f"End them: SELECT pg_terminate_backend(pid) FROM unnest(ARRAY[{', '.join(pids)}]) AS pid;",
                "Then find the code that leaves transactions open (its application_name), and cap them: "
                "ALTER DATABASE <name> SET idle_in_transaction_session_timeout = '5min'; (and statement_timeout "
                "for long queries)."]
    fix += [f"ROLLBACK PREPARED '{p.gid}';  -- connected to database {p.database} (or COMMIT PREPARED)"
            for p in prepared]
    fix += [f"SELECT pg_drop_replication_slot('{s.slot_name}');  -- if its replica is gone; else bring it back"
            for s in slots]
    error = any(s.xact_seconds >= error_after for s in sessions) or any(p.age_seconds >= error_after for p in prepared)
    return Check(name="long_transactions", verdict=Verdict.ERROR if error else Verdict.WARNING,
                 detail="\n".join(detail), fix="\n".join(fix))


def check_clock_skew(*, warn_after: float = 1.0, error_after: float = 10.0,
                     clock: Callable[[], float] = time.time, samples: int = 3) -> Check:
    """This machine's clock against the database server's (clock_timestamp()), net of the round trip: the
    sample with the shortest round trip counts."""
    measured = []  # (round trip, server clock minus this machine's at the middle of the trip)
    for _ in range(max(1, samples)):
        before = clock()
        server = db.run_in_django(CLOCK)[0].now.timestamp()
        after = clock()
        measured.append((after - before, server - (before + after) / 2))
    round_trip, skew = min(measured)
    off = max(0.0, abs(skew) - round_trip / 2)  # at least this far apart, whenever the server read its clock
    facts = (f"the database clock is {abs(skew):.3f} s {'ahead of' if skew > 0 else 'behind'} this machine's "
             f"(round trip {round_trip * 1000:.1f} ms)")
    if off <= warn_after:
        return Check(name="clock_skew", verdict=Verdict.OK, detail=facts)
    return Check(name="clock_skew", verdict=Verdict.ERROR if off > error_after else Verdict.WARNING,
                 detail=f"{facts}. Leases, heartbeats and due run_at are judged by the database clock; times this "
                        "machine computes (the run_at of a job enqueued with a delay, attempt end times) are off by "
                        "the skew",
                 fix="Synchronise both machines' clocks with NTP (chrony or systemd-timesyncd; chronyc tracking or "
                     "timedatectl status shows whether they are).")


def check_listen(*, timeout: float = 2.0) -> Check:
    """LISTEN as the workers do (on DATABASE, or on LISTEN_DATABASE behind a transaction pooler), NOTIFY
    through DATABASE as an enqueue does (on a private channel): the NOTIFY must arrive within `timeout`."""
    settings = get_settings()
    listen = db.listen_kwargs(settings)
    poll = f"POLL_SECONDS ({_number(settings.POLL_SECONDS)} s)"
    if listen is None:
        return Check(name="listen_notify", verdict=Verdict.WARNING,
                     detail=f"POOLER is 'transaction' and LISTEN_DATABASE is not set: workers do not listen; they "
                            f"poll every {poll}, so a job waits up to that long to start",
                     fix="For wake-ups within milliseconds, set PGQUEUE['LISTEN_DATABASE'] to the alias of a direct "
                         "(or session-pooled) connection to the same database (docs/deployment.md).")
    arrived = db.notify_round_trip(listen, db.connection_kwargs(settings.DATABASE), owner=_owner(), timeout=timeout)
    where = (f"LISTEN_DATABASE {settings.LISTEN_DATABASE!r}" if settings.transaction_pooled
             else f"DATABASE {settings.DATABASE!r}")
    if arrived is not None:
        return Check(name="listen_notify", verdict=Verdict.OK,
                     detail=f"a NOTIFY sent through DATABASE {settings.DATABASE!r} reached a connection listening "
                            f"on {where} in {arrived * 1000:.0f} ms")
    return Check(name="listen_notify", verdict=Verdict.ERROR,
                 detail=f"a NOTIFY sent through DATABASE {settings.DATABASE!r} did not reach a connection listening "
                        f"on {where} within {_number(timeout)} s: workers do not wake when jobs are enqueued; "
                        f"they find them by polling every {poll}",
                 fix=listen_fix(settings))


def listen_fix(settings: Settings) -> str:
    """What to change when a NOTIFY does not reach the workers' LISTEN connection."""
    if settings.transaction_pooled:
        return (f"LISTEN_DATABASE {settings.LISTEN_DATABASE!r} must reach the same database as DATABASE "
                f"{settings.DATABASE!r}, directly or through a session-mode pool (not a transaction pooler).")
    return ("LISTEN needs a session that keeps its server connection; a transaction pooler (PgBouncer in "
            "transaction mode, Supavisor, RDS Proxy) breaks it. Set PGQUEUE['POOLER'] = 'transaction' (pgqueue "
            "then keeps no session state on pooled connections) and PGQUEUE['LISTEN_DATABASE'] to the alias of a "
            "direct connection, or point DATABASES at the server directly (docs/deployment.md).")


def check_connections(*, warn_at: float = 0.8) -> Check:
    """The connections the live supervisors may open (what their processes registered: `2 + 3 × processes`
    each by default, `2 + processes` with --share-connections, plus a scheduler, a metrics process, and one
    per job thread that uses the ORM) against what the server allows: a warning past `warn_at` of it, an
    error past all of it (then jobs, and the application's own requests, get refused)."""
    settings = get_settings()
    now = db.run_in_django(CONNECTIONS)[0]
    supervisors = db.run_in_django(SUPERVISORS, dead_after=settings.WORKER_DEAD_AFTER)
    usable = now.max_connections - now.reserved
    fewest, most = sum(s.fewest for s in supervisors), sum(s.most for s in supervisors)
    detail = [f"{now.sessions} client sessions now ({now.pgqueue_sessions} of them pgqueue's), max_connections "
              f"{now.max_connections} ({now.reserved} reserved for superusers)",
              f"{len(supervisors)} live supervisor(s) hold {fewest} connection(s) when their jobs do not use the ORM, "
              f"up to {most} when every job thread does (each: its own, 1 per maintenance, scheduler and metrics "
              f"process, 3 per worker or 1 with --share-connections, + 1 per job thread)"]
    detail += [f"supervisor {s.id} on {s.hostname}: {s.workers} worker(s), {s.job_threads} job thread(s): "
               f"{s.fewest} to {s.most}" for s in supervisors[:LISTED]]
    if settings.transaction_pooled:
        detail.append("POOLER is 'transaction': these connections go to the pooler, which holds fewer on the server")
        return Check(name="connections", verdict=Verdict.OK, detail="\n".join(detail))
    others = now.sessions - now.pgqueue_sessions
    if fewest + others > usable:
        verdict = Verdict.ERROR
    elif most + others > warn_at * usable:
        verdict = Verdict.WARNING
    else:
        return Check(name="connections", verdict=Verdict.OK, detail="\n".join(detail))
    return Check(name="connections", verdict=verdict, detail="\n".join(detail),
                 fix=f"Raise max_connections (now {now.max_connections}), run fewer or smaller supervisors "
                     "(--processes, --concurrency; --no-maintenance on all but a few, no --metrics-port where not "
                     "scraped), or put a transaction pooler in front (PGQUEUE['POOLER'] = 'transaction', "
                     "docs/deployment.md).")


CHECKS: tuple[tuple[str, Callable[[], Check]], ...] = (
    ("settings", check_settings),
    ("migrations", check_migrations),
    ("indexes", check_indexes),
    ("lease_plan", check_lease_plan),
    ("tables", check_tables),
    ("autovacuum", check_autovacuum),
    ("expired_leases", check_expired_leases),
    ("dead_workers", check_dead_workers),
    ("long_transactions", check_long_transactions),
    ("clock_skew", check_clock_skew),
    ("listen_notify", check_listen),
    ("connections", check_connections),
)


def run_checks() -> list[Check]:
    """Every check, in order. A check that cannot run (a permission is missing, a bug) is an error saying
    why, and the others still run; once the database cannot be reached, the rest are not tried."""
    results: list[Check] = []
    for name, check in CHECKS:
        unreachable = next((c.name for c in results if c.detail.startswith(UNREACHABLE)), None)
        if unreachable is not None:
            results.append(Check(name=name, verdict=Verdict.ERROR, detail=f"not run: {UNREACHABLE} (see {unreachable})",
                                 fix=f"Fix what {unreachable} says first."))
        else:
            results.append(_run(name, check))
    return results


def failed(checks: Sequence[Check], *, warnings: bool = False) -> list[Check]:
    """The checks that fail the doctor: errors, and warnings too if asked."""
    failing = {Verdict.ERROR, Verdict.WARNING} if warnings else {Verdict.ERROR}
    return [c for c in checks if c.verdict in failing]


def format_table(checks: Sequence[Check]) -> str:
    """A table for people: verdict, name, then the detail and the fix, one fact per line."""
    width = max(len(c.name) for c in checks) + 2
    lines = [f"{'VERDICT':<9}{'CHECK':<{width}}DETAIL / FIX"]
    for c in checks:
        text = c.detail.splitlines() + [f"fix: {line}" if i == 0 else f"     {line}"
                                        for i, line in enumerate(c.fix.splitlines())]
        lines.append(f"{c.verdict.value:<9}{c.name:<{width}}{text[0] if text else ''}")
        lines += [f"{'':<{9 + width}}{line}" for line in text[1:]]
    counts = {v: sum(c.verdict is v for c in checks) for v in Verdict}
    lines.append(f"{len(checks)} checks: {counts[Verdict.OK]} ok, {counts[Verdict.WARNING]} warning(s), "
                 f"{counts[Verdict.ERROR]} error(s)")
    return "\n".join(lines)


def to_json(checks: Sequence[Check]) -> str:
    return json.dumps([dataclasses.asdict(c) for c in checks], indent=2)


# -- helpers ------------------------------------------------------------------------------------------------


UNREACHABLE = "the database cannot be reached"


def _run(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except ImproperlyConfigured as exc:
        return Check(name=name, verdict=Verdict.ERROR, detail=f"the check could not run: {exc}",
                     fix="Fix settings.PGQUEUE or the PGQUEUE_* environment variable named above.")
    except (DatabaseError, psycopg.Error) as exc:
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        alias = get_settings().DATABASE
        if connections[alias].connection is None:  # Django could not even connect
            return Check(name=name, verdict=Verdict.ERROR, detail=f"{UNREACHABLE}: {error}",
                         fix=f"Check DATABASES[{alias!r}] (the alias PGQUEUE['DATABASE'] names) and that the server "
                             "runs and accepts connections from this machine.")
        return Check(name=name, verdict=Verdict.ERROR, detail=f"the check could not run: {error}",
                     fix="Give pgqueue's database user the access the error names (pg_read_all_stats lets it see "
                         "other users' sessions), or run pgqueue_doctor as a user that has it.")
    except Exception as exc:  # a bug: the other checks still run
        return Check(name=name, verdict=Verdict.ERROR,
                     detail=f"the check failed: {type(exc).__name__}: {' '.join(str(exc).split())}",
                     fix="This is a bug in pgqueue_doctor (or a server it does not know): report it with this detail.")


def _declared_indexes() -> list[tuple[str, str, str]]:
    """(table, index, the statement that creates it) for each index and unique constraint of pgqueue's models."""
    editor = connections[get_settings().DATABASE].schema_editor(collect_sql=True)  # renders SQL, runs none
    found = []
    for model in apps.get_app_config(APP).get_models():
        table = model._meta.db_table
        for index in model._meta.indexes:
            found.append((table, index.name, f"{index.create_sql(model, editor, concurrently=True)};"))
        for constraint in model._meta.constraints:
            if isinstance(constraint, UniqueConstraint):
                found.append((table, constraint.name, f"{constraint.create_sql(model, editor)};"))
    return found


def _index_rows(tables: list[str]) -> list[IndexRow]:
    return db.run_in_django(INDEXES, tables=tables)


def _tables() -> list[str]:
    return sorted({m._meta.db_table for m in apps.get_app_config(APP).get_models()})


def _lease_plan(settings: Settings, params: dict[str, Any]) -> list[str]:
    """job_lease's plan on a connection made as a worker's: the driver prepares it (a worker's does after a
    few leases) under plan_cache_mode = force_generic_plan. To prepare it, it runs once with limit 0, which
    leases nothing and locks no job (the driver forgets a statement prepared in a rolled-back transaction)."""
    database = db.Database(params, owner=_owner(), role="doctor")
    try:
        conn = database.connect()
        database.run(sql.session_generic_plans)  # as a worker's connection (whatever PREPARE_STATEMENTS says)
        conn.prepare_threshold = 0
        database.run(sql.job_lease, queues=[settings.DEFAULT_QUEUE], limit=0, worker="pgqueue doctor", lease_seconds=0.0)
        conn.prepare_threshold = None
        prepared = database.run(PREPARED_STATEMENTS)
        if len(prepared) != 1:
            raise RuntimeError(f"expected job_lease alone prepared on the doctor's connection, found {prepared}")
        database.run(PLAN_FUNCTION)
        return [row.line for row in database.run(PLAN, prepared=prepared[0].name)]
    finally:
        database.close()


def _table_line(r: TableRow) -> str:
    total = r.live_rows + r.dead_rows
    dead = f" ({r.dead_rows / total:.0%})" if total else ""
    return (f"{r.table_name}: table {size_text(r.table_bytes)}, indexes {size_text(r.index_bytes)}, {r.live_rows} live and "
            f"{r.dead_rows} dead rows{dead}; vacuumed {_ago(r.last_vacuum, r.now)}"
            f"{' (auto)' if r.last_vacuum is not None and r.last_vacuum == r.last_autovacuum else ''}, analyzed "
            f"{_ago(r.last_analyze, r.now)}"
            f"{' (auto)' if r.last_analyze is not None and r.last_analyze == r.last_autoanalyze else ''}")


def _grace(settings: Settings) -> float:
    """How late maintenance may be before a lease or a silent worker is its fault: ten rounds, at least 5 s."""
    return max(5.0, 10 * settings.MAINTENANCE_SECONDS)


def _leader() -> Leadership | None:
    """The maintenance leader while its lease runs, else None."""
    rows = db.run_in_django(sql.leader_get, role=LEADER_ROLE)
    return rows[0] if rows and rows[0].live else None


def _leader_text(leader: Leadership | None) -> str:
    if leader is None:
        return "no maintenance process leads (none holds an unexpired lead in pgqueue_leader)"
    return f"maintenance process {leader.holder} leads (token {leader.token}) but has not rescued them"


def _maintenance_fix(leader: Leadership | None) -> str:
    if leader is not None:
        return ("The maintenance leader is stuck or failing: read its log (pgqueue_worker, role maintenance) and "
                "restart that pgqueue_worker.")
    return "Run pgqueue_worker (each supervisor runs the maintenance role; one of them leads) on this database."


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    return "never" if when is None else f"{seconds_text((now - when).total_seconds())} ago"
