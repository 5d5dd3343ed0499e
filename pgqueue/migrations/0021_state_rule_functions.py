"""The rules SQL applies in many statements, each written once as a SQL function (each has a Python twin in
pgqueue.lifecycle, tested to agree: tests/integration/test_rules.py):

- pgqueue_runnable_state: where a job that may run goes: 'scheduled' while its run_at is ahead, 'blocked'
  while it needs a semaphore slot it does not hold, else 'ready';
- pgqueue_bucket_tokens: what a token bucket holds at a moment: what it held, refilled at limit per window
  seconds since, never above limit;
- pgqueue_wake_payload: the NOTIFY payload that wakes the workers of a job's queue (',rated:' before the
  queue's name for a job with a rate key: only workers leasing with limits take it);
- pgqueue_process_silent: a process counts as dead once neither its own heartbeat nor its supervisor's
  vouching came within dead_after seconds;
- pgqueue_lease_rescuable: a running job is taken back when its process is dead or gone, or when its lease
  ran out and its worker, alive, no longer holds it (its last heartbeat, which extends every lease it holds,
  came after) or is unknown;
- pgqueue_batch_may_settle: a batch may still fire a callback (it has not finished, or it finished with
  failures within the hour and may still succeed: a dead job retried), so retention keeps its jobs.

Plain SQL expressions, so the planner inlines them (no call per row): each is declared no less volatile than
its body (timestamptz minus an interval depends on the time zone: STABLE), or it would not be inlined."""

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
CREATE OR REPLACE FUNCTION pgqueue_process_silent(last_heartbeat timestamptz, vouched_at timestamptz,
                                                  dead_after float8, at_time timestamptz)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT greatest(last_heartbeat, vouched_at) < at_time - make_interval(secs => dead_after)
$$;
CREATE OR REPLACE FUNCTION pgqueue_lease_rescuable(holder_state text, lease_expires_at timestamptz,
                                                   holder_heartbeat timestamptz, holder_known boolean,
                                                   at_time timestamptz)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(holder_state NOT IN ('running', 'stopping'), false)
        OR (lease_expires_at < at_time AND (NOT holder_known OR lease_expires_at < holder_heartbeat))
$$;
CREATE OR REPLACE FUNCTION pgqueue_batch_may_settle(finished_at timestamptz, succeeded_at timestamptz,
                                                    cancelled_at timestamptz, on_success jsonb)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT finished_at IS NULL
        OR (finished_at > now() - interval '1 hour' AND succeeded_at IS NULL AND cancelled_at IS NULL
            AND on_success IS NOT NULL)
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS pgqueue_runnable_state(timestamptz, text, integer);
DROP FUNCTION IF EXISTS pgqueue_bucket_tokens(float8, timestamptz, float8, float8, timestamptz);
DROP FUNCTION IF EXISTS pgqueue_wake_payload(text, text);
DROP FUNCTION IF EXISTS pgqueue_process_silent(timestamptz, timestamptz, float8, timestamptz);
DROP FUNCTION IF EXISTS pgqueue_lease_rescuable(text, timestamptz, timestamptz, boolean, timestamptz);
DROP FUNCTION IF EXISTS pgqueue_batch_may_settle(timestamptz, timestamptz, timestamptz, jsonb);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0020_rate_window_range"),
    ]

    operations = [migrations.RunSQL(FUNCTIONS, DROP)]
