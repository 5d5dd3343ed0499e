-- The statements of manage.py pgqueue_doctor (pgqueue/doctor.py): catalogs, statistics and server views that
-- say whether the database side of pgqueue is healthy. They change nothing (doctor_plan_function creates a
-- function in the doctor's own session's temporary schema). Parameters are %(name)s.

-- name: doctor_indexes
-- Every index on the named tables (those visible on the search path), and whether it is valid and ready.
SELECT t.relname AS table_name, i.relname AS index_name, x.indisvalid AS valid, x.indisready AS ready
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = ANY(%(tables)s::text[]) AND pg_table_is_visible(t.oid)
ORDER BY t.relname, i.relname;

-- name: doctor_prepared_statements
-- The statements this connection's driver prepared (not those of SQL PREPARE), with their parameter count.
SELECT name, cardinality(parameter_types) AS parameters
FROM pg_prepared_statements
WHERE NOT from_sql
ORDER BY prepare_time;

-- name: doctor_plan_function
-- Create pg_temp.pgqueue_doctor_plan(name): the EXPLAIN lines of a prepared statement, every parameter NULL
-- (a generic plan does not look at them). It lives in this session's temporary schema, gone at disconnect.
CREATE FUNCTION pg_temp.pgqueue_doctor_plan(prepared text) RETURNS TABLE (line text) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE (
        SELECT format('EXPLAIN EXECUTE %%I(%%s)', p.name,
                      array_to_string(array_fill('NULL'::text, ARRAY[cardinality(p.parameter_types)]), ', '))
        FROM pg_prepared_statements p WHERE p.name = prepared);
END
$$;

-- name: doctor_plan
-- The plan this session keeps for a prepared statement (generic under plan_cache_mode = force_generic_plan).
SELECT line FROM pg_temp.pgqueue_doctor_plan(%(prepared)s);

-- name: doctor_table_sizes
-- Size on disk (with TOAST), index size, live and dead rows and last (auto)vacuum/analyze of the tables.
SELECT c.relname AS table_name, pg_table_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes,
    COALESCE(s.n_live_tup, 0) AS live_rows, COALESCE(s.n_dead_tup, 0) AS dead_rows,
    GREATEST(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
    GREATEST(s.last_analyze, s.last_autoanalyze) AS last_analyze, s.last_autovacuum, s.last_autoanalyze,
    now() AS now
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relname = ANY(%(tables)s::text[]) AND c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)
ORDER BY pg_total_relation_size(c.oid) DESC, c.relname;

-- name: doctor_autovacuum
-- The server's autovacuum settings next to the table's own (reloptions; autovacuum_enabled is listed as
-- autovacuum), one row per setting.
SELECT s.name, s.setting AS server_value, o.value AS table_value
FROM pg_settings s
LEFT JOIN (
    SELECT CASE split_part(opt, '=', 1) WHEN 'autovacuum_enabled' THEN 'autovacuum'
                ELSE split_part(opt, '=', 1) END AS name,
        substr(opt, strpos(opt, '=') + 1) AS value
    FROM pg_class c CROSS JOIN unnest(c.reloptions) AS opt
    WHERE c.oid = %(table)s::regclass
) o ON o.name = s.name
WHERE s.name IN ('autovacuum', 'track_counts', 'autovacuum_naptime', 'autovacuum_vacuum_scale_factor',
                 'autovacuum_vacuum_threshold', 'autovacuum_analyze_scale_factor', 'autovacuum_analyze_threshold',
                 'autovacuum_vacuum_cost_delay')
ORDER BY s.name;

-- name: doctor_expired_leases
-- Running jobs whose lease expired more than %(grace)s seconds ago: how many, the oldest, the first few ids.
SELECT count(*) AS count, EXTRACT(EPOCH FROM now() - min(lease_expires_at))::float8 AS oldest_seconds,
    COALESCE((array_agg(id ORDER BY lease_expires_at))[1:5], '{}') AS ids
FROM pgqueue_job
WHERE state = 'running' AND lease_expires_at < now() - make_interval(secs => %(grace)s);

