-- Read-only statements behind the operator's views of the system: the metrics collector, the health view
-- and pgqueue_status (pgqueue.monitor). Each is bounded on a large job table: it reads a partial index of
-- rows that are not history, or a planner estimate, never the whole table.

-- name: monitor_job_counts
-- Jobs per queue and state, and the run_at of each queue's oldest ready job; every branch is one partial
-- index (pgqueue_job_ready, pgqueue_job_rated, pgqueue_job_running, pgqueue_job_blocked_key,
-- pgqueue_job_queue_states).
SELECT queue, 'ready' AS state, count(*) AS count, min(run_at) AS oldest
FROM pgqueue_job WHERE state = 'ready' AND rate_key IS NULL GROUP BY queue
UNION ALL
SELECT queue, 'ready', count(*), min(run_at)
FROM pgqueue_job WHERE state = 'ready' AND rate_key IS NOT NULL GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*), NULL
FROM pgqueue_job WHERE state = 'running' GROUP BY queue
UNION ALL
SELECT queue, 'blocked', count(*), NULL
FROM pgqueue_job WHERE state = 'blocked' GROUP BY queue
UNION ALL
SELECT queue, state, count(*), NULL
FROM pgqueue_job WHERE state IN ('scheduled', 'waiting', 'dead') GROUP BY queue, state;

-- name: monitor_queue_states
-- Every queue with a row of operator state: paused or not and why, its limits, its circuit breaker.
SELECT name, paused, pause_when_empty AS draining, paused_reason, resume_at, concurrency_limit, rate_limit,
    rate_window, breaker_threshold, breaker_failures, breaker_trips
FROM pgqueue_queuestate ORDER BY name;

-- name: monitor_processes
-- Worker processes believed alive (running or stopping), with the database connections each opened and the
-- age of their last heartbeat in seconds.
SELECT id, kind, supervisor_id, hostname, pid, queues, concurrency, connections, state,
    extract(epoch FROM clock_timestamp() - last_heartbeat)::float8 AS heartbeat_age,
    extract(epoch FROM clock_timestamp() - started_at)::float8 AS uptime
FROM pgqueue_workerprocess WHERE state IN ('running', 'stopping') ORDER BY kind, id;

-- name: monitor_totals
-- The rest of the picture in one row: the database's clock, expired leases, the outbox's backlog and
-- its oldest event, uniqueness and idempotency keys held, semaphore slots held, the planner's row
-- estimates of the two history tables, the server's connection limit (less those kept for superusers), and
-- the last job id the database issued: every job any process inserted, counted where a scrape sees it.
SELECT clock_timestamp() AS now,
    (SELECT count(*) FROM pgqueue_job WHERE state = 'running' AND lease_expires_at < now()) AS expired_leases,
    (SELECT count(*) FROM pgqueue_outbox WHERE relayed_at IS NULL) AS outbox_pending,
    (SELECT min(created_at) FROM pgqueue_outbox WHERE relayed_at IS NULL) AS outbox_oldest,
    (SELECT count(*) FROM pgqueue_lock WHERE kind = 'unique' AND NOT released) AS unique_keys,
    (SELECT count(*) FROM pgqueue_lock WHERE kind = 'idempotency') AS idempotency_keys,
    (SELECT count(*) FROM pgqueue_semaphore_slot WHERE job_id IS NOT NULL) AS slots_held,
    (SELECT count(*) FROM pgqueue_semaphore_slot) AS slots,
    -- (NULL for a table never vacuumed or analysed: reltuples is -1 then, not a count)
    (SELECT NULLIF(GREATEST(reltuples, -1), -1)::bigint FROM pg_class WHERE oid = 'pgqueue_job'::regclass) AS job_rows,
    (SELECT NULLIF(GREATEST(reltuples, -1), -1)::bigint FROM pg_class WHERE oid = 'pgqueue_attempt'::regclass)
        AS attempt_rows,
    current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
        AS usable_connections,
    -- (NULL before the first id: 0 jobs)
    coalesce(pg_sequence_last_value(pg_get_serial_sequence('pgqueue_job', 'id')::regclass), 0) AS job_ids_issued;
