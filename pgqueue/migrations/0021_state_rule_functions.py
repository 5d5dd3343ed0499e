"""The rules SQL applies in many statements, each written once as a SQL function (each has a Python twin in
pgqueue.lifecycle, tested to agree: tests/integration/test_rules.py):

- pgqueue_runnable_state: where a job that may run goes: 'scheduled' while its run_at is ahead, 'blocked'
  while it needs a semaphore slot it does not hold, else 'ready';
- pgqueue_bucket_tokens: what a token bucket holds at a moment: what it held, refilled at limit per window
  seconds since, never above limit;
- pgqueue_wake_payload: the NOTIFY payload that wakes the workers of a job's queue (',rated:' before the
  queue's name for a job with a rate key: only workers leasing with limits take it).

Plain SQL expressions, so the planner inlines them (no call per row)."""

from django.db import migrations

FUNCTIONS = """
CREATE OR REPLACE FUNCTION pgqueue_runnable_state(run_at timestamptz, concurrency_key text, slot integer)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN run_at > now() THEN 'scheduled'
                WHEN concurrency_key IS NOT NULL AND slot IS NULL THEN 'blocked'
                ELSE 'ready' END
$$;
CREATE OR REPLACE FUNCTION pgqueue_bucket_tokens(tokens float8, since timestamptz, lim float8, win float8,
                                                 at_time timestamptz)
RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT LEAST(lim, tokens + EXTRACT(EPOCH FROM at_time - since)::float8 * lim / win)
$$;
CREATE OR REPLACE FUNCTION pgqueue_wake_payload(queue text, rate_key text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN rate_key IS NULL THEN queue ELSE ',rated:' || queue END
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS pgqueue_runnable_state(timestamptz, text, integer);
DROP FUNCTION IF EXISTS pgqueue_bucket_tokens(float8, timestamptz, float8, float8, timestamptz);
DROP FUNCTION IF EXISTS pgqueue_wake_payload(text, text);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0020_rate_window_range"),
    ]

    operations = [migrations.RunSQL(FUNCTIONS, DROP)]