-- name: doctor_dead_workers
-- Processes still marked running or stopping that neither heartbeat nor were vouched for by their supervisor
-- for %(dead_after)s seconds (workerprocess_reap's rule), the longest silent first, with the jobs they hold.
SELECT w.id, w.kind, w.hostname, w.pid, w.state,
    EXTRACT(EPOCH FROM now() - greatest(w.last_heartbeat, w.vouched_at))::float8 AS silent_seconds,
    (SELECT count(*) FROM pgqueue_job j WHERE j.state = 'running' AND j.leased_by = w.id) AS running_jobs
FROM pgqueue_workerprocess w
WHERE w.state IN ('running', 'stopping')
  AND pgqueue_process_silent(w.last_heartbeat, w.vouched_at, %(dead_after)s, now())
ORDER BY greatest(w.last_heartbeat, w.vouched_at)
LIMIT %(limit)s;

-- name: doctor_long_transactions
-- Sessions of any database of the server (but this one) in a transaction open longer than %(older_than)s
-- seconds that holds back VACUUM (it has a transaction id or a snapshot) or sits idle in transaction.
SELECT a.pid, COALESCE(a.datname, '') AS database, COALESCE(a.usename, '') AS username,
    COALESCE(a.application_name, '') AS application_name, COALESCE(a.state, '') AS state,
    EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS xact_seconds,
    EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_seconds,
    a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL AS holds_xmin,
    left(regexp_replace(COALESCE(a.query, ''), '\s+', ' ', 'g'), 100) AS query
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND a.xact_start < now() - make_interval(secs => %(older_than)s)
  AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL
       OR a.state IN ('idle in transaction', 'idle in transaction (aborted)'))
ORDER BY a.xact_start
LIMIT %(limit)s;

-- name: doctor_prepared_transactions
-- Two-phase transactions prepared more than %(older_than)s seconds ago (each holds back VACUUM everywhere).
SELECT gid, database, owner, EXTRACT(EPOCH FROM now() - prepared)::float8 AS age_seconds
FROM pg_prepared_xacts
WHERE prepared < now() - make_interval(secs => %(older_than)s)
ORDER BY prepared;

-- name: doctor_replication_slots
-- Replication slots that hold back VACUUM of every table (their xmin is set), with its age in transactions.
SELECT slot_name, slot_type, active, age(xmin)::bigint AS xmin_age
FROM pg_replication_slots
WHERE xmin IS NOT NULL
ORDER BY age(xmin) DESC;

-- name: doctor_clock
-- The database server's clock now (clock_timestamp(): not the start of the transaction).
SELECT clock_timestamp() AS now;

-- name: doctor_connections
-- The server's connection limit, and the client sessions open now (pgqueue's: application_name 'pgqueue ...').
SELECT current_setting('max_connections')::int AS max_connections,
    current_setting('superuser_reserved_connections')::int AS reserved,
    count(*) FILTER (WHERE backend_type = 'client backend') AS sessions,
    count(*) FILTER (WHERE backend_type = 'client backend' AND application_name LIKE 'pgqueue %%') AS pgqueue_sessions
FROM pg_stat_activity;

-- name: doctor_supervisors
-- Each live supervisor (pgqueue_process_silent's rule, %(dead_after)s seconds) with its live children: its
-- workers, their job threads (the sum of their concurrency), its other roles (maintenance, scheduler,
-- metrics), and the connections they all say they opened (not counting job code's own ORM connections).
SELECT s.id, s.hostname,
    count(c.id) FILTER (WHERE c.kind = 'worker') AS workers,
    COALESCE(sum(c.concurrency) FILTER (WHERE c.kind = 'worker'), 0)::int AS job_threads,
    count(c.id) FILTER (WHERE c.kind IN ('maintenance', 'scheduler', 'metrics')) AS roles,
    (s.connections + COALESCE(sum(c.connections), 0))::int AS connections
FROM pgqueue_workerprocess s
LEFT JOIN pgqueue_workerprocess c ON c.supervisor_id = s.id AND c.state IN ('running', 'stopping')
WHERE s.kind = 'supervisor' AND s.state IN ('running', 'stopping')
  AND NOT pgqueue_process_silent(s.last_heartbeat, s.vouched_at, %(dead_after)s, now())
GROUP BY s.id, s.hostname, s.connections
ORDER BY s.id;
