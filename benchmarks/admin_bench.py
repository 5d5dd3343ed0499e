#!/usr/bin/env python
"""Time the admin's pages with 1,000,000 job rows (median of --runs requests): the job list, the overview, the
queues page and a dead job's page.

    .venv/bin/python benchmarks/admin_bench.py [--rows 1000000] [--runs 5]

Adds admin_changelist_ms, admin_changelist_filtered_ms, admin_overview_ms, admin_queues_ms and
admin_job_page_ms to benchmarks/results/latest.json (other keys are kept). Uses DATABASE_URL or the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.admin_settings"

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

SEED = """
INSERT INTO pgqueue_job (queue, task, args, kwargs, state, priority, run_at, attempts, max_attempts, result,
                         error_class, last_error, reason_code, created_at, started_at, finished_at)
SELECT (ARRAY['default', 'emails', 'reports'])[1 + g %% 3],
       (ARRAY['shop.jobs.send_confirmation', 'shop.jobs.charge_card', 'shop.jobs.build_report'])[1 + g %% 3],
       jsonb_build_array(g), '{}'::jsonb, s.state, 0, t.at, 1, 3,
       CASE WHEN s.state = 'succeeded' THEN '1'::jsonb END,
       CASE WHEN s.state = 'dead' THEN (ARRAY['ConnectionError', 'ValueError'])[1 + g %% 2] ELSE '' END,
       CASE WHEN s.state = 'dead' THEN 'gateway unreachable' ELSE '' END,
       CASE WHEN s.state = 'dead' THEN 'max_attempts' ELSE '' END,
       t.at, CASE WHEN s.state IN ('succeeded', 'dead') THEN t.at END,
       CASE WHEN s.state IN ('succeeded', 'dead') THEN t.at + interval '50 milliseconds' END
FROM generate_series(1, %(rows)s) AS g,
     LATERAL (SELECT CASE WHEN g %% 100 < 95 THEN 'succeeded' WHEN g %% 100 < 98 THEN 'dead'
                          WHEN g %% 100 < 99 THEN 'ready' ELSE 'scheduled' END AS state) s,
     LATERAL (SELECT now() - interval '1 day' * (1 - g::float8 / %(rows)s) AS at) t
"""


STATS = """
INSERT INTO pgqueue_stat (bucket, queue, worker, succeeded, retried, dead, cancelled)
SELECT date_trunc('minute', now()) - m * interval '1 minute', q, w, 300 + (m % 60), 5, m % 7, 0
FROM generate_series(0, 1439) AS m, unnest(ARRAY['default', 'emails', 'reports']) AS q,
     unnest(ARRAY['bench-w0', 'bench-w1']) AS w
"""


def seed(rows: int) -> None:
    with connection.cursor() as cur:
        cur.execute("TRUNCATE pgqueue_attempt, pgqueue_job, pgqueue_workerprocess, pgqueue_auditentry, "
                    "pgqueue_stat")
        cur.execute(SEED, {"rows": rows})
        cur.execute("UPDATE pgqueue_job SET run_at = now() + interval '1 hour' WHERE state = 'scheduled'")
        cur.execute(STATS)
        cur.execute("VACUUM ANALYZE pgqueue_job")


def dead_job_with_attempts() -> int:
    """The newest dead job, given the three failed attempts a dead job's page shows."""
    with connection.cursor() as cur:
        cur.execute("SELECT id, created_at FROM pgqueue_job WHERE state = 'dead' ORDER BY id DESC LIMIT 1")
        job_id, at = cur.fetchone()
        cur.execute("DELETE FROM pgqueue_attempt WHERE job_id = %s", [job_id])
        for number in (1, 2, 3):
            cur.execute("INSERT INTO pgqueue_attempt (job_id, number, worker, started_at, finished_at, duration, "
                        "outcome, error_class, message, traceback) VALUES (%s, %s, 'bench-w0', %s, %s, 0.05, "
                        "'failed', 'ConnectionError', 'ConnectionError: gateway unreachable', "
                        "'Traceback (most recent call last):\nConnectionError: gateway unreachable')",
                        [job_id, number, at, at])
    return job_id


def timed(client: Client, url: str, runs: int) -> float:
    client.get(url)  # warm caches and the template loader
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return round(statistics.median(samples), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latest.json"))
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    seed(args.rows)
    print(f"seeded {args.rows} jobs in {time.perf_counter() - started:.0f} s", flush=True)
    User.objects.filter(username="bench").delete()
    User.objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.login(username="bench", password="bench")
    results = {
        "admin_changelist_ms": timed(client, "/admin/pgqueue/job/", args.runs),
        "admin_changelist_filtered_ms": timed(client, "/admin/pgqueue/job/?state__exact=dead&queue=emails",
                                              args.runs),
        "admin_overview_ms": timed(client, "/admin/pgqueue/", args.runs),
        "admin_queues_ms": timed(client, "/admin/pgqueue/queuestate/", args.runs),
        "admin_job_page_ms": timed(client, f"/admin/pgqueue/job/{dead_job_with_attempts()}/change/", args.runs),
    }
    print(json.dumps(results, indent=2))
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update(results)
    report["admin_rows"] = args.rows
    report["admin_command"] = f"python benchmarks/admin_bench.py --rows {args.rows} --runs {args.runs}"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
