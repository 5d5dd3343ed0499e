#!/usr/bin/env python
"""W2 probe (issue #7 section 4): where does a single autocommit enqueue spend its time, and what closes the gap
to a bare psycopg INSERT per transaction (benchmarks/run.py's raw_w2_inserts_per_s)?

    cd /work/main && .tox/py311-django52/bin/python benchmarks/w2_probe/probe.py \
        [--n 150] [--rounds 60] [--wait-quiet 120] [--pgqueue 983427a] [--out FILE]

pgqueue is imported from a read-only snapshot of one commit (git archive into /tmp; default 983427a, the
HEAD this probe was written against), so edits in the working tree do not change what is measured;
--pgqueue=worktree imports the working tree instead. All statement texts are pinned in this file and printed.

Every variant runs --n transactions in a row (one block) on its own connection, after 10 warm-up ones; every
round runs every block once, in a new random order (A/B/A/B...). The table reports, per variant, medians over
rounds of: rows/s, the ratio to the SAME round's reference (mean of two raw_ref blocks), the same ratio with
each block's slowest 2% of ops dropped (this VM stalls), per-op p50 latency, and the split of the mean op time
into client CPU (thread_time), PostgreSQL backend CPU (/proc/<pid>/schedstat) and the rest ("wait": socket
round trip, process wake-ups, the WAL fsync). "@tx" blocks run the same ops inside one transaction
(rolled back), so autocommit minus @tx = what the per-op commit costs.

The machine has 2 cores shared with other sessions: each round records the CPU other processes used, and
the "quiet rounds" table keeps only rounds where that was under --quiet cores. Use DATABASE_URL (default
postgres://postgres@127.0.0.1:54377/pgqueue_h3, migrated with this snapshot).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
BASELINE = "983427a"


def _snapshot(argv: list[str]) -> str:
    """Put a git-archive snapshot of pgqueue at the chosen commit first on sys.path; return its full sha."""
    choice = BASELINE
    for i, a in enumerate(argv):
        if a.startswith("--pgqueue="):
            choice = a.split("=", 1)[1]
        elif a == "--pgqueue" and i + 1 < len(argv):
            choice = argv[i + 1]
    sys.path.insert(0, str(ROOT))
    if choice == "worktree":
        return "working tree"
    sha = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", choice], text=True).strip()
    snap = Path(f"/tmp/w2_probe_pgqueue_{sha[:12]}")
    if not (snap / "pgqueue" / "__init__.py").exists():
        snap.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "pgqueue"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
    sys.path.insert(0, str(snap))
    return sha


SHA = _snapshot(sys.argv[1:])
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:54377/pgqueue_h3")
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.w2_probe.settings"

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.db import connections, transaction  # noqa: E402

import pgqueue  # noqa: E402
from benchmarks import jobs  # noqa: E402
from pgqueue import events, sql  # noqa: E402
from pgqueue.conf import get_settings  # noqa: E402
from pgqueue.db import connection_kwargs  # noqa: E402
from pgqueue.enqueuing import insert, registry  # noqa: E402
from pgqueue.enqueuing import rows as newjobs  # noqa: E402
from pgqueue.enqueuing.handle import JobHandle  # noqa: E402
from pgqueue.exceptions import PayloadTooLarge  # noqa: E402
from pgqueue.sql import QUERIES  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# Statements (pinned)
# ---------------------------------------------------------------------------------------------------------------

BARE = "INSERT INTO pgqueue_job (queue, task) VALUES ('raw', 'raw')"  # benchmarks/run.py's reference, verbatim
FULLROW_LITERAL = (
    "INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout) "
    "VALUES ('bench', 'benchmarks.jobs.noop', '[]'::jsonb, '{}'::jsonb, 0, 'ready', now(), 3, NULL)"
)
BARE_NOTIFY_MULTI = BARE + "; NOTIFY pgqueue, 'raw'"  # two statements in one simple query = one transaction
BARE_NOTIFY_CTE = (
    "WITH i AS (INSERT INTO pgqueue_job (queue, task) VALUES ('raw', 'raw') RETURNING queue) "
    "SELECT pg_notify('pgqueue', queue) FROM i"
)

# J0: job_insert as of 983427a (and 7ae31bd but for the woken column), as pgqueue.sql.load() returns it.
J0_HEAD = """WITH inserted AS (
    INSERT INTO pgqueue_job (id, queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
    VALUES (
        COALESCE(%(id)s::bigint, nextval(pg_get_serial_sequence('pgqueue_job', 'id'))),
        %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
        CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now() THEN 'ready'
             ELSE 'scheduled' END,
        COALESCE(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(timeout)s)
    RETURNING id, queue, state
)
SELECT id, CASE WHEN state = 'ready' THEN (pg_notify(%(channel)s, queue) IS NOT NULL)::int ELSE 0 END AS woken
FROM inserted"""

# J1: J0 with the sequence named directly (no pg_get_serial_sequence catalog lookup per call).
J1_SEQ_NAMED = J0_HEAD.replace("nextval(pg_get_serial_sequence('pgqueue_job', 'id'))",
                               "nextval('pgqueue_job_id_seq'::regclass)")
assert J1_SEQ_NAMED != J0_HEAD

# J2: J0 without the id column (the identity default takes the next id); CTE, CASE and NOTIFY kept.
J2_NO_ID = """WITH inserted AS (
    INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
    VALUES (
        %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
        CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now() THEN 'ready'
             ELSE 'scheduled' END,
        COALESCE(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(timeout)s)
    RETURNING id, queue, state
)
SELECT id, CASE WHEN state = 'ready' THEN (pg_notify(%(channel)s, queue) IS NOT NULL)::int ELSE 0 END AS woken
FROM inserted"""

# J3: J2 without the CTE: the wake-up is a RETURNING expression (same semantics for one row).
J3_RETURNING = """INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
VALUES (
    %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
    CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= now() THEN 'ready'
         ELSE 'scheduled' END,
    COALESCE(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(timeout)s)
RETURNING id, CASE WHEN state = 'ready' THEN (pg_notify(%(channel)s, queue) IS NOT NULL)::int ELSE 0 END AS woken"""

# J4: the ready-now statement (run_at None and id None: the W2 case): no CTE, no CASE, no run_at parameter.
J4_READY = """INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s, 'ready', now(),
        %(max_attempts)s, %(timeout)s)
RETURNING id, (pg_notify(%(channel)s, queue) IS NOT NULL)::int AS woken"""

# J5: J4 without args/kwargs (column defaults '[]'/'{}'): bounds what the jsonb input costs.
J5_READY_NO_JSON = """INSERT INTO pgqueue_job (queue, task, priority, state, run_at, max_attempts, timeout)
VALUES (%(queue)s, %(task)s, %(priority)s, 'ready', now(), %(max_attempts)s, %(timeout)s)
RETURNING id, (pg_notify(%(channel)s, queue) IS NOT NULL)::int AS woken"""

# J6: J4 without the wake-up (NOT acceptable, loses NOTIFY): the bound for "what NOTIFY costs".
J6_READY_NO_NOTIFY = """INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s, 'ready', now(),
        %(max_attempts)s, %(timeout)s)
RETURNING id, 0 AS woken"""

# J7: J6 + a separate NOTIFY statement in the same simple-protocol query (client-side binding only).
J7_SEPARATE_NOTIFY = J6_READY_NO_NOTIFY + ";\nNOTIFY pgqueue, 'bench'"

# J4 as an SQL-level prepared statement (PREPARE once per session, EXECUTE through the client-side cursor).
J4_PREPARE = """PREPARE w2_probe_ready(text, text, jsonb, jsonb, smallint, int, float8, text) AS
INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
VALUES ($1, $2, $3, $4, $5, 'ready', now(), $6, $7)
RETURNING id, (pg_notify($8, queue) IS NOT NULL)::int AS woken"""
J4_EXECUTE = ("EXECUTE w2_probe_ready(%(queue)s, %(task)s, %(args)s, %(kwargs)s, %(priority)s, %(max_attempts)s, "
              "%(timeout)s, %(channel)s)")

STATEMENTS = {
    "BARE": BARE, "FULLROW_LITERAL": FULLROW_LITERAL, "BARE_NOTIFY_MULTI": BARE_NOTIFY_MULTI,
    "BARE_NOTIFY_CTE": BARE_NOTIFY_CTE, "J0_HEAD": J0_HEAD, "J1_SEQ_NAMED": J1_SEQ_NAMED, "J2_NO_ID": J2_NO_ID,
    "J3_RETURNING": J3_RETURNING, "J4_READY": J4_READY, "J5_READY_NO_JSON": J5_READY_NO_JSON,
    "J6_READY_NO_NOTIFY": J6_READY_NO_NOTIFY, "J7_SEPARATE_NOTIFY": J7_SEPARATE_NOTIFY,
    "J4_PREPARE": J4_PREPARE, "J4_EXECUTE": J4_EXECUTE,
}

settings0 = get_settings()
# The parameters pgqueue's _insert passes for jobs.noop.enqueue().
P: dict[str, Any] = {"id": None, "queue": "bench", "task": jobs.noop.name, "args": "[]", "kwargs": "{}",
                     "priority": 0, "run_at": None, "max_attempts": settings0.DEFAULT_MAX_ATTEMPTS,
                     "timeout": settings0.DEFAULT_TIMEOUT, "channel": settings0.NOTIFY_CHANNEL}

# ---------------------------------------------------------------------------------------------------------------
# 7ae31bd's enqueue path (the one issue #7's 52% was measured on), copied so it runs on any snapshot.
# ---------------------------------------------------------------------------------------------------------------

J0_7AE = J0_HEAD.replace(
    "SELECT id, CASE WHEN state = 'ready' THEN (pg_notify(%(channel)s, queue) IS NOT NULL)::int ELSE 0 END AS woken"
    "\nFROM inserted", "SELECT id, CASE WHEN state = 'ready' THEN pg_notify(%(channel)s, queue) END FROM inserted")
assert J0_7AE != J0_HEAD


class Opts7:  # 7ae31bd's JobOptions: a frozen dataclass with 6 fields, built per enqueue
    pass


def _dc() -> None:
    from dataclasses import dataclass, field

    @dataclass(frozen=True, kw_only=True)
    class JobOptions7:
        queue: str | None = None
        priority: int | None = None
        run_at: dt.datetime | None = None
        delay: float | None = None
        max_attempts: int | None = None
        timeout: float | None = None

    @dataclass(frozen=True, kw_only=True)
    class JobCall7:
        job: Any
        args: tuple[Any, ...]
        kwargs: dict[str, Any]
        options: JobOptions7 = field(default_factory=JobOptions7)

    @dataclass(frozen=True, slots=True)
    class Row7:
        queue: str
        task: str
        args: str
        kwargs: str
        priority: int
        run_at: dt.datetime | None
        max_attempts: int
        timeout: float | None

    @dataclass(frozen=True, slots=True)
    class Handle7:
        id: int
        task: str
        queue: str

    globals().update(JobOptions7=JobOptions7, JobCall7=JobCall7, Row7=Row7, Handle7=Handle7)


_dc()


class BoundJob7:
    def __init__(self, job: Any, options: Any) -> None:
        self.job = job
        self.opts = options

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return JobCall7(job=self.job, args=args, kwargs=kwargs, options=self.opts)  # noqa: F821


def _first7(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _check_int7(label: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(label)


def _check_seconds7(label: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or value != value:
        raise ValueError(label)


def _check_queue7(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 100 or "," in name or name != name.strip():
        raise ValueError(name)
    return name


def _has_nul7(text: str) -> bool:
    import re
    return "\\u0000" in text and re.search(r"(?<!\\)(?:\\\\)*\\u0000", text) is not None


def _to_json7(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    if _has_nul7(text):
        raise ValueError("nul")
    return text


def _run_at7(opts: Any) -> Any:
    if opts.run_at is not None and opts.delay is not None:
        raise ValueError("both")
    if opts.run_at is not None:
        return opts.run_at
    if opts.delay is not None and opts.delay > 0:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=opts.delay)
    return None


def _caller_transaction7(alias: str) -> str | None:
    for conn in connections.all(initialized_only=True):
        if conn.alias != alias and conn.in_atomic_block:
            return conn.alias
    return None


def enqueue_7ae31bd() -> Any:
    """jobs.noop.enqueue() as 7ae31bd ran it: BoundJob(JobOptions()) -> JobCall -> enqueue_calls -> _prepare
    -> db.run_in_django(sql.job_insert) (list of tuples) -> events.emit -> JobHandle."""
    call = BoundJob7(jobs.noop, JobOptions7()).call()  # noqa: F821
    settings = get_settings()
    job, opts = call.job, call.options
    queue = _check_queue7(_first7(opts.queue, job.queue, settings.DEFAULT_QUEUE))
    if settings.QUEUES is not None and queue not in settings.QUEUES:
        raise ValueError(queue)
    priority = job.priority if opts.priority is None else opts.priority
    _check_int7("priority", priority, -100, 100)
    max_attempts = _first7(opts.max_attempts, job.max_attempts, settings.DEFAULT_MAX_ATTEMPTS)
    _check_int7("max_attempts", max_attempts, 1, 10_000)
    timeout = _first7(opts.timeout, job.timeout, settings.DEFAULT_TIMEOUT)
    _check_seconds7("timeout", timeout)
    args = _to_json7(list(call.args))
    kwargs = _to_json7(call.kwargs)
    if len(args.encode()) + len(kwargs.encode()) > settings.MAX_PAYLOAD_BYTES:
        raise ValueError("size")
    rows = [Row7(queue=queue, task=job.name, args=args, kwargs=kwargs, priority=priority,  # noqa: F821
                 run_at=_run_at7(opts), max_attempts=max_attempts, timeout=timeout)]
    alias = settings.DATABASE
    if not connections[alias].in_atomic_block:
        assert _caller_transaction7(alias) is None
    r = rows[0]
    with connections[alias].cursor() as cursor:
        cursor.execute(J0_7AE, {"id": None, "queue": r.queue, "task": r.task, "args": r.args, "kwargs": r.kwargs,
                                "priority": r.priority, "run_at": r.run_at, "max_attempts": r.max_attempts,
                                "timeout": r.timeout, "channel": settings.NOTIFY_CHANNEL})
        result = list(cursor.fetchall()) if cursor.description is not None else []
    ids = [row[0] for row in result]
    events.emit("job_enqueued", count=len(ids), queues=sorted({r.queue for r in rows}))
    return [Handle7(id=int(i), task=r.task, queue=r.queue) for r, i in zip(rows, ids, strict=True)][0]  # noqa: F821


# ---------------------------------------------------------------------------------------------------------------
# The candidate, written against 983427a's enqueueing module: the same checks and semantics, less Python per
# call, the ready-now statement J4 when it applies, and a choice of how the statement is executed.
# ---------------------------------------------------------------------------------------------------------------

_RESOLVED: dict[tuple[int, int], tuple[Any, Any, Any, Any]] = {}


def fast_enqueue_calls(calls: list[Any], execute: Callable[[Any, str, dict[str, Any]], tuple[int, int]],
                       alias_override: str | None = None) -> list[Any]:
    settings = get_settings()
    rows = []
    for call in calls:
        job, opts = call.job, call.options
        # _resolve (queue, priority, max_attempts, timeout checks, message labels) once per (job, options,
        # settings); only for options without run_at/delay, whose resolution depends on the clock.
        hit = _RESOLVED.get((id(job), id(opts)))
        if hit is not None and hit[0] is job and hit[1] is opts and hit[2] is settings and registry.is_registered(job):
            resolved = hit[3]
        else:
            resolved = newjobs.resolve(call.job, call.options, settings, dt.datetime.now(dt.UTC))
            if opts.run_at is None and opts.delay is None:
                _RESOLVED[(id(job), id(opts))] = (job, opts, settings, resolved)
        job.check_arguments(call.args, call.kwargs)
        # No encoder call for the common empty () / {}; otherwise 983427a's _to_json unchanged.
        args = newjobs.to_json(list(call.args), job.name, "positional arguments") if call.args else "[]"
        kwargs = newjobs.to_json(call.kwargs, job.name, "keyword arguments") if call.kwargs else "{}"
        if ((len(args) + len(kwargs)) * 4 > settings.MAX_PAYLOAD_BYTES  # UTF-8: at most 4 bytes a character
                and len(args.encode()) + len(kwargs.encode()) > settings.MAX_PAYLOAD_BYTES):
                raise PayloadTooLarge(f"Job {job.name}: arguments too large")
        rows.append(newjobs.NewJob(queue=resolved.queue, task=job.name, args=args, kwargs=kwargs,
                                    priority=resolved.priority, run_at=resolved.run_at,
                                    max_attempts=resolved.max_attempts, timeout=resolved.timeout))
    alias = alias_override or settings.DATABASE
    conn = connections[alias]
    if not conn.in_atomic_block:
        caller = insert._caller_transaction(alias)
        assert caller is None  # (the deferred path is unchanged)
    r = rows[0]
    assert len(rows) == 1 and r.run_at is None  # else: 983427a's _insert, unchanged
    job_id, _woken = execute(conn, J4_READY, {
        "queue": r.queue, "task": r.task, "args": r.args, "kwargs": r.kwargs, "priority": r.priority,
        "max_attempts": r.max_attempts, "timeout": r.timeout, "channel": settings.NOTIFY_CHANNEL})
    if events.has_subscribers("job_enqueued"):
        events.emit("job_enqueued", count=1, queues=[r.queue])
    return [JobHandle(id=job_id, task=r.task, queue=r.queue)]


def execute_django(conn: Any, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    """Through Django's CursorWrapper, as pgqueue.db.run_in_django does (ClientCursor unless the alias sets
    server_side_binding), with the row read positionally."""
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def execute_raw_client(conn: Any, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    """Django's psycopg connection with a psycopg ClientCursor, no CursorWrapper (Django's error classes kept,
    but no execute_wrappers and no connection.queries)."""
    conn.ensure_connection()
    conn.validate_no_broken_transaction()
    with conn.wrap_database_errors, psycopg.ClientCursor(conn.connection) as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def execute_raw_prepared(conn: Any, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    """Django's psycopg connection with a server-binding psycopg Cursor: the statement is prepared on first
    use. Django sets prepare_threshold=None (psycopg then never prepares, even with prepare=True), so it is
    set to 0 around this one execute and put back."""
    conn.ensure_connection()
    conn.validate_no_broken_transaction()
    raw = conn.connection
    saved = raw.prepare_threshold
    raw.prepare_threshold = 0
    try:
        with conn.wrap_database_errors, psycopg.Cursor(raw) as cur:
            cur.execute(sql, params)
            return cur.fetchone()
    finally:
        raw.prepare_threshold = saved


def execute_wrapped_prepared(conn: Any, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    """As execute_raw_prepared, but the psycopg Cursor is wrapped in Django's CursorWrapper the way
    connection.cursor() wraps its own (make_cursor / make_debug_cursor): execute_wrappers, connection.queries,
    assertNumQueries and error translation all still see the statement."""
    conn.ensure_connection()
    raw = conn.connection
    wrap = conn.make_debug_cursor if conn.queries_logged else conn.make_cursor
    saved = raw.prepare_threshold
    raw.prepare_threshold = 0
    try:
        with wrap(psycopg.Cursor(raw)) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    finally:
        raw.prepare_threshold = saved


def make_fast(execute: Callable[[Any, str, dict[str, Any]], tuple[int, int]],
              alias: str | None = None) -> Callable[[], Any]:
    from pgqueue.enqueuing.options import JobCall

    def fast_enqueue() -> Any:  # = jobs.noop.enqueue(): JobFunction.enqueue builds JobCall(job, args, kwargs)
        return fast_enqueue_calls([JobCall(job=jobs.noop, args=(), kwargs={})], execute, alias)[0]

    return fast_enqueue


# ---------------------------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------------------------

DSN_KW = connection_kwargs("default")


class Variant:
    """An op (one transaction in autocommit), the backend pid serving it, how to wrap a block in one
    transaction (tx) and what to run before a block (setup)."""

    def __init__(self, name: str, what: str, op: Callable[[], Any], pid: int,
                 tx: Callable[[], Any] | None = None, in_tx: bool = False,
                 setup: Callable[[], Any] | None = None) -> None:
        self.name, self.what, self.op, self.pid = name, what, op, pid
        self.tx, self.in_tx, self.setup = tx, in_tx, setup


def psy(prepare_threshold: int | None, client: bool = False) -> psycopg.Connection[Any]:
    kw: dict[str, Any] = {**DSN_KW, "autocommit": True, "prepare_threshold": prepare_threshold}
    if client:
        kw["cursor_factory"] = psycopg.ClientCursor
    conn = psycopg.connect(**kw)
    conn.execute("SET application_name = 'w2_probe'")
    return conn


def django_pid(alias: str) -> int:
    connections[alias].ensure_connection()
    return int(connections[alias].connection.info.backend_pid)


def django_op(alias: str, sql: str) -> Callable[[], Any]:
    def op() -> Any:  # = pgqueue.db.run_in_django + run (without the typed-row check)
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, P)
            return cursor.fetchall() if cursor.description is not None else []
    return op


def psy_op(conn: psycopg.Connection[Any], sql: str, with_params: bool = True) -> Callable[[], Any]:
    if with_params:
        def op() -> Any:
            cur = conn.execute(sql, P)
            return cur.fetchall() if cur.description else []
    else:
        def op() -> Any:  # exactly run.py's conn.execute(...)
            return conn.execute(sql)
    return op


def psy_tx(conn: psycopg.Connection[Any]) -> Callable[[], Any]:
    return lambda: conn.transaction(force_rollback=True)


def dj_tx(alias: str) -> Callable[[], Any]:
    class Atomic:
        def __enter__(self) -> None:
            self.a = transaction.atomic(using=alias)
            self.a.__enter__()

        def __exit__(self, *exc: Any) -> None:
            transaction.set_rollback(True, using=alias)
            self.a.__exit__(None, None, None)
    return Atomic


def build_variants() -> list[Variant]:
    v: list[Variant] = []
    ref, ref_b, noprep, client, srv, srv_prep = psy(5), psy(5), psy(None), psy(None, True), psy(None), psy(5)
    pid = lambda c: int(c.info.backend_pid)  # noqa: E731
    # References. run.py: psycopg.connect(**connection_kwargs(), autocommit=True): prepare_threshold 5.
    v.append(Variant("raw_ref", "psycopg, BARE (run.py's raw_w2 verbatim: prepared after 5 runs)",
                     psy_op(ref, BARE, False), pid(ref), psy_tx(ref)))
    v.append(Variant("raw_ref_b", "the same on a 2nd connection (noise check)", psy_op(ref_b, BARE, False),
                     pid(ref_b)))
    v.append(Variant("raw_ref_noprep", "BARE, prepare_threshold=None: parsed and planned every time",
                     psy_op(noprep, BARE, False), pid(noprep), psy_tx(noprep)))
    v.append(Variant("raw_fullrow", "FULLROW_LITERAL: all of job_insert's columns as literals, prepared",
                     psy_op(ref, FULLROW_LITERAL, False), pid(ref)))
    v.append(Variant("raw_notify_multi", "BARE; NOTIFY (one simple query, one transaction), not prepared",
                     psy_op(noprep, BARE_NOTIFY_MULTI, False), pid(noprep), psy_tx(noprep)))
    v.append(Variant("raw_notify_cte", "BARE_NOTIFY_CTE (CTE + pg_notify), not prepared",
                     psy_op(noprep, BARE_NOTIFY_CTE, False), pid(noprep)))
    # J0 through each route.
    v.append(Variant("J0_django", "J0 via Django's default cursor (ClientCursor: client-side binding, never "
                     "prepared)", django_op("default", J0_HEAD), django_pid("default"), dj_tx("default")))
    v.append(Variant("J0_psy_client", "J0 via psycopg ClientCursor, no Django", psy_op(client, J0_HEAD), pid(client)))
    v.append(Variant("J0_psy_server", "J0 via psycopg Cursor (server-side binding), not prepared",
                     psy_op(srv, J0_HEAD), pid(srv)))
    v.append(Variant("J0_psy_server_prep", "J0 via psycopg Cursor, prepare_threshold=5 (prepared)",
                     psy_op(srv_prep, J0_HEAD), pid(srv_prep)))
    v.append(Variant("J0_django_ssb", "J0 via Django OPTIONS server_side_binding=True (not prepared)",
                     django_op("ssb", J0_HEAD), django_pid("ssb")))
    v.append(Variant("J0_django_ssb_prep", "J0 via Django OPTIONS server_side_binding=True, prepare_threshold=5",
                     django_op("ssb_prep", J0_HEAD), django_pid("ssb_prep")))
    # Statement variants through Django's default cursor.
    for key in ("J1_SEQ_NAMED", "J2_NO_ID", "J3_RETURNING", "J4_READY", "J5_READY_NO_JSON",
                "J6_READY_NO_NOTIFY", "J7_SEPARATE_NOTIFY"):
        tx = dj_tx("default") if key in ("J4_READY", "J6_READY_NO_NOTIFY") else None
        v.append(Variant(key.split("_")[0] + "_django", f"{key} via Django's default cursor",
                         django_op("default", STATEMENTS[key]), django_pid("default"), tx))
    # J4 through the other routes.
    v.append(Variant("J4_django_ssb_prep", "J4 via Django server_side_binding + prepare_threshold=5",
                     django_op("ssb_prep", J4_READY), django_pid("ssb_prep")))
    v.append(Variant("J4_psy_server_prep", "J4 via psycopg Cursor, prepare_threshold=5 (prepared)",
                     psy_op(srv_prep, J4_READY), pid(srv_prep)))

    def ensure_sql_prepared() -> None:
        # psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection where it has prepared statements
        # (E_fast_prep, then an @tx block), which drops this SQL-level one too: PREPARE again if gone.
        with connections["default"].cursor() as c:
            c.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'w2_probe_ready'")
            if not c.fetchone()[0]:
                c.execute(J4_PREPARE)
    v.append(Variant("J4_django_sqlprep", "J4_EXECUTE (SQL PREPARE'd J4) via Django's default cursor",
                     django_op("default", J4_EXECUTE), django_pid("default"), setup=ensure_sql_prepared))
    v.append(Variant("J4_psy_client", "J4 via psycopg ClientCursor, no Django", psy_op(client, J4_READY),
                     pid(client)))
    # Whole enqueue paths.
    v.append(Variant("E_head", f"jobs.noop.enqueue(), pgqueue {SHA[:7]} as is", lambda: jobs.noop.enqueue(),
                     django_pid("default"), dj_tx("default")))
    v.append(Variant("E_7ae31bd", "jobs.noop.enqueue() as 7ae31bd ran it (copied path)", enqueue_7ae31bd,
                     django_pid("default")))
    v.append(Variant("E_fast", "candidate Python + J4 via Django's CursorWrapper (ClientCursor)",
                     make_fast(execute_django), django_pid("default"), dj_tx("default")))
    v.append(Variant("E_fast_rawcur", "candidate Python + J4 via a psycopg ClientCursor on Django's connection",
                     make_fast(execute_raw_client), django_pid("default")))
    v.append(Variant("E_fast_prep", "candidate Python + J4 prepared on Django's connection (psycopg Cursor, "
                     "prepare_threshold 0 around the call)", make_fast(execute_raw_prepared),
                     django_pid("default"), dj_tx("default")))
    v.append(Variant("E_fast_prep_wrapped", "as E_fast_prep, the psycopg Cursor wrapped in Django's "
                     "CursorWrapper (connection.make_cursor)", make_fast(execute_wrapped_prepared),
                     django_pid("default")))
    v.append(Variant("E_fast_ssb_prep", "candidate Python + J4 via Django's CursorWrapper on an alias with "
                     "server_side_binding + prepare_threshold=5", make_fast(execute_django, "ssb_prep"),
                     django_pid("ssb_prep")))
    return v


# ---------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------

ADMIN = psycopg.connect(**DSN_KW, autocommit=True)


def reset() -> None:
    ADMIN.execute("TRUNCATE pgqueue_attempt, pgqueue_job RESTART IDENTITY")


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def busy_ns() -> int:
    """Non-idle CPU time of the whole machine (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) * (10**9 // os.sysconf("SC_CLK_TCK"))


def run_block(var: Variant, n: int) -> dict[str, float]:
    if var.setup is not None:
        var.setup()
    op = var.op
    ctx = var.tx() if var.in_tx else None
    if ctx is not None:
        ctx.__enter__()
    try:
        for _ in range(10):  # warm-up: wakes the backend, prepares statements
            op()
        lat = [0] * n
        pc = time.perf_counter_ns
        s0, c0, t0 = cpu_ns(var.pid), time.thread_time_ns(), pc()
        for i in range(n):
            a = pc()
            op()
            lat[i] = pc() - a
        t1, c1, s1 = pc(), time.thread_time_ns(), cpu_ns(var.pid)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    lat.sort()
    kept = lat[: n - max(1, n // 50)]  # the slowest 2% dropped: stalls of this VM, not the variant
    return {"per_s": n / ((t1 - t0) / 1e9), "trim_per_s": len(kept) / (sum(kept) / 1e9),
            "p50_us": statistics.median(lat) / 1000, "mean_us": (t1 - t0) / n / 1000,
            "client_cpu_us": (c1 - c0) / n / 1000, "server_cpu_us": (s1 - s0) / n / 1000}


def python_only(reps: int) -> dict[str, float]:
    """µs per call of the Python around the statement: the psycopg cursor's execute/fetch stubbed out (no
    database), Django's CursorWrapper and the psycopg cursor object kept. Interleaved, median of 9."""
    conn = connections["default"]
    conn.ensure_connection()
    pc = time.perf_counter_ns

    class FakeCursor:
        description = (type("D", (), {"name": "id"})(), type("D", (), {"name": "woken"})())

        def execute(self, sql: str, params: Any = None) -> None:
            pass

        def fetchall(self) -> list[tuple[int, int]]:
            return [(1, 1)]

        def fetchone(self) -> tuple[int, int]:
            return (1, 1)

        def close(self) -> None:
            pass

    real_create = conn.create_cursor

    def fake_create(name: Any = None) -> Any:
        real_create(name).close()  # keep the cost of making the psycopg cursor
        return FakeCursor()

    from pgqueue.enqueuing.options import JobCall
    settings = get_settings()
    call = JobCall(job=jobs.noop, args=(), kwargs={})
    fns: dict[str, Callable[[], Any]] = {
        f"E_head ({SHA[:7]}) jobs.noop.enqueue(), no DB": lambda: jobs.noop.enqueue(),
        "E_7ae31bd, no DB": enqueue_7ae31bd,
        "E_fast (candidate Python, CursorWrapper), no DB": make_fast(execute_django),
        "piece: JobCall(job, (), {})": lambda: JobCall(job=jobs.noop, args=(), kwargs={}),
        "piece: _resolve(call, settings, now)": lambda: newjobs.resolve(call.job, call.options, settings, dt.datetime.now(dt.UTC)),
        "piece: _prepare(call, resolved, settings)": (
            lambda r=newjobs.resolve(call.job, call.options, settings, dt.datetime.now(dt.UTC)):  # noqa: B008
            newjobs.prepare(call, r, settings)),
        "piece: connections[alias].in_atomic_block + _caller_transaction": (
            lambda: connections["default"].in_atomic_block or insert._caller_transaction("default")),
        "piece: events.emit + sorted(set)": lambda: events.emit("job_enqueued", count=1, queues=sorted({"bench"})),
        "piece: JobHandle": lambda: JobHandle(id=1, task="t", queue="q"),
        "piece: Django cursor() + close, no execute": lambda: connections["default"].cursor().close(),
        "piece: Django cursor + execute + fetchall (stubbed)": django_op("default", J0_HEAD),
        "piece: db.run_in_django('job_insert') (stubbed execute)": lambda: __import__("pgqueue.db").db.run_in_django(
            sql.job_insert, using="default", **P),
    }
    conn.create_cursor = fake_create  # type: ignore[method-assign]
    try:
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(9):
            for k, fn in fns.items():
                t0 = pc()
                for _ in range(reps):
                    fn()
                samples[k].append((pc() - t0) / reps / 1000)
    finally:
        del conn.create_cursor
    out = {k: statistics.median(v) for k, v in samples.items()}
    # Client-side binding (ClientCursor.mogrify: what execute does before sending), a real cursor.
    c = psy(None, client=True)
    cur = c.cursor()
    for key in ("J0_HEAD", "J4_READY"):
        s = []
        for _ in range(9):
            t0 = pc()
            for _ in range(reps):
                cur.mogrify(STATEMENTS[key], P)
            s.append((pc() - t0) / reps / 1000)
        out[f"piece: ClientCursor.mogrify({key})"] = statistics.median(s)
    c.close()
    return out


def explain_times(reps: int) -> dict[str, dict[str, float]]:
    """Server-side planning and execution time per statement (EXPLAIN ANALYZE, SUMMARY), median of reps."""
    conn = psy(None, client=True)
    out = {}
    for key in ("BARE", "FULLROW_LITERAL", "BARE_NOTIFY_CTE", "J0_HEAD", "J1_SEQ_NAMED", "J2_NO_ID",
                "J3_RETURNING", "J4_READY", "J5_READY_NO_JSON", "J6_READY_NO_NOTIFY"):
        text = conn.cursor().mogrify(STATEMENTS[key], P) if "%(" in STATEMENTS[key] else STATEMENTS[key]
        plan, exe = [], []
        with conn.transaction(force_rollback=True):
            for _ in range(reps):
                row = conn.execute("EXPLAIN (ANALYZE, SUMMARY, TIMING OFF, FORMAT JSON) " + text).fetchone()[0]
                plan.append(row[0]["Planning Time"] * 1000)
                exe.append(row[0]["Execution Time"] * 1000)
        out[key] = {"planning_us": statistics.median(plan), "execution_us": statistics.median(exe)}
    conn.close()
    return out


def profile(fn: Callable[[], Any], n: int) -> str:
    reset()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
    return s.getvalue()


def summarize(variants: list[Variant], results: dict[str, list[dict[str, float]]],
              ratios: dict[str, dict[str, list[float]]], idx: list[int]) -> dict[str, dict[str, float]]:
    table = {}
    print("ratio = per_s / the same round's reference (mean of the raw_ref and raw_ref_b blocks), median over "
          "rounds, [interquartile range]; trim = the same with each block's slowest 2% of ops dropped; p50r = "
          "reference p50 / variant p50. µs columns: medians over rounds of the per-op mean and its split.")
    print(f"{'variant':20} {'per_s':>6} {'ratio':>6} {'[q1':>5} {'q3]':>5} {'trim':>6} {'p50r':>6} {'p50':>5} "
          f"{'mean':>5} {'cli':>5} {'srv':>5} {'wait':>5}  what")
    for var in variants:
        res = [results[var.name][i] for i in idx]
        row = {k: statistics.median(r[k] for r in res)
               for k in ("per_s", "p50_us", "mean_us", "client_cpu_us", "server_cpu_us")}
        rr = [ratios["mean"][var.name][i] for i in idx]
        row["ratio"] = statistics.median(rr)
        q = statistics.quantiles(rr, n=4) if len(rr) > 1 else [rr[0]] * 3
        row["ratio_q1"], row["ratio_q3"] = q[0], q[2]
        row["ratio_trim"] = statistics.median(ratios["trim"][var.name][i] for i in idx)
        row["ratio_p50"] = statistics.median(ratios["p50"][var.name][i] for i in idx)
        row["wait_us"] = row["mean_us"] - row["client_cpu_us"] - row["server_cpu_us"]
        table[var.name] = row
        print(f"{var.name:20} {row['per_s']:6.0f} {row['ratio']:6.3f} {row['ratio_q1']:5.2f} {row['ratio_q3']:5.2f} "
              f"{row['ratio_trim']:6.3f} {row['ratio_p50']:6.3f} {row['p50_us']:5.0f} {row['mean_us']:5.0f} "
              f"{row['client_cpu_us']:5.0f} {row['server_cpu_us']:5.0f} {row['wait_us']:5.0f}  {var.what}")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pgqueue", default=BASELINE, help="commit to snapshot pgqueue from, or 'worktree'")
    ap.add_argument("--n", type=int, default=150, help="transactions per block")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--only", default="", help="comma-separated variant names (raw_ref, raw_ref_b always run)")
    ap.add_argument("--no-tx", action="store_true", help="skip the @tx (one transaction) blocks")
    ap.add_argument("--skip-extras", action="store_true", help="skip the Python-only, EXPLAIN and profile parts")
    ap.add_argument("--quiet", type=float, default=0.15,
                    help="a round is quiet when other processes used less than this many cores during it")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each round, wait up to this many seconds for the machine to be idle")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()

    print("PostgreSQL:", ADMIN.execute("SELECT version()").fetchone()[0])
    print("fsync, synchronous_commit:",
          ADMIN.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')").fetchone())
    print("Django", django.get_version(), "| psycopg", psycopg.__version__, psycopg.pq.__impl__,
          "| pgqueue from", Path(pgqueue.__file__).parent, "=", SHA)
    print("\n=== statements (pinned in this file) ===")
    for k, s in STATEMENTS.items():
        print(f"--- {k}\n{s}")
    if QUERIES["job_insert"] != J0_HEAD:
        print("!! the imported pgqueue's job_insert differs from J0_HEAD; E_head runs:\n" + QUERIES["job_insert"])
    print("params:", P)

    variants = build_variants()
    if args.only:
        keep = {"raw_ref", "raw_ref_b", *[x.strip() for x in args.only.split(",")]}
        variants = [v for v in variants if v.name in keep]
    for var in variants:  # every variant must work before anything is timed
        reset()
        if var.setup is not None:
            var.setup()
        var.op()
    if not args.no_tx:
        variants += [Variant(v.name + "@tx", "in one transaction: " + v.what, v.op, v.pid, v.tx, True, v.setup)
                     for v in variants if v.tx is not None]

    results: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    ratios: dict[str, dict[str, list[float]]] = {k: {v.name: [] for v in variants} for k in ("mean", "trim", "p50")}
    foreign: list[float] = []

    def wait_quiet() -> None:
        deadline = time.monotonic() + args.wait_quiet
        while time.monotonic() < deadline:
            b0, t0 = busy_ns(), time.perf_counter_ns()
            time.sleep(1.0)
            if (busy_ns() - b0) / (time.perf_counter_ns() - t0) < args.quiet / 2:
                return
            time.sleep(2.0)

    started = time.monotonic()
    pids = sorted({v.pid for v in variants} | {int(ADMIN.info.backend_pid)})
    for rnd in range(args.rounds):
        if args.wait_quiet:
            wait_quiet()
        order = variants[:]
        random.Random(rnd).shuffle(order)
        own0, busy0, wall0 = sum(cpu_ns(p) for p in pids) + time.process_time_ns(), busy_ns(), time.perf_counter_ns()
        reset()  # once per round: the table grows to (blocks x n) rows during the round
        this = {var.name: run_block(var, args.n) for var in order}
        own1, busy1, wall1 = sum(cpu_ns(p) for p in pids) + time.process_time_ns(), busy_ns(), time.perf_counter_ns()
        # CPU that anything else used meanwhile (other sessions, PostgreSQL's background processes, the kernel),
        # in cores.
        foreign.append(max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)))
        ref = {k: (this["raw_ref"][k] + this["raw_ref_b"][k]) / 2 for k in ("per_s", "trim_per_s", "p50_us")}
        for name, res in this.items():
            results[name].append(res)
            ratios["mean"][name].append(res["per_s"] / ref["per_s"])
            ratios["trim"][name].append(res["trim_per_s"] / ref["trim_per_s"])
            ratios["p50"][name].append(ref["p50_us"] / res["p50_us"])
        print(f"round {rnd + 1}/{args.rounds} ({time.monotonic() - started:.0f}s, other load {foreign[-1]:.2f} "
              f"cores): ref {ref['per_s']:.0f}/s; " + ", ".join(
                  f"{k} {this[k]['per_s'] / ref['per_s']:.2f}" for k in sorted(this) if k.startswith("E_")),
              flush=True)

    everything = list(range(len(foreign)))
    quiet = [i for i, f in enumerate(foreign) if f < args.quiet]
    print(f"\nother load per round (cores): median {statistics.median(foreign):.2f}; {len(quiet)} of "
          f"{len(foreign)} rounds under --quiet {args.quiet}")
    tables = {}
    for label, idx in (("all rounds", everything), ("quiet rounds", quiet)):
        if not idx:
            continue
        print(f"\n=== {label}: {len(idx)} rounds of {args.n} transactions per block ===")
        tables[label] = summarize(variants, results, ratios, idx)
    commit = {}
    tx_names = [v.name for v in variants if v.in_tx]
    if tx_names:
        print("\n=== per-op commit cost, µs: autocommit mean - the same op's @tx mean (per round; median, all rounds) ===")
        for name in tx_names:
            base = name[:-3]
            d = [a["mean_us"] - b["mean_us"] for a, b in zip(results[base], results[name], strict=True)]
            cpu = [(a["server_cpu_us"] - b["server_cpu_us"]) for a, b in zip(results[base], results[name], strict=True)]
            commit[base] = {"wall_us": statistics.median(d), "server_cpu_us": statistics.median(cpu)}
            print(f"{base:20} wall {statistics.median(d):6.0f}   backend CPU {statistics.median(cpu):6.0f}")
    report: dict[str, Any] = {
        "pgqueue": SHA, "n": args.n, "rounds": args.rounds, "tables": tables, "commit_cost_us": commit,
        "other_load_per_round": foreign, "quiet_rounds": quiet, "runs": results, "ratios": ratios,
        "statements": STATEMENTS, "variants": {v.name: v.what for v in variants},
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if not args.skip_extras:
        print("\n=== Python only (psycopg execute stubbed), µs per call, median of 9 interleaved ===")
        report["python_only_us"] = python_only(2000)
        for k, val in report["python_only_us"].items():
            print(f"{k:62} {val:7.1f}")
        print("\n=== EXPLAIN (ANALYZE, SUMMARY) server times, µs, median of 200 ===")
        report["explain_us"] = explain_times(200)
        for k, val in report["explain_us"].items():
            print(f"{k:20} planning {val['planning_us']:6.1f}  execution {val['execution_us']:6.1f}")
        for label, fn in (("E_head", lambda: jobs.noop.enqueue()), ("E_fast", make_fast(execute_django))):
            report[f"profile_{label}"] = prof = profile(fn, 2000)
            print(f"\n=== cProfile {label}, real database, 2000 enqueues, top 20 by own time ===\n{prof}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
