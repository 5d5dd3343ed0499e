"""W1 on PgQueuer (the fastest Python peer measured here), for benchmarks/run.py's same-run reference.

Runs in its own virtualenv (benchmarks/peer/requirements.txt; never a dependency of pgqueue):

    .venv-peer/bin/python benchmarks/peer/pgqueuer_w1.py DSN [--jobs 20000] [--processes 2]

Installs PgQueuer's schema in the database DSN names (its own database: PgQueuer's tables never mix with
pgqueue's), enqueues the jobs in bulk (one statement per 5,000, as W1 does), then starts `pgq run` with
its CLI defaults (--batch-size 10) in each of --processes processes and times from the first job picked to
the last one finished, from PgQueuer's own log table. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

ENTRYPOINT = "noop"
HERE = Path(__file__).resolve().parent


@contextlib.asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """`pgq run` factory: one async no-op entrypoint (PgQueuer's native kind of job)."""
    connection = await asyncpg.connect(os.environ["PGDSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        return None

    try:
        yield pgq
    finally:
        await connection.close()


async def prepare(dsn: str, jobs: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        installed = await connection.fetchval("SELECT to_regclass('pgqueuer') IS NOT NULL")
        if not installed:
            pgq = Path(sys.executable).parent / "pgq"
            subprocess.run([str(pgq), "install", "--durability", "durable"], check=True, env={**os.environ, "PGDSN": dsn},
                           stdout=subprocess.DEVNULL)
        await connection.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY")
        await connection.execute("VACUUM ANALYZE pgqueuer")
        queries = Queries(AsyncpgDriver(connection))
        for start in range(0, jobs, 5000):
            count = min(5000, jobs - start)
            await queries.enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)
    finally:
        await connection.close()


async def measure(dsn: str, jobs: int) -> dict[str, float]:
    connection = await asyncpg.connect(dsn)
    try:
        first, last, done = await connection.fetchrow(
            "SELECT min(created) FILTER (WHERE status = 'picked'), max(created) FILTER (WHERE status = 'successful'), "
            "count(*) FILTER (WHERE status = 'successful') FROM pgqueuer_log")
        if done != jobs:
            raise SystemExit(f"PgQueuer finished {done} of {jobs} jobs")
        return {"peer_w1_jobs_per_s": jobs / (last - first).total_seconds()}
    finally:
        await connection.close()


async def remaining(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(prepare(args.dsn, args.jobs))
    env = {**os.environ, "PGDSN": args.dsn, "PYTHONPATH": str(HERE)}
    pgq = Path(sys.executable).parent / "pgq"
    procs = [subprocess.Popen([str(pgq), "run", "pgqueuer_w1:create", "--log-level", "WARNING"], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL)
             for _ in range(args.processes)]
    try:
        deadline = time.monotonic() + 300
        while asyncio.run(remaining(args.dsn)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("PgQueuer did not finish the jobs")
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    print(json.dumps(asyncio.run(measure(args.dsn, args.jobs))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
