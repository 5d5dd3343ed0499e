-- Every runtime statement pgqueue runs. Each starts with "-- name: <name>" and a one-line comment.
-- Names are noun-first so they sort by table. Parameters are %(name)s (psycopg and Django cursors).
-- A write that depends on a lease is guarded by state = 'running' and the lease token.

-- name: job_insert_many
-- Insert jobs from parallel arrays (one row or many); a NULL id takes the next one from the sequence.
-- A job with a concurrency key that may run now takes a free slot of its semaphore (creating the
-- semaphore on first use) and is 'ready', or is 'blocked' until a slot is handed to it; free slots are
-- taken with SKIP LOCKED and never ahead of blocked jobs of the key that may run now. A job with a rate
-- key creates its token bucket on first use (a new limit or window replaces the old; an existing bucket is
-- not locked otherwise). Wakes listening workers once per queue that got a ready job (NOTIFY is coalesced
-- per statement), with ',rated:' before the queue's name for jobs with a rate key. A job in a batch
-- records it; a job that depends on jobs not finished yet (waits > 0) is 'waiting' (it takes no slot
-- until dependency_settle releases it); one whose dependency already failed is inserted 'cancelled',
-- with the reason that names it. A key given without its limit (a replayed copy) uses its semaphore or
-- bucket as it is: no slot is taken at insert (semaphore_hand_off follows), nothing is created or changed.
WITH input AS MATERIALIZED (
    SELECT i.*, COALESCE(i.id, nextval(pg_get_serial_sequence('pgqueue_job', 'id'))) AS job_id,
        COALESCE(i.run_at > now(), false) AS later,
        COALESCE(i.waits, 0) > 0 OR i.cancel_reason IS NOT NULL AS held
    FROM unnest(
        %(ids)s::bigint[], %(queues)s::text[], %(tasks)s::text[], %(args)s::text[], %(kwargs)s::text[],
        %(priorities)s::smallint[], %(run_ats)s::timestamptz[], %(max_attempts)s::int[],
        %(timeouts)s::float8[], %(replay_ofs)s::bigint[], %(callback_ofs)s::bigint[], %(lock_keys)s::text[],
        %(idempotency_keys)s::text[],
        %(concurrency_keys)s::text[], %(concurrency_limits)s::int[], %(concurrency_holds)s::boolean[],
        %(rate_keys)s::text[], %(rate_limits)s::int[], %(rate_windows)s::float8[], %(batch_ids)s::bigint[],
        %(waits)s::int[], %(has_dependents)s::boolean[], %(cancel_reasons)s::text[]
    ) WITH ORDINALITY AS i(id, queue, task, args, kwargs, priority, run_at, max_attempts, timeout, replay_of,
                           callback_of, lock_key, idempotency_key, concurrency_key, concurrency_limit, concurrency_hold,
                           rate_key, rate_limit, rate_window, batch_id, waits, has_dependents, cancel_reason, ord)
), rates AS (
    SELECT rate_key AS key, max(rate_limit) AS lim, max(rate_window) AS win
    FROM input WHERE rate_key IS NOT NULL AND rate_limit IS NOT NULL GROUP BY rate_key
), rate_created AS (
    INSERT INTO pgqueue_ratelimit (key, "limit", "window", tokens, updated_at, created_at)
    SELECT key, lim, win, lim, now(), now() FROM rates
    ON CONFLICT (key) DO NOTHING
), rate_changed AS (
    UPDATE pgqueue_ratelimit r SET "limit" = x.lim, "window" = x.win, tokens = LEAST(r.tokens, x.lim::float8)
    FROM rates x WHERE r.key = x.key AND (r."limit" <> x.lim OR r."window" <> x.win)
), wanting AS (
    SELECT job_id, concurrency_key AS key, row_number() OVER (PARTITION BY concurrency_key ORDER BY ord) AS rank
    FROM input WHERE concurrency_key IS NOT NULL AND NOT later AND NOT held
), limits AS (
    SELECT concurrency_key AS key, max(concurrency_limit) AS lim, count(*) FILTER (WHERE NOT later AND NOT held) AS n
    FROM input WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key
), created AS (
    INSERT INTO pgqueue_semaphore (key, "limit", created_at)
    SELECT key, lim, now() FROM limits WHERE lim IS NOT NULL
    ON CONFLICT (key) DO NOTHING
    RETURNING key, "limit"
), relimited AS (
    UPDATE pgqueue_semaphore s SET "limit" = l.lim
    FROM limits l WHERE s.key = l.key AND s."limit" <> l.lim
    RETURNING s.key, s."limit"
), grown AS (
    INSERT INTO pgqueue_semaphore_slot (key, number)
    SELECT r.key, g.n FROM relimited r CROSS JOIN LATERAL generate_series(0, r."limit" - 1) AS g(n)
    ON CONFLICT (key, number) DO NOTHING
), free AS (
    SELECT f.key, f.number
    FROM limits l
    CROSS JOIN LATERAL (
        SELECT s.key, s.number FROM pgqueue_semaphore_slot s
        WHERE s.key = l.key AND s.job_id IS NULL AND s.number < l.lim
          AND NOT EXISTS (SELECT 1 FROM pgqueue_job b  -- bounds only pgqueue_job_blocked_key serves (see hand-off)
                          WHERE b.state = 'blocked' AND (b.concurrency_key, b.id) > (l.key, 0::bigint)
                            AND (b.concurrency_key, b.id) < (l.key, 9223372036854775807::bigint)
                            AND b.run_at <= now())
        ORDER BY s.number
        LIMIT l.n
        FOR UPDATE SKIP LOCKED
    ) f
), available AS (
    SELECT key, number, row_number() OVER (PARTITION BY key ORDER BY number) AS rank
    FROM (SELECT key, number FROM free
          UNION ALL
          SELECT c.key, g.n FROM created c CROSS JOIN LATERAL generate_series(0, c."limit" - 1) AS g(n)) a
), assigned AS (
    SELECT w.job_id, a.key, a.number FROM wanting w JOIN available a ON a.key = w.key AND a.rank = w.rank
), new_slots AS (
    INSERT INTO pgqueue_semaphore_slot (key, number, job_id)
    SELECT c.key, g.n, a.job_id
    FROM created c CROSS JOIN LATERAL generate_series(0, c."limit" - 1) AS g(n)
    LEFT JOIN assigned a ON a.key = c.key AND a.number = g.n
), taken_slots AS (
    UPDATE pgqueue_semaphore_slot s SET job_id = a.job_id
    FROM assigned a WHERE s.key = a.key AND s.number = a.number AND s.job_id IS NULL
), inserted AS (
    INSERT INTO pgqueue_job (
        id, queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout, replay_of_id, callback_of_id,
        lock_key, idempotency_key, concurrency_key, slot, concurrency_hold, rate_key, batch_id, waiting_on,
        has_dependents, finished_at, reason_code, last_error
    )
    SELECT
        i.job_id, i.queue, i.task, i.args::jsonb, i.kwargs::jsonb, i.priority,
        CASE WHEN i.cancel_reason IS NOT NULL THEN 'cancelled'
             WHEN i.waits > 0 THEN 'waiting'
             ELSE pgqueue_runnable_state(COALESCE(i.run_at, now()), i.concurrency_key, a.number) END,
        COALESCE(i.run_at, now()), i.max_attempts, i.timeout, i.replay_of, i.callback_of,
        i.lock_key, i.idempotency_key, i.concurrency_key, a.number, COALESCE(i.concurrency_hold, false), i.rate_key,
        i.batch_id, GREATEST(COALESCE(i.waits, 0), 0), COALESCE(i.has_dependents, false),
        CASE WHEN i.cancel_reason IS NOT NULL THEN now() END,
        CASE WHEN i.cancel_reason IS NOT NULL THEN 'dependency' ELSE '' END, COALESCE(i.cancel_reason, '')
    FROM input i LEFT JOIN assigned a ON a.job_id = i.job_id
    ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, state, rate_key, lock_key
), unlocked AS (  -- a job cancelled at once (a dependency already failed) holds no uniqueness key
    UPDATE pgqueue_lock l SET released = true
    FROM inserted x
    WHERE x.state = 'cancelled' AND x.lock_key IS NOT NULL AND l.kind = 'unique' AND l.key = x.lock_key
      AND l.job_id = x.id AND NOT l.released
), wake AS (
    SELECT pg_notify(%(channel)s, q.payload)
    FROM (SELECT DISTINCT pgqueue_wake_payload(queue, rate_key) AS payload
          FROM inserted WHERE state = 'ready') q
)
SELECT id, (SELECT count(*) FROM wake) AS woken FROM inserted ORDER BY id;

-- name: lock_release_many
-- Free keys now (an operator's release in the admin): released, and any window ended.
UPDATE pgqueue_lock SET released = true, expires_at = LEAST(expires_at, now())
WHERE id = ANY(%(ids)s::bigint[]) AND (NOT released OR expires_at > now())
RETURNING id;

-- name: lock_drop_many
-- Give back keys taken (in this transaction) for calls that are not inserted: another of their keys was held.
DELETE FROM pgqueue_lock l
USING unnest(%(kinds)s::text[], %(keys)s::text[], %(job_ids)s::bigint[]) AS d(kind, key, job_id)
WHERE l.kind = d.kind AND l.key = d.key AND l.job_id = d.job_id;

-- name: job_replace_waiting_many
-- Give jobs that still wait new arguments and run_at (a uniqueness conflict with on_conflict='replace');
-- one without a semaphore slot that may run now waits for one ('blocked'), one waiting for its
-- dependencies keeps waiting. Wakes their queues
-- (',rated:<queue>' for jobs with a rate key).
WITH replaced AS (
    UPDATE pgqueue_job j
    SET args = r.args::jsonb, kwargs = r.kwargs::jsonb, run_at = COALESCE(r.run_at, now()),
        state = CASE WHEN j.state = 'waiting' THEN 'waiting'
                     WHEN j.state = 'blocked' AND COALESCE(r.run_at > now(), false) THEN 'blocked'  -- keeps its place
                     ELSE pgqueue_runnable_state(COALESCE(r.run_at, now()), j.concurrency_key, j.slot) END
    FROM unnest(%(ids)s::bigint[], %(args)s::text[], %(kwargs)s::text[], %(run_ats)s::timestamptz[])
        AS r(id, args, kwargs, run_at)
    WHERE j.id = r.id AND j.state IN ('scheduled', 'ready', 'blocked', 'waiting')
    RETURNING j.id, j.queue, j.state, j.rate_key
), wake AS (
    SELECT pg_notify(%(channel)s, q.payload)
    FROM (SELECT DISTINCT pgqueue_wake_payload(queue, rate_key) AS payload
          FROM replaced WHERE state = 'ready') q
)
SELECT id, (SELECT count(*) FROM wake) AS woken FROM replaced;

-- name: lock_take_many
-- Give each of %(count)s calls about to be inserted a new job id, in call order (enqueue order), and
-- take their uniqueness locks and idempotency keys; or say which job holds a key. The unique index on
-- (kind, key) decides between concurrent enqueuers (the later one waits for the earlier one's commit).
-- A key is taken over when its job released it and its window is over.
WITH input AS (
    SELECT *
    FROM unnest(%(calls)s::int[], %(kinds)s::text[], %(keys)s::text[], %(untils)s::text[], %(windows)s::float8[])
        AS i(call, kind, key, until, window_seconds)
), ids AS MATERIALIZED (
    SELECT c.call, nextval(pg_get_serial_sequence('pgqueue_job', 'id')) AS id
    FROM generate_series(0, %(count)s - 1) AS c(call)
), taken AS (
    INSERT INTO pgqueue_lock AS l (kind, key, job_id, until, released, expires_at, created_at)
    SELECT i.kind, i.key, ids.id, i.until, i.kind = 'idempotency', now() + make_interval(secs => i.window_seconds),
        now()
    FROM input i JOIN ids USING (call)
    ON CONFLICT (kind, key) DO UPDATE
    -- each column: the new holder's value if the key was free, else the current holder's (kept)
    SET job_id = CASE WHEN l.released AND (l.expires_at IS NULL OR l.expires_at <= now()) THEN EXCLUDED.job_id
                      ELSE l.job_id END,
        until = CASE WHEN l.released AND (l.expires_at IS NULL OR l.expires_at <= now()) THEN EXCLUDED.until
                     ELSE l.until END,
        expires_at = CASE WHEN l.released AND (l.expires_at IS NULL OR l.expires_at <= now()) THEN EXCLUDED.expires_at
                          ELSE l.expires_at END,
        created_at = CASE WHEN l.released AND (l.expires_at IS NULL OR l.expires_at <= now()) THEN EXCLUDED.created_at
                          ELSE l.created_at END,
        released = CASE WHEN l.released AND (l.expires_at IS NULL OR l.expires_at <= now()) THEN EXCLUDED.released
                        ELSE l.released END
    RETURNING l.kind, l.key, l.job_id
)
SELECT ids.call, ids.id, t.job_id AS holder, i.kind, i.key
FROM ids
LEFT JOIN input i ON i.call = ids.call
LEFT JOIN taken t ON t.kind = i.kind AND t.key = i.key
ORDER BY ids.call, i.kind;

-- name: job_insert
-- Insert one job with a reserved id or a run_at, and wake its queue if it is ready; a reserved id that
-- is already there (a deferred insert retried after its reply was lost) is left alone.
WITH inserted AS (
    INSERT INTO pgqueue_job (id, queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
    VALUES (
        COALESCE(%(id)s::bigint, nextval(pg_get_serial_sequence('pgqueue_job', 'id'))),
        %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
        pgqueue_runnable_state(COALESCE(%(run_at)s::timestamptz, now()), NULL, NULL),
        COALESCE(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(timeout)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, state
)
SELECT id, CASE WHEN state = 'ready' THEN (pg_notify(%(channel)s, queue) IS NOT NULL)::int ELSE 0 END AS woken
FROM inserted;

-- name: job_insert_ready
-- Insert one job that is ready now (the web view's enqueue: the leanest statement, run prepared) and
-- wake its queue.
INSERT INTO pgqueue_job (queue, task, args, kwargs, priority, state, run_at, max_attempts, timeout)
VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s, 'ready', now(),
        %(max_attempts)s, %(timeout)s)
RETURNING id, (pg_notify(%(channel)s, queue) IS NOT NULL)::int AS woken;

-- name: job_reserve_ids
-- Take ids from the job sequence ahead of an insert deferred to another database's commit.
SELECT nextval(pg_get_serial_sequence('pgqueue_job', 'id')) AS id FROM generate_series(1, %(count)s);

-- name: job_lease
-- Lease up to %(limit)s ready jobs of unpaused queues for one worker, skipping locked rows. The queues
-- take turns (each queue's best job, then each queue's second best, ...; best = priority, then run_at;
-- within a turn, in the order %(queues)s names them, which the worker rotates lease after lease), so a busy
-- or urgent queue cannot starve another, even of a worker leasing one job at a time. Crash suspects
-- (crashes > 0) are left to job_lease_suspect, jobs with a rate key to job_lease_limited. A uniqueness key
-- held until started is released here (a key row a duplicate enqueue holds is skipped, and reaped by
-- maintenance).
WITH candidates AS (
    SELECT c.id, q.pos,
        row_number() OVER (PARTITION BY q.name ORDER BY c.priority DESC, c.run_at, c.id) AS turn
    FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS q(name, pos)
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at
        FROM pgqueue_job j
        WHERE j.queue = q.name AND j.state = 'ready' AND j.rate_key IS NULL AND j.crashes = 0
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE NOT EXISTS (SELECT 1 FROM pgqueue_queuestate s WHERE s.name = q.name AND s.paused)
), picked AS (
    SELECT id FROM candidates ORDER BY turn, pos LIMIT %(limit)s
), leased AS (
    UPDATE pgqueue_job j
    SET state = 'running', attempts = j.attempts + 1, leased_by = %(worker)s,
        lease_token = gen_random_uuid(), lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = clock_timestamp(), cancel_requested = false, progress = NULL, progress_message = ''
    -- by id, whatever the statistics say: a kept generic plan made after an ANALYZE saw a backlog joined
    -- the picked rows to a scan of the whole table (4 ms a lease at 20,000 rows, growing with the history)
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.queue, j.task, j.args, j.kwargs, j.attempts AS attempt, j.max_attempts, j.lost_attempts,
        j.crashes, j.timeout, j.lease_token, j.started_at, j.lock_key, j.concurrency_key, j.slot,
        j.concurrency_hold, j.batch_id, j.callback_of_id AS callback_of, j.run_at, j.created_at
), unlocked AS (
    UPDATE pgqueue_lock l SET released = true  -- each key by (kind, key): never a walk of all keys
    WHERE l.id = ANY(ARRAY(
        SELECT h.id FROM (SELECT x.id, x.lock_key FROM leased x WHERE x.lock_key IS NOT NULL OFFSET 0) x
        CROSS JOIN LATERAL (SELECT h.id FROM pgqueue_lock h
                            WHERE h.kind = 'unique' AND h.key = x.lock_key AND h.job_id = x.id
                              AND h.until = 'started' AND NOT h.released
                            FOR UPDATE SKIP LOCKED) h))
)
SELECT COALESCE(json_agg(json_build_array(  -- the rows as one JSON document (LeasedJob's fields in order: its handle's from_json)
    x.id, x.queue, x.task, x.args, x.kwargs, x.attempt, x.max_attempts, x.lost_attempts, x.crashes, x.timeout,
    x.lease_token, x.started_at, x.lock_key, x.concurrency_key, x.slot, x.concurrency_hold, x.batch_id,
    x.callback_of, x.run_at, x.created_at)), '[]') AS rows
FROM leased x;

-- name: job_lease_limited
-- job_lease for a worker whose queues have limits or jobs with a rate key (queuestate_limited said so). A
-- queue with a concurrency limit leases only as many jobs as its running-slot semaphore
-- ('pgqueue:queue:<name>') has free slots, each leased job holding one until it stops running; a queue
-- with a rate limit only as many as its token bucket holds (refilled at rate_limit per rate_window
-- seconds; its row is locked while this statement runs). A job with a rate key starts only with a token
-- of its key's bucket (pgqueue_ratelimit, locked with SKIP LOCKED: a key another lease is spending is left
-- for the next lease). When a key's bucket runs dry, all its ready jobs are deferred ('scheduled'), in
-- lease order, to when their tokens will have come, one every window/limit seconds after the latest
-- deferral (deferred_until): they wait without being scanned and without blocking other keys. Queues take
-- turns, and keys held until started are released, as in job_lease.
WITH queues AS (
    SELECT q.name, q.pos, s.concurrency_limit AS lim
    FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS q(name, pos)
    LEFT JOIN pgqueue_queuestate s ON s.name = q.name
    WHERE NOT COALESCE(s.paused, false)
), buckets AS (
    SELECT s.name,
        pgqueue_bucket_tokens(COALESCE(s.rate_tokens, s.rate_limit::float8), COALESCE(s.rate_updated_at, now()),
                              s.rate_limit, s.rate_window, now()) AS tokens
    FROM pgqueue_queuestate s
    WHERE s.name = ANY(%(queues)s::text[]) AND s.rate_limit IS NOT NULL AND s.rate_window > 0 AND NOT s.paused
    FOR UPDATE
), room AS (
    SELECT f.key, f.number, row_number() OVER (PARTITION BY f.key ORDER BY f.number) AS rank
    FROM queues q
    CROSS JOIN LATERAL (
        SELECT s.key, s.number FROM pgqueue_semaphore_slot s
        WHERE s.key = 'pgqueue:queue:' || q.name AND s.job_id IS NULL AND s.number < q.lim
        ORDER BY s.number
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) f
    WHERE q.lim IS NOT NULL
), allowed AS (
    SELECT q.name, LEAST(
        %(limit)s::int,
        CASE WHEN q.lim IS NULL THEN %(limit)s::int
             ELSE (SELECT count(*) FROM room r WHERE r.key = 'pgqueue:queue:' || q.name)::int END,
        COALESCE((SELECT floor(b.tokens)::int FROM buckets b WHERE b.name = q.name), %(limit)s::int)) AS n
    FROM queues q
), plain AS (
    SELECT c.id, c.queue, c.priority, c.run_at
    FROM allowed a
    CROSS JOIN LATERAL (
        SELECT j.id, j.queue, j.priority, j.run_at
        FROM pgqueue_job j
        WHERE j.queue = a.name AND j.state = 'ready' AND j.rate_key IS NULL AND j.crashes = 0
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT GREATEST(a.n, 0)
        FOR UPDATE SKIP LOCKED
    ) c
), rated AS (
    SELECT c.id, c.queue, c.priority, c.run_at, c.rate_key,
        row_number() OVER (PARTITION BY c.rate_key ORDER BY c.priority DESC, c.run_at, c.id) AS rank
    FROM allowed a
    CROSS JOIN LATERAL (
        SELECT j.id, j.queue, j.priority, j.run_at, j.rate_key
        FROM pgqueue_job j
        WHERE j.queue = a.name AND j.state = 'ready' AND j.rate_key IS NOT NULL AND j.crashes = 0
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT GREATEST(a.n, 0)
        FOR UPDATE SKIP LOCKED
    ) c
), rate_buckets AS (
    SELECT r.key, r."limit", r."window", r.deferred_until,
        pgqueue_bucket_tokens(r.tokens, r.updated_at, r."limit", r."window", now()) AS tokens
    FROM pgqueue_ratelimit r
    WHERE r.key IN (SELECT rate_key FROM rated)
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT u.id, u.queue, u.priority, u.run_at,
        row_number() OVER (PARTITION BY u.queue ORDER BY u.priority DESC, u.run_at, u.id) AS turn
    FROM (SELECT id, queue, priority, run_at FROM plain
          UNION ALL
          SELECT x.id, x.queue, x.priority, x.run_at
          FROM rated x JOIN rate_buckets b ON b.key = x.rate_key
          WHERE x.rank <= floor(b.tokens)) u
), picked AS (
    SELECT id, queue, row_number() OVER (PARTITION BY queue ORDER BY turn) AS rank
    FROM (SELECT c.* FROM candidates c JOIN allowed a ON a.name = c.queue JOIN queues q ON q.name = c.queue
          WHERE c.turn <= a.n
          ORDER BY c.turn, q.pos LIMIT %(limit)s) x
), rate_spent AS (
    SELECT b.key, b.tokens - count(p.id) AS tokens, b."window" / b."limit" AS gap, b.deferred_until
    FROM rate_buckets b
    LEFT JOIN rated x ON x.rate_key = b.key
    LEFT JOIN picked p ON p.id = x.id
    GROUP BY b.key, b.tokens, b."window", b."limit", b.deferred_until
), behind AS (
    SELECT d.id, d.rate_key, row_number() OVER (PARTITION BY d.rate_key ORDER BY d.priority DESC, d.run_at, d.id) AS k
    FROM (SELECT j.id, j.rate_key, j.priority, j.run_at
          FROM pgqueue_job j
          WHERE j.state = 'ready' AND j.rate_key IN (SELECT key FROM rate_spent WHERE tokens < 1)
            AND j.id NOT IN (SELECT id FROM picked)
          FOR UPDATE SKIP LOCKED) d
), deferred AS (
    UPDATE pgqueue_job j
    SET state = 'scheduled',
        -- at most a century ahead (the bucket still decides when it starts): a long window times a long
        -- backlog would otherwise pass what an interval, a timestamp and Python's datetime can hold
        run_at = LEAST(now() + interval '100 years', GREATEST(
            now() + make_interval(secs => LEAST((d.k - s.tokens) * s.gap, 3.2e9)),
            LEAST(COALESCE(s.deferred_until, now()), now() + interval '100 years')
                + make_interval(secs => LEAST(d.k * s.gap, 3.2e9))))
    FROM behind d JOIN rate_spent s ON s.key = d.rate_key
    WHERE j.id = d.id
    RETURNING j.rate_key, j.run_at
), rate_written AS (
    UPDATE pgqueue_ratelimit r
    SET tokens = s.tokens, updated_at = now(),
        deferred_until = GREATEST(r.deferred_until, (SELECT max(d.run_at) FROM deferred d WHERE d.rate_key = r.key))
    FROM rate_spent s
    WHERE r.key = s.key
), slotted AS (
    SELECT p.id, r.key, r.number FROM picked p JOIN room r ON r.key = 'pgqueue:queue:' || p.queue AND r.rank = p.rank
), slots AS (
    UPDATE pgqueue_semaphore_slot s SET job_id = x.id
    FROM slotted x WHERE s.key = x.key AND s.number = x.number
), spent AS (
    UPDATE pgqueue_queuestate s SET rate_tokens = b.tokens - c.n, rate_updated_at = now()
    FROM buckets b JOIN (SELECT queue, count(*) AS n FROM picked GROUP BY queue) c ON c.queue = b.name
    WHERE s.name = b.name
), leased AS (
    UPDATE pgqueue_job j
    SET state = 'running', attempts = j.attempts + 1, leased_by = %(worker)s,
        lease_token = gen_random_uuid(), lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = clock_timestamp(), cancel_requested = false, progress = NULL, progress_message = '',
        queue_slot = (SELECT x.number FROM slotted x WHERE x.id = j.id)
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked))  -- by id, whatever the statistics say (as in job_lease)
    RETURNING j.id, j.queue, j.task, j.args, j.kwargs, j.attempts AS attempt, j.max_attempts, j.lost_attempts,
        j.crashes, j.timeout, j.lease_token, j.started_at, j.lock_key, j.concurrency_key, j.slot,
        j.concurrency_hold, j.batch_id, j.callback_of_id AS callback_of, j.run_at, j.created_at
), unlocked AS (
    UPDATE pgqueue_lock l SET released = true  -- each key by (kind, key): never a walk of all keys
    WHERE l.id = ANY(ARRAY(
        SELECT h.id FROM (SELECT x.id, x.lock_key FROM leased x WHERE x.lock_key IS NOT NULL OFFSET 0) x
        CROSS JOIN LATERAL (SELECT h.id FROM pgqueue_lock h
                            WHERE h.kind = 'unique' AND h.key = x.lock_key AND h.job_id = x.id
                              AND h.until = 'started' AND NOT h.released
                            FOR UPDATE SKIP LOCKED) h))
)
SELECT COALESCE(json_agg(json_build_array(  -- the rows as one JSON document (LeasedJob's fields in order: its handle's from_json)
    x.id, x.queue, x.task, x.args, x.kwargs, x.attempt, x.max_attempts, x.lost_attempts, x.crashes, x.timeout,
    x.lease_token, x.started_at, x.lock_key, x.concurrency_key, x.slot, x.concurrency_hold, x.batch_id,
    x.callback_of, x.run_at, x.created_at)), '[]') AS rows
FROM leased x;

-- name: ratelimit_take_enqueue
-- Take %(count)s tokens from a queue's enqueue bucket (key 'pgqueue:enqueue:<queue>'), all or none, refilled
-- at %(limit)s per %(window)s s; run alone in autocommit, so the row is locked for this statement only. No
-- row: the bucket does not exist yet (ratelimit_create_enqueue, then again).
WITH bucket AS (
    SELECT key, pgqueue_bucket_tokens(tokens, updated_at, %(limit)s, %(window)s, clock_timestamp()) AS tokens
    FROM pgqueue_ratelimit WHERE key = %(key)s
    FOR UPDATE
)
UPDATE pgqueue_ratelimit r
SET tokens = CASE WHEN b.tokens >= %(count)s THEN b.tokens - %(count)s ELSE b.tokens END,
    updated_at = clock_timestamp(), "limit" = %(limit)s, "window" = %(window)s
FROM bucket b
WHERE r.key = b.key
RETURNING b.tokens >= %(count)s AS granted,
    GREATEST(0, (%(count)s - b.tokens) * %(window)s / %(limit)s)::float8 AS retry_after;

-- name: ratelimit_create_enqueue
-- Create a queue's enqueue bucket, full (a concurrent creator wins: nothing happens).
INSERT INTO pgqueue_ratelimit (key, "limit", "window", tokens, updated_at, created_at)
VALUES (%(key)s, %(limit)s, %(window)s, %(limit)s, clock_timestamp(), clock_timestamp())
ON CONFLICT (key) DO NOTHING;

-- name: refusal_record
-- Count a refused enqueue in its minute's row (autocommit, outside the caller's transaction).
INSERT INTO pgqueue_refusal (minute, queue, task, reason, count, jobs, message, first_at, last_at)
VALUES (date_trunc('minute', now()), %(queue)s, %(task)s, %(reason)s, 1, %(jobs)s, %(message)s, now(), now())
ON CONFLICT (minute, queue, task, reason) DO UPDATE
SET count = pgqueue_refusal.count + 1, jobs = pgqueue_refusal.jobs + EXCLUDED.jobs, message = EXCLUDED.message,
    last_at = now();

-- name: refusal_prune
-- Delete refused-enqueue rows last seen more than %(keep)s seconds ago.
DELETE FROM pgqueue_refusal WHERE last_at < now() - make_interval(secs => %(keep)s);

-- name: queuestate_limited
-- Whether any of these queues has a concurrency or rate limit or a ready job with a rate key, or jobs
-- deferred by a rate key are still to come due: its workers then lease with job_lease_limited (they ask at
-- every heartbeat, and a NOTIFY ',rated:<queue>' tells them at once).
SELECT EXISTS (
    SELECT 1 FROM pgqueue_queuestate
    WHERE name = ANY(%(queues)s::text[]) AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL)
) OR EXISTS (
    SELECT 1 FROM unnest(%(queues)s::text[]) AS q(name)
    WHERE EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.queue = q.name AND j.state = 'ready' AND j.rate_key IS NOT NULL)
) OR EXISTS (
    SELECT 1 FROM pgqueue_ratelimit WHERE deferred_until > now() - interval '1 second'
) AS limited;

-- name: queuestate_set_limits
-- Set or clear a queue's concurrency and rate limits (creating its row as needed). A concurrency limit
-- gets a running-slot semaphore 'pgqueue:queue:<name>' with one slot row per allowed running job (jobs
-- already running hold none); a rate limit starts with a full bucket.
WITH state AS (
    INSERT INTO pgqueue_queuestate (name, concurrency_limit, rate_limit, rate_window, rate_tokens, rate_updated_at,
                                    updated_at)
    VALUES (%(name)s, %(concurrency_limit)s, %(rate_limit)s, %(rate_window)s, %(rate_limit)s, now(), now())
    ON CONFLICT (name) DO UPDATE
    SET concurrency_limit = EXCLUDED.concurrency_limit, rate_limit = EXCLUDED.rate_limit,
        rate_window = EXCLUDED.rate_window, rate_tokens = EXCLUDED.rate_tokens, rate_updated_at = now(),
        updated_at = now()
    RETURNING name
), semaphore AS (
    INSERT INTO pgqueue_semaphore (key, "limit", created_at)
    SELECT 'pgqueue:queue:' || %(name)s, %(concurrency_limit)s, now() WHERE %(concurrency_limit)s::int IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET "limit" = EXCLUDED."limit"
), slots AS (
    INSERT INTO pgqueue_semaphore_slot (key, number)
    SELECT 'pgqueue:queue:' || %(name)s, g.n FROM generate_series(0, COALESCE(%(concurrency_limit)s::int, 0) - 1) AS g(n)
    ON CONFLICT (key, number) DO NOTHING
), cleared AS (  -- no concurrency limit: its semaphore goes (slots still held go free as their jobs stop)
    DELETE FROM pgqueue_semaphore WHERE key = 'pgqueue:queue:' || %(name)s AND %(concurrency_limit)s::int IS NULL
), cleared_slots AS (
    DELETE FROM pgqueue_semaphore_slot
    WHERE key = 'pgqueue:queue:' || %(name)s AND job_id IS NULL AND %(concurrency_limit)s::int IS NULL
)
SELECT name FROM state;

-- name: job_lease_suspect
-- Lease one ready crash suspect (a job whose process crashed before) of unpaused queues, to run alone in
-- a worker that runs nothing else (releasing a uniqueness key held until started, as job_lease does). Its
-- start is counted in its rate key's bucket, if it has one (the bucket may go below zero: later jobs of
-- the key wait the longer).
WITH leased AS (
    UPDATE pgqueue_job j
    SET state = 'running', attempts = j.attempts + 1, leased_by = %(worker)s,
        lease_token = gen_random_uuid(), lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = clock_timestamp(), cancel_requested = false, progress = NULL, progress_message = ''
    WHERE j.id = (
        SELECT s.id FROM pgqueue_job s
        WHERE s.state = 'ready' AND s.crashes > 0 AND s.queue = ANY(%(queues)s::text[])
          AND NOT EXISTS (SELECT 1 FROM pgqueue_queuestate q WHERE q.name = s.queue AND q.paused)
        ORDER BY s.priority DESC, s.run_at, s.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING j.id, j.queue, j.task, j.args, j.kwargs, j.attempts AS attempt, j.max_attempts, j.lost_attempts,
        j.crashes, j.timeout, j.lease_token, j.started_at, j.lock_key, j.concurrency_key, j.slot,
        j.concurrency_hold, j.batch_id, j.callback_of_id AS callback_of, j.run_at, j.created_at
), unlocked AS (
    UPDATE pgqueue_lock l SET released = true  -- each key by (kind, key): never a walk of all keys
    WHERE l.id = ANY(ARRAY(
        SELECT h.id FROM (SELECT x.id, x.lock_key FROM leased x WHERE x.lock_key IS NOT NULL OFFSET 0) x
        CROSS JOIN LATERAL (SELECT h.id FROM pgqueue_lock h
                            WHERE h.kind = 'unique' AND h.key = x.lock_key AND h.job_id = x.id
                              AND h.until = 'started' AND NOT h.released
                            FOR UPDATE SKIP LOCKED) h))
), rate_spent AS (
    UPDATE pgqueue_ratelimit r
    SET tokens = pgqueue_bucket_tokens(r.tokens, r.updated_at, r."limit", r."window", now()) - 1,
        updated_at = now()
    FROM leased x JOIN pgqueue_job o ON o.id = x.id
    WHERE r.key = o.rate_key
)
SELECT COALESCE(json_agg(json_build_array(  -- the rows as one JSON document (LeasedJob's fields in order: its handle's from_json)
    x.id, x.queue, x.task, x.args, x.kwargs, x.attempt, x.max_attempts, x.lost_attempts, x.crashes, x.timeout,
    x.lease_token, x.started_at, x.lock_key, x.concurrency_key, x.slot, x.concurrency_hold, x.batch_id,
    x.callback_of, x.run_at, x.created_at)), '[]') AS rows
FROM leased x;

-- name: job_set_state_if_running_many
-- Apply transitions decided by pgqueue.lifecycle to jobs still running under the same lease token,
-- and write their attempt rows; a transition that yields to cancel becomes 'cancelled' if one was asked.
-- Releases the uniqueness keys of jobs that are done (a key row a duplicate enqueue holds is skipped and
-- reaped by maintenance), gives back the running slot of a queue's concurrency limit, and returns the
-- semaphore slots given up, for semaphore_hand_off in the same transaction; and says which jobs have a
-- batch or dependents, for pgqueue.settle once this has committed. The transitions come as one JSON array
-- of rows, their fields in the order of db.TRANSITION_FIELDS (one document: binding 24 arrays element by
-- element cost the worker more than the statement itself).
WITH input AS (
    SELECT (r->>0)::bigint AS id, (r->>1)::uuid AS token, r->>2 AS state, (r->>3)::boolean AS yields,
        (r->>4)::timestamptz AS run_at, r->>5 AS reason, r->>6 AS result, (r->>7)::int AS attempts,
        (r->>8)::int AS lost, (r->>9)::int AS crashes, r->>10 AS job_error_class, r->>11 AS job_error,
        (r->>12)::int AS number, r->>13 AS outcome, r->>14 AS worker, (r->>15)::timestamptz AS finished_at,
        r->>16 AS error_class, r->>17 AS message, r->>18 AS traceback, (r->>19)::int AS exit_code,
        (r->>20)::boolean AS release_lock, (r->>21)::boolean AS release_slot, (r->>22)::int AS slot
    FROM jsonb_array_elements(%(transitions)s::jsonb) AS r
), locked AS MATERIALIZED (  -- never inlined into the update: its own plan, by primary key
    -- Each row by its id (primary key), in id order: the update below takes the row locks in this order, as
    -- every statement that waits for running rows takes them (no deadlock), and re-checks the guard on the
    -- row's latest version if another transaction moved it meanwhile. The lookup is outside the update so
    -- the plan cannot walk the whole partial index of running rows instead (cheap only while the
    -- statistics say it is empty: it holds every row that ran since the last vacuum). Each row carries its
    -- input along, so no later step joins two sets of rows: a generic plan guesses every set holds one
    -- row, and a join it makes a nested loop on that guess costs n x n (500 x 500 rows took ~250 ms).
    SELECT i.*, j.queue_slot
    FROM (SELECT * FROM input ORDER BY id) i
    CROSS JOIN LATERAL (SELECT r.id, r.queue_slot, r.state, r.lease_token FROM pgqueue_job r WHERE r.id = i.id
                        OFFSET 0) j  -- OFFSET 0: the guard is not pushed into the lookup
    WHERE j.state = 'running' AND j.lease_token = i.token
), done AS (
    UPDATE pgqueue_job j
    SET state = CASE WHEN j.cancel_requested AND i.yields THEN 'cancelled' ELSE i.state END,
        finished_at = CASE WHEN (j.cancel_requested AND i.yields) OR i.state IN ('succeeded', 'dead', 'cancelled')
                           THEN i.finished_at END,
        reason_code = CASE WHEN j.cancel_requested AND i.yields THEN '' ELSE i.reason END,
        run_at = COALESCE(i.run_at, j.run_at),
        result = i.result::jsonb,
        attempts = i.attempts, lost_attempts = i.lost, crashes = i.crashes,
        error_class = COALESCE(i.job_error_class, j.error_class),
        last_error = COALESCE(i.job_error, j.last_error),
        slot = CASE WHEN i.release_slot OR (j.cancel_requested AND i.yields) THEN NULL ELSE j.slot END,
        queue_slot = NULL, leased_by = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM locked i
    -- Still under this lease once its row lock is held: only this statement moves a job out of 'running',
    -- and it clears the token, so the token guards alone (naming the state here would let the plan walk
    -- the partial index of running rows instead of the primary key).
    WHERE j.id = i.id AND j.lease_token = i.token
    RETURNING j.id, j.queue, j.state, j.lock_key,
        i.release_lock OR (j.cancel_requested AND i.yields) AS unlock,
        CASE WHEN (i.release_slot OR (j.cancel_requested AND i.yields)) AND i.slot IS NOT NULL
             THEN j.concurrency_key END AS slot_key,
        CASE WHEN i.release_slot OR (j.cancel_requested AND i.yields) THEN i.slot END AS slot,
        j.batch_id, j.has_dependents, i.queue_slot,
        -- the attempt row
        i.number, i.outcome, i.worker, j.started_at, i.finished_at, i.error_class, i.message, i.traceback,
        i.exit_code
), history AS (
    INSERT INTO pgqueue_attempt (
        job_id, number, worker, started_at, finished_at, duration, outcome, error_class, message, traceback,
        exit_code
    )
    SELECT d.id, d.number, d.worker, d.started_at, d.finished_at,
        EXTRACT(EPOCH FROM d.finished_at - d.started_at), d.outcome, d.error_class, d.message, d.traceback,
        d.exit_code
    FROM done d
), running_slots AS (  -- a job that stops running gives its queue's running slot back
    UPDATE pgqueue_semaphore_slot s SET job_id = NULL
    FROM (SELECT id, queue, queue_slot FROM done WHERE queue_slot IS NOT NULL OFFSET 0) d
    WHERE s.key = 'pgqueue:queue:' || d.queue AND s.number = d.queue_slot AND s.job_id = d.id
    RETURNING d.queue
), unlocked AS (
    UPDATE pgqueue_lock l SET released = true  -- each key by (kind, key): never a walk of all keys
    WHERE l.id = ANY(ARRAY(
        SELECT h.id FROM (SELECT d.id, d.lock_key FROM done d WHERE d.lock_key IS NOT NULL AND d.unlock OFFSET 0) d
        CROSS JOIN LATERAL (SELECT h.id FROM pgqueue_lock h
                            WHERE h.kind = 'unique' AND h.key = d.lock_key AND h.job_id = d.id
                              AND NOT h.released
                            FOR UPDATE SKIP LOCKED) h))
), outcomes AS (  -- per queue with a circuit breaker: this batch's failures after its last success
    SELECT d.queue, max(d.finished_at) FILTER (WHERE d.outcome = 'succeeded') AS last_ok
    FROM done d
    WHERE d.queue IN (SELECT q.name FROM pgqueue_queuestate q WHERE q.breaker_threshold IS NOT NULL)
    GROUP BY d.queue
), streaks AS (
    SELECT o.queue, o.last_ok, count(d.id) AS failures, min(d.finished_at) AS first_failure,
        (array_agg(d.error_class ORDER BY d.finished_at DESC))[1] AS error_class
    FROM outcomes o
    LEFT JOIN done d
        ON d.queue = o.queue AND d.outcome IN ('failed', 'timeout') AND d.finished_at > COALESCE(o.last_ok, '-infinity')
    GROUP BY o.queue, o.last_ok
), breaker AS (  -- failures in a row within the window trip the breaker: the queue pauses for its cool-down
    UPDATE pgqueue_queuestate q
    SET breaker_failures = CASE WHEN r.new_failures >= q.breaker_threshold THEN 0 ELSE r.new_failures END,
        breaker_first_failure_at = CASE WHEN r.new_failures = 0 OR r.new_failures >= q.breaker_threshold THEN NULL
                                        ELSE r.first_failure END,
        breaker_trips = q.breaker_trips + (r.new_failures >= q.breaker_threshold AND NOT q.paused)::int,
        paused = q.paused OR r.new_failures >= q.breaker_threshold,
        paused_reason = CASE WHEN r.new_failures >= q.breaker_threshold AND NOT q.paused
                             THEN format('circuit breaker: %%s failures in a row within %%s s (last: %%s)',
                                         r.new_failures, q.breaker_window, r.error_class)
                             ELSE q.paused_reason END,
        resume_at = CASE WHEN r.new_failures >= q.breaker_threshold AND NOT q.paused
                         THEN now() + make_interval(secs => q.breaker_cooldown) ELSE q.resume_at END,
        updated_at = now()
    FROM (
        SELECT c.*, c.new_failures >= x.breaker_threshold AND NOT x.paused AS trips
        FROM (
            SELECT s.queue, s.error_class,
                CASE WHEN s.last_ok IS NOT NULL OR x.breaker_first_failure_at IS NULL
                          OR x.breaker_first_failure_at < now() - make_interval(secs => x.breaker_window)
                     THEN s.failures ELSE x.breaker_failures + s.failures END AS new_failures,
                CASE WHEN s.last_ok IS NOT NULL OR x.breaker_first_failure_at IS NULL
                          OR x.breaker_first_failure_at < now() - make_interval(secs => x.breaker_window)
                     THEN s.first_failure ELSE x.breaker_first_failure_at END AS first_failure
            FROM streaks s JOIN pgqueue_queuestate x ON x.name = s.queue
        ) c JOIN pgqueue_queuestate x ON x.name = c.queue
    ) r
    WHERE q.name = r.queue
    RETURNING q.name, q.paused_reason, r.trips AS tripped
), tripped AS (
    INSERT INTO pgqueue_auditentry (at, username, action, target, count, selected, object_ids, scope)
    SELECT now(), 'pgqueue circuit breaker', 'breaker_tripped', 'queue', 1, 1, jsonb_build_array(b.name),
        b.paused_reason
    FROM breaker b WHERE b.tripped
), stats AS (
    INSERT INTO pgqueue_stat AS s (bucket, queue, worker, succeeded, retried, dead, cancelled)
    SELECT date_trunc('minute', now()), d.queue, %(worker)s,
        count(*) FILTER (WHERE d.state = 'succeeded'),
        count(*) FILTER (WHERE d.state IN ('scheduled', 'ready', 'blocked')),
        count(*) FILTER (WHERE d.state = 'dead'), count(*) FILTER (WHERE d.state = 'cancelled')
    FROM done d
    GROUP BY d.queue
    ON CONFLICT (bucket, queue, worker) DO UPDATE
    SET succeeded = s.succeeded + EXCLUDED.succeeded, retried = s.retried + EXCLUDED.retried,
        dead = s.dead + EXCLUDED.dead, cancelled = s.cancelled + EXCLUDED.cancelled
), wake AS (  -- queues with a job ready again, or a running slot free again
    SELECT pg_notify(%(channel)s, q.queue)
    FROM (SELECT queue FROM done WHERE state = 'ready' UNION SELECT queue FROM running_slots) q
)
SELECT d.id, d.state, (SELECT count(*) FROM wake) AS woken, d.slot_key, d.slot, d.batch_id, d.has_dependents
FROM done d;

-- name: semaphore_hand_off
-- Free the semaphore slots these jobs gave up, then give the free slots of their keys (and of
-- %(keys)s) to the oldest blocked jobs of each key that may run now, in enqueue order: they become
-- 'ready' holding the slot. Run in the transaction that gave the slots up. Wakes their queues
-- (',rated:<queue>' for jobs with a rate key).
WITH given_up AS (
    SELECT s.key, s.number
    FROM pgqueue_semaphore_slot s
    JOIN unnest(%(job_ids)s::bigint[], %(slot_keys)s::text[], %(slots)s::int[]) AS g(job_id, key, number)
        ON s.key = g.key AND s.number = g.number AND s.job_id = g.job_id
), keys AS (
    SELECT key FROM given_up UNION SELECT unnest(%(keys)s::text[])
), free AS (
    SELECT key, number, true AS given_up FROM given_up
    UNION ALL
    SELECT f.key, f.number, false
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT s.key, s.number FROM pgqueue_semaphore_slot s
        WHERE s.key = k.key AND s.job_id IS NULL
        FOR UPDATE SKIP LOCKED
    ) f
), usable AS (
    SELECT f.key, f.number, row_number() OVER (PARTITION BY f.key ORDER BY f.number) AS rank
    FROM free f JOIN pgqueue_semaphore m ON m.key = f.key
    WHERE f.number < m."limit"
), waiting AS (
    SELECT b.id, b.key, row_number() OVER (PARTITION BY b.key ORDER BY b.id) AS rank
    FROM (SELECT key, count(*) AS n FROM usable GROUP BY key) k
    CROSS JOIN LATERAL (
        -- The key's blocked jobs in pgqueue_job_blocked_key's order, bounded by (key, id) pairs that only
        -- that index can serve: written "concurrency_key = k.key ORDER BY id", a kept plan walked the primary
        -- key in id order through every older job (all the history) looking for the key's first one.
        SELECT j.id, j.concurrency_key AS key FROM pgqueue_job j
        WHERE j.state = 'blocked' AND (j.concurrency_key, j.id) > (k.key, 0::bigint)
          AND (j.concurrency_key, j.id) < (k.key, 9223372036854775807::bigint) AND j.run_at <= now()
        ORDER BY j.concurrency_key, j.id
        LIMIT k.n
        FOR UPDATE SKIP LOCKED
    ) b
), handed AS (
    SELECT w.id, u.key, u.number FROM usable u JOIN waiting w ON w.key = u.key AND w.rank = u.rank
), slots AS (
    UPDATE pgqueue_semaphore_slot s SET job_id = h.id
    FROM free f LEFT JOIN handed h ON h.key = f.key AND h.number = f.number
    WHERE s.key = f.key AND s.number = f.number AND (f.given_up OR h.id IS NOT NULL)
), unblocked AS (  -- by id, whatever the statistics say (a join could scan the whole table: see job_lease)
    UPDATE pgqueue_job j SET state = 'ready', slot = (SELECT h.number FROM handed h WHERE h.id = j.id)
    WHERE j.id = ANY(ARRAY(SELECT id FROM handed))
    RETURNING j.id, j.queue, j.rate_key
), wake AS (
    SELECT pg_notify(%(channel)s, q.payload)
    FROM (SELECT DISTINCT pgqueue_wake_payload(queue, rate_key) AS payload
          FROM unblocked) q
)
SELECT id, (SELECT count(*) FROM wake) AS woken FROM unblocked;

-- name: job_lock_parents
-- Lock the jobs that new jobs will depend on (in id order, as completions lock them), mark them as having
-- dependents and say each one's state. A completion of one of them waits for this transaction and then
-- reports its dependents to pgqueue.settle; one that committed first is seen here as finished.
UPDATE pgqueue_job j SET has_dependents = true
FROM (SELECT id FROM pgqueue_job WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE) p
WHERE j.id = p.id
RETURNING j.id, j.state, j.task;

-- name: dependency_insert_many
-- Record that each job waits for another; a dependency on a job that has already finished is recorded
-- settled.
INSERT INTO pgqueue_dependency (job_id, depends_on_id, on_failure, settled_at, created_at)
SELECT d.job_id, d.depends_on_id, d.on_failure, CASE WHEN d.settled THEN now() END, now()
FROM unnest(%(job_ids)s::bigint[], %(depends_on_ids)s::bigint[], %(on_failures)s::text[], %(settled)s::boolean[])
    AS d(job_id, depends_on_id, on_failure, settled)
ON CONFLICT (job_id, depends_on_id) DO NOTHING;

-- name: dependency_settle
-- Settle the dependencies on these jobs that have reached a final state, each once (locked in id order; a
-- concurrent settle of the same one waits, then skips it), and say what pgqueue.lifecycle.release needs to
-- decide what their dependents do. Run after the jobs' own transitions committed.
UPDATE pgqueue_dependency e SET settled_at = now()
FROM pgqueue_job p
WHERE e.id IN (SELECT d.id FROM pgqueue_dependency d
               WHERE d.depends_on_id = ANY(%(ids)s::bigint[]) AND d.settled_at IS NULL
               ORDER BY d.id FOR UPDATE)
  AND e.settled_at IS NULL AND p.id = e.depends_on_id AND p.state IN ('succeeded', 'dead', 'cancelled')
RETURNING e.job_id, e.depends_on_id AS parent_id, p.state AS parent_state, p.task AS parent_task, e.on_failure;

-- name: dependency_unsettled
-- Finished jobs with dependencies on them not settled yet (at most %(limit)s), for the maintenance sweep: a
-- settle that did not run (its process died after the transition committed) or did not see them.
SELECT DISTINCT e.depends_on_id AS id
FROM pgqueue_dependency e JOIN pgqueue_job p ON p.id = e.depends_on_id
WHERE e.settled_at IS NULL AND p.state IN ('succeeded', 'dead', 'cancelled')
LIMIT %(limit)s;

-- name: job_release_waiting_many
-- Apply pgqueue.lifecycle.release's decisions to jobs still waiting for their dependencies: `satisfied`
-- fewer of them hold each job back, and a job that none holds back any more starts ('scheduled' until its
-- run_at, 'blocked' until it holds a semaphore slot, else 'ready'); a job with a reason is cancelled, the
-- reason naming the dependency that failed, and its uniqueness key is released. Wakes the queues of the
-- jobs made ready (',rated:<queue>' for jobs with a rate key).
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(satisfied)s::int[], %(reasons)s::text[]) AS i(id, satisfied, reason)
), locked AS (  -- in id order, so two settles of the same jobs cannot deadlock
    SELECT id FROM pgqueue_job WHERE id IN (SELECT id FROM input) AND state = 'waiting' ORDER BY id FOR UPDATE
), moved AS (
    UPDATE pgqueue_job j
    SET waiting_on = GREATEST(j.waiting_on - i.satisfied, 0),
        state = CASE WHEN i.reason IS NOT NULL THEN 'cancelled'
                     WHEN j.waiting_on - i.satisfied > 0 THEN 'waiting'
                     ELSE pgqueue_runnable_state(j.run_at, j.concurrency_key, j.slot) END,
        finished_at = CASE WHEN i.reason IS NOT NULL THEN now() END,
        reason_code = CASE WHEN i.reason IS NOT NULL THEN 'dependency' ELSE j.reason_code END,
        last_error = COALESCE(i.reason, j.last_error)
    FROM input i JOIN locked USING (id)
    WHERE j.id = i.id AND j.state = 'waiting'
    RETURNING j.id, j.queue, j.state, j.rate_key, j.lock_key, j.batch_id, j.has_dependents,
        CASE WHEN j.state = 'blocked' THEN j.concurrency_key END AS key
), unlocked AS (
    UPDATE pgqueue_lock l SET released = true  -- each key by (kind, key): never a walk of all keys
    WHERE l.id = ANY(ARRAY(
        SELECT h.id FROM (SELECT m.id, m.lock_key FROM moved m
                         WHERE m.lock_key IS NOT NULL AND m.state = 'cancelled' OFFSET 0) m
        CROSS JOIN LATERAL (SELECT h.id FROM pgqueue_lock h
                            WHERE h.kind = 'unique' AND h.key = m.lock_key AND h.job_id = m.id
                              AND NOT h.released
                            FOR UPDATE SKIP LOCKED) h))
), wake AS (
    SELECT pg_notify(%(channel)s, q.payload)
    FROM (SELECT DISTINCT pgqueue_wake_payload(queue, rate_key) AS payload
          FROM moved WHERE state = 'ready') q
)
SELECT id, state, batch_id, has_dependents, key, (SELECT count(*) FROM wake) AS woken FROM moved;

-- name: batch_create
-- Open a batch in the caller's transaction, with its callbacks as the rows they will be inserted as.
INSERT INTO pgqueue_batch (description, created_at, on_success, on_finish, on_failure)
VALUES (%(description)s, now(), %(on_success)s::jsonb, %(on_finish)s::jsonb, %(on_failure)s::jsonb)
RETURNING id;

-- name: batch_lock
-- Hold a batch while jobs are added to it (share: adders do not wait for each other) or before closing or
-- cancelling it (update: waits for the adders); says whether it is closed or cancelled. No row: no batch.
SELECT id, closed_at IS NOT NULL AS closed, cancelled_at IS NOT NULL AS cancelled
FROM pgqueue_batch WHERE id = %(id)s
FOR SHARE;

-- name: batch_lock_for_update
-- batch_lock for closing or cancelling: waits for the transactions adding jobs to it.
SELECT id, closed_at IS NOT NULL AS closed, cancelled_at IS NOT NULL AS cancelled
FROM pgqueue_batch WHERE id = %(id)s
FOR UPDATE;

-- name: batch_close
-- Close a batch that batch_lock_for_update locked in this transaction: no job may be added any more, and
-- its callbacks may fire (batch_settle follows). Its total is counted now, after the adders committed.
UPDATE pgqueue_batch b SET closed_at = now(), total = (SELECT count(*) FROM pgqueue_job j WHERE j.batch_id = b.id)
WHERE b.id = %(id)s AND b.closed_at IS NULL
RETURNING b.id;

-- name: batch_cancel
-- Mark a batch that batch_lock_for_update locked cancelled (and closed: its finish callback fires when its
-- running jobs have stopped), and return its jobs that have not finished, for job_cancel_many.
WITH marked AS (
    UPDATE pgqueue_batch
    SET cancelled_at = COALESCE(cancelled_at, now()), closed_at = COALESCE(closed_at, now()),
        total = COALESCE(total, (SELECT count(*) FROM pgqueue_job j WHERE j.batch_id = %(id)s))
    WHERE id = %(id)s
    RETURNING id
)
SELECT j.id FROM pgqueue_job j JOIN marked m ON j.batch_id = m.id
WHERE j.state NOT IN ('succeeded', 'dead', 'cancelled');

-- name: batch_settle
-- Fire the callbacks of these closed batches whose moment has come, each once: the failure callback when a
-- job of the batch is first seen dead, the finish callback when none is left unfinished, the success
-- callback when moreover none is dead or cancelled (never for a cancelled batch). Each has its guard, the
-- batch's failed_at, finished_at or succeeded_at: set only while NULL, under the batch row's lock, with an id
-- reserved for the callback job, which the caller inserts (job_insert_many) in the same transaction.
-- Returns per batch the callbacks fired: [job id, queue, task, args, kwargs, priority, max_attempts,
-- timeout] from the spec written at Batch.open (pgqueue.enqueuing.rows.callback_spec). Run after the
-- jobs' transitions committed: when a batch's last two jobs finish at once in two processes, the later of
-- the two settles sees both finished.
WITH status AS (
    SELECT b.id,
        EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.batch_id = b.id
                AND j.state NOT IN ('succeeded', 'dead', 'cancelled')) AS unfinished,
        EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.batch_id = b.id AND j.state = 'dead') AS dead,
        EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.batch_id = b.id AND j.state IN ('dead', 'cancelled')) AS failed
    FROM pgqueue_batch b
    WHERE b.id = ANY(%(ids)s::bigint[]) AND b.closed_at IS NOT NULL
      AND (b.finished_at IS NULL OR b.succeeded_at IS NULL OR b.failed_at IS NULL)
), due AS (
    SELECT b.id,
        b.failed_at IS NULL AND s.dead AS fail,
        b.finished_at IS NULL AND NOT s.unfinished AS finish,
        b.succeeded_at IS NULL AND b.cancelled_at IS NULL AND NOT s.unfinished AND NOT s.failed AS succeed
    FROM pgqueue_batch b JOIN status s ON s.id = b.id
    ORDER BY b.id
    FOR UPDATE OF b
), fired AS (
    UPDATE pgqueue_batch b
    SET failed_at = CASE WHEN d.fail THEN now() ELSE b.failed_at END,
        finished_at = CASE WHEN d.finish THEN now() ELSE b.finished_at END,
        succeeded_at = CASE WHEN d.succeed THEN now() ELSE b.succeeded_at END,
        failure_job_id = CASE WHEN d.fail AND b.on_failure IS NOT NULL
                              THEN nextval(pg_get_serial_sequence('pgqueue_job', 'id')) ELSE b.failure_job_id END,
        finish_job_id = CASE WHEN d.finish AND b.on_finish IS NOT NULL
                             THEN nextval(pg_get_serial_sequence('pgqueue_job', 'id')) ELSE b.finish_job_id END,
        success_job_id = CASE WHEN d.succeed AND b.on_success IS NOT NULL
                              THEN nextval(pg_get_serial_sequence('pgqueue_job', 'id')) ELSE b.success_job_id END
    FROM due d
    WHERE b.id = d.id AND (d.fail OR d.finish OR d.succeed)
    RETURNING b.id, d.fail, d.finish, d.succeed, b.failure_job_id, b.finish_job_id, b.success_job_id,
        b.on_failure, b.on_finish, b.on_success
)
SELECT f.id, f.fail AS failed, f.finish AS finished, f.succeed AS succeeded,
    COALESCE((SELECT json_agg(json_build_array(c.job_id, c.spec->>'queue', c.spec->>'task', (c.spec->'args')::text,
                                               (c.spec->'kwargs')::text, (c.spec->>'priority')::int,
                                               (c.spec->>'max_attempts')::int, (c.spec->>'timeout')::float8))
              FROM (VALUES (f.fail, f.failure_job_id, f.on_failure), (f.finish, f.finish_job_id, f.on_finish),
                           (f.succeed, f.success_job_id, f.on_success)) AS c(fire, job_id, spec)
              WHERE c.fire AND c.spec IS NOT NULL), '[]') AS callbacks
FROM fired f
ORDER BY f.id;

-- name: batch_unsettled
-- Closed batches after id %(after)s (at most %(limit)s, in id order: the sweep goes round them all) that
-- have not finished, or finished with failures within the hour and may still succeed (a dead job retried),
-- for the maintenance sweep that settles them: pgqueue_batch_may_settle's two branches, written apart so
-- that each is served by its own index.
(SELECT id FROM pgqueue_batch
 WHERE closed_at IS NOT NULL AND finished_at IS NULL AND id > %(after)s ORDER BY id LIMIT %(limit)s)
UNION
(SELECT id FROM pgqueue_batch
 WHERE finished_at > now() - interval '1 hour' AND succeeded_at IS NULL AND cancelled_at IS NULL
   AND on_success IS NOT NULL AND id > %(after)s ORDER BY id LIMIT %(limit)s)
ORDER BY id LIMIT %(limit)s;

-- name: outbox_insert_many
-- Publish events in the caller's transaction (pgqueue.publish): the relay turns each into its
-- subscribers' jobs once the transaction has committed (never, if it rolls back).
INSERT INTO pgqueue_outbox (topic, key, payload, created_at)
SELECT e.topic, e.key, e.payload::jsonb, now()
FROM unnest(%(topics)s::text[], %(keys)s::text[], %(payloads)s::text[]) WITH ORDINALITY AS e(topic, key, payload, ord)
ORDER BY e.ord
RETURNING id;

-- name: outbox_claim
-- The relay's next events (at most %(limit)s, in publish order), locked until its transaction ends; a row
-- another relay holds is skipped.
SELECT id, topic, key, payload::text AS payload, created_at
FROM pgqueue_outbox
WHERE relayed_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: outbox_deliver_many
-- Record deliveries (event, subscriber) with the ids their jobs will have; a delivery already recorded is
-- left alone (its unique constraint), so a relay run again never enqueues one twice. Returns the new ones.
INSERT INTO pgqueue_outbox_delivery (event_id, subscriber, job_id, created_at)
SELECT d.event_id, d.subscriber, nextval(pg_get_serial_sequence('pgqueue_job', 'id')), now()
FROM unnest(%(event_ids)s::bigint[], %(subscribers)s::text[]) WITH ORDINALITY AS d(event_id, subscriber, ord)
ORDER BY d.ord
ON CONFLICT (event_id, subscriber) DO NOTHING
RETURNING event_id, subscriber, job_id;

-- name: outbox_mark_relayed
-- Mark claimed events relayed, with the number of subscribers each was delivered to.
UPDATE pgqueue_outbox o SET relayed_at = now(), deliveries = r.deliveries
FROM unnest(%(ids)s::bigint[], %(deliveries)s::int[]) AS r(id, deliveries)
WHERE o.id = r.id AND o.relayed_at IS NULL;

-- name: outbox_prune
-- Delete events relayed more than %(keep)s seconds ago, with their delivery rows, a bounded batch at a time.
WITH gone AS (
    SELECT id FROM pgqueue_outbox
    WHERE relayed_at < now() - make_interval(secs => %(keep)s)
    ORDER BY relayed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deliveries AS (
    DELETE FROM pgqueue_outbox_delivery WHERE event_id IN (SELECT id FROM gone)
), deleted AS (
    DELETE FROM pgqueue_outbox WHERE id IN (SELECT id FROM gone) RETURNING id
)
SELECT count(*) FROM deleted;

-- name: schedule_sync_many
-- Write the declared schedules' definitions (a changed expression or zone starts over from now: the ticks
-- the old one missed are not run); an operator's enabled switch and the ticks are kept. Schedules this
-- code does not declare are marked so (for the admin: each scheduler runs only its own).
WITH input AS (
    SELECT * FROM unnest(%(names)s::text[], %(tasks)s::text[], %(crons)s::text[], %(timezones)s::text[],
                         %(args)s::text[], %(kwargs)s::text[], %(catch_ups)s::boolean[])
        AS s(name, task, cron, timezone, args, kwargs, catch_up)
), upserted AS (
    INSERT INTO pgqueue_schedule AS s (name, task, cron, timezone, args, kwargs, catch_up, enabled, declared,
                                       created_at, updated_at)
    SELECT name, task, cron, timezone, args::jsonb, kwargs::jsonb, catch_up, true, true, now(), now() FROM input
    ON CONFLICT (name) DO UPDATE
    SET task = EXCLUDED.task, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, args = EXCLUDED.args,
        kwargs = EXCLUDED.kwargs, catch_up = EXCLUDED.catch_up, declared = true, updated_at = now(),
        next_tick_at = CASE WHEN s.cron = EXCLUDED.cron AND s.timezone = EXCLUDED.timezone THEN s.next_tick_at END,
        last_tick_at = CASE WHEN s.cron = EXCLUDED.cron AND s.timezone = EXCLUDED.timezone THEN s.last_tick_at
                            ELSE now() END
    WHERE (s.task, s.cron, s.timezone, s.args, s.kwargs, s.catch_up, s.declared)
          IS DISTINCT FROM (EXCLUDED.task, EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.args, EXCLUDED.kwargs,
                            EXCLUDED.catch_up, true)
), undeclared AS (
    UPDATE pgqueue_schedule SET declared = false, updated_at = now()
    WHERE declared AND name <> ALL(%(names)s::text[])
)
SELECT count(*) FROM input;

-- name: schedule_due
-- Enabled schedules among %(names)s (those this scheduler declares) whose next tick has come (or is not
-- known yet), with the database's time.
SELECT name, last_tick_at, created_at, now() AS now
FROM pgqueue_schedule
WHERE name = ANY(%(names)s::text[]) AND enabled AND (next_tick_at IS NULL OR next_tick_at <= now())
ORDER BY name;

-- name: schedule_soonest
-- When the next tick of an enabled schedule among %(names)s comes, with the database's time.
SELECT min(next_tick_at) AS next_tick_at, now() AS now
FROM pgqueue_schedule WHERE name = ANY(%(names)s::text[]) AND enabled;

-- name: schedule_advance
-- Move a schedule on: its ticks up to %(last_tick)s are dealt with, its next one is %(next_tick)s (two
-- schedulers moving it at once: the later time stands).
UPDATE pgqueue_schedule
SET last_tick_at = GREATEST(COALESCE(last_tick_at, '-infinity'), %(last_tick)s::timestamptz),
    next_tick_at = GREATEST(COALESCE(next_tick_at, '-infinity'), %(next_tick)s::timestamptz), updated_at = now()
WHERE name = %(name)s;

-- name: schedule_tick_take
-- Take a tick of a schedule (a manual run: now) before enqueueing its job, in the same transaction: the
-- unique (schedule, tick) row decides between schedulers (the later one waits for the earlier's commit,
-- then gets no row and enqueues nothing).
INSERT INTO pgqueue_schedule_tick (schedule, tick, manual, created_at)
VALUES (%(name)s, COALESCE(%(tick)s::timestamptz, now()), %(manual)s, now())
ON CONFLICT (schedule, tick) DO NOTHING
RETURNING id;

-- name: schedule_tick_set_job
-- Record the job enqueued for a tick taken in this transaction, on the tick and as its schedule's last job.
WITH tick AS (
    UPDATE pgqueue_schedule_tick SET job_id = %(job_id)s WHERE id = %(id)s
)
UPDATE pgqueue_schedule SET last_job_id = %(job_id)s, updated_at = now() WHERE name = %(name)s;

-- name: schedule_set_enabled
-- An operator's switch: enable or disable schedules.
UPDATE pgqueue_schedule SET enabled = %(enabled)s, updated_at = now()
WHERE name = ANY(%(names)s::text[]) AND enabled <> %(enabled)s
RETURNING name;

-- name: schedule_tick_prune
-- Delete tick rows older than %(keep)s seconds, a bounded batch at a time (the schedule keeps its last tick).
WITH gone AS (
    SELECT id FROM pgqueue_schedule_tick WHERE created_at < now() - make_interval(secs => %(keep)s)
    ORDER BY id
    LIMIT %(limit)s
)
DELETE FROM pgqueue_schedule_tick WHERE id IN (SELECT id FROM gone);

-- name: semaphore_waiting_keys
-- Keys with blocked jobs that may run now (at most %(limit)s), for the maintenance hand-off sweep.
SELECT DISTINCT concurrency_key AS key
FROM (SELECT concurrency_key FROM pgqueue_job
      WHERE state = 'blocked' AND run_at <= now()
      ORDER BY concurrency_key LIMIT 50000) b
LIMIT %(limit)s;

-- name: semaphore_slot_reap
-- Free slots whose holder no longer holds them (it finished or was deleted without giving its slot
-- back): a semaphore slot is held by a ready, running or scheduled job with that key and slot number, a
-- queue's running slot by a running job of that queue with that queue_slot. A slot that changed holder
-- since this statement began is left alone.
UPDATE pgqueue_semaphore_slot s SET job_id = NULL
FROM (
    SELECT o.id, o.job_id FROM pgqueue_semaphore_slot o
    WHERE o.job_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pgqueue_job j
        WHERE j.id = o.job_id
          AND ((j.concurrency_key = o.key AND j.slot = o.number AND j.state IN ('ready', 'running', 'scheduled'))
               OR (o.key = 'pgqueue:queue:' || j.queue AND j.queue_slot = o.number AND j.state = 'running')))
) orphan
WHERE s.id = orphan.id AND s.job_id = orphan.job_id
RETURNING s.key;

-- name: lock_reap
-- Release uniqueness keys whose job no longer holds them (done, or never inserted), and delete keys that
-- are released and past their window (idempotency keys included), %(limit)s at a time.
WITH orphaned AS (
    UPDATE pgqueue_lock l SET released = true
    FROM (
        SELECT o.id, o.job_id FROM pgqueue_lock o
        WHERE o.kind = 'unique' AND NOT o.released AND NOT EXISTS (
            SELECT 1 FROM pgqueue_job j
            WHERE j.id = o.job_id AND j.lock_key = o.key
              AND (j.state IN ('scheduled', 'ready', 'blocked', 'waiting')
                   OR (j.state = 'running' AND o.until = 'finished')))
        LIMIT %(limit)s
    ) x
    WHERE l.id = x.id AND l.job_id = x.job_id AND NOT l.released
    RETURNING l.id
), expired AS (
    DELETE FROM pgqueue_lock
    WHERE id IN (SELECT id FROM pgqueue_lock
                 WHERE released AND (expires_at IS NULL OR expires_at <= now())
                 LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)
    RETURNING id
)
SELECT (SELECT count(*) FROM orphaned) AS released, (SELECT count(*) FROM expired) AS deleted;

-- name: job_get_held_by_worker
-- The running jobs a worker process still held when it exited, locked for the transition that follows.
SELECT id, queue, task, attempts AS attempt, max_attempts, lost_attempts, crashes, lease_token, started_at,
    leased_by, lock_key, concurrency_key, slot, concurrency_hold, timeout
FROM pgqueue_job
WHERE state = 'running' AND leased_by = %(worker)s
FOR UPDATE SKIP LOCKED;

-- name: job_get_expired
-- Running jobs taken back from their worker (at most %(limit)s), locked: its process is dead (marked by its
-- supervisor or by workerprocess_reap, which runs first), or the lease ran out and the worker no longer holds
-- the job (its last heartbeat, which extends every lease it holds, came after) or is unknown. A lease that ran out
-- while its process is alive but silent (a job holding the interpreter starves the heartbeat thread) is
-- never enough: the process may still be running the job, and its supervisor vouches for it.
SELECT j.id, j.queue, j.task, j.attempts AS attempt, j.max_attempts, j.lost_attempts, j.crashes, j.lease_token,
    j.started_at, j.leased_by, j.lock_key, j.concurrency_key, j.slot, j.concurrency_hold, j.timeout
FROM pgqueue_job j
LEFT JOIN pgqueue_workerprocess w ON w.id = j.leased_by
WHERE j.state = 'running'
  AND pgqueue_lease_rescuable(w.state, j.lease_expires_at, w.last_heartbeat, w.id IS NOT NULL, now())
LIMIT %(limit)s
FOR UPDATE OF j SKIP LOCKED;

-- name: job_stage_due
-- Make scheduled jobs whose run_at has come ready (or 'blocked', if they need a semaphore slot they do not
-- hold: semaphore_hand_off gives them one), and wake workers of their queues (',rated:<queue>' for jobs
-- with a rate key).
WITH due AS (
    UPDATE pgqueue_job j
    SET state = pgqueue_runnable_state(j.run_at, j.concurrency_key, j.slot)  -- its run_at has come
    WHERE j.id = ANY(ARRAY(  -- by id, whatever the statistics say (see job_lease)
        SELECT id FROM pgqueue_job
        WHERE state = 'scheduled' AND run_at <= now()
        ORDER BY run_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED))
    RETURNING j.id, j.queue, j.state, j.rate_key
), wake AS (
    SELECT pg_notify(%(channel)s, q.payload)
    FROM (SELECT DISTINCT pgqueue_wake_payload(queue, rate_key) AS payload
          FROM due WHERE state = 'ready') q
)
SELECT count(*) AS staged, (SELECT count(*) FROM wake) AS woken FROM due;

-- name: job_heartbeat
-- Extend a worker's leases on the jobs it still runs (ids with their lease tokens); say which of them it
-- still holds and which have a cancel request. Each row is looked up by its id: the partial index of
-- running rows holds an entry for every job that ran since the last vacuum. It never waits: a row locked
-- by a completion being written (or a rescue) is not extended, and is reported from this statement's
-- snapshot. A worker that was declared dead while unreachable is alive again (its old leases were rescued).
WITH beat AS (
    UPDATE pgqueue_workerprocess
    SET last_heartbeat = now(), state = CASE WHEN state = 'dead' THEN 'running' ELSE state END,
        stopped_at = CASE WHEN state = 'dead' THEN NULL ELSE stopped_at END
    WHERE id = %(worker)s
), held AS (
    SELECT j.id, j.cancel_requested, h.token
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS h(id, token)
    CROSS JOIN LATERAL (SELECT r.id, r.cancel_requested, r.state, r.leased_by, r.lease_token
                        FROM pgqueue_job r WHERE r.id = h.id OFFSET 0) j
    WHERE j.state = 'running' AND j.leased_by = %(worker)s AND j.lease_token = h.token
), extended AS (
    UPDATE pgqueue_job
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    -- the token guards alone, as in job_set_state_if_running_many: naming the state let a kept plan walk
    -- the worker's entries in the index of running rows for each job (n x n)
    WHERE id = ANY(ARRAY(SELECT j.id FROM held h
                         CROSS JOIN LATERAL (SELECT r.id FROM pgqueue_job r
                                             WHERE r.id = h.id AND r.lease_token = h.token
                                             FOR UPDATE SKIP LOCKED) j))
    RETURNING id, cancel_requested
)
SELECT id, bool_or(cancel_requested) AS cancel_requested  -- held: extended, or being written (its snapshot)
FROM (SELECT id, cancel_requested FROM extended UNION ALL SELECT id, cancel_requested FROM held) x
GROUP BY id;  -- one pass: "held rows not extended" as a NOT IN was a loop over both (n x n) in a kept plan

-- name: job_progress_many
-- Store the latest progress reports of running jobs (guarded by lease token).
UPDATE pgqueue_job j
SET progress = p.value, progress_message = p.message
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(values)s::float8[], %(messages)s::text[])
    AS p(id, token, value, message)
WHERE j.id = p.id AND j.state = 'running' AND j.lease_token = p.token;

-- name: job_cancel_many
-- Cancel waiting jobs now, releasing their uniqueness keys and returning the semaphore slots they gave up
-- (for semaphore_hand_off in the same transaction) and whether they have a batch or dependents (for
-- pgqueue.settle); ask running ones to stop (their worker sees it at its next heartbeat).
WITH old AS (
    SELECT id, slot FROM pgqueue_job
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('scheduled', 'ready', 'blocked', 'waiting')
    ORDER BY id
    FOR UPDATE
), waiting AS (
    UPDATE pgqueue_job j
    SET state = 'cancelled', finished_at = now(), reason_code = '', slot = NULL
    FROM old
    WHERE j.id = old.id AND j.state IN ('scheduled', 'ready', 'blocked', 'waiting')
    RETURNING j.id, j.state, j.lock_key, CASE WHEN old.slot IS NOT NULL THEN j.concurrency_key END AS slot_key,
        old.slot, j.batch_id, j.has_dependents
), unlocked AS (
    UPDATE pgqueue_lock l SET released = true  -- each key by (kind, key): never a walk of all keys
    WHERE l.id = ANY(ARRAY(
        SELECT h.id FROM (SELECT w.id, w.lock_key FROM waiting w WHERE w.lock_key IS NOT NULL OFFSET 0) w
        CROSS JOIN LATERAL (SELECT h.id FROM pgqueue_lock h
                            WHERE h.kind = 'unique' AND h.key = w.lock_key AND h.job_id = w.id
                              AND NOT h.released
                            FOR UPDATE SKIP LOCKED) h))
), running AS (
    UPDATE pgqueue_job
    SET cancel_requested = true
    WHERE id IN (SELECT id FROM pgqueue_job WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running'
                 ORDER BY id FOR UPDATE)
      AND state = 'running'
    RETURNING id, 'cancelling'::text AS state
)
SELECT id, state, slot_key, slot, batch_id, has_dependents FROM waiting
UNION ALL
SELECT id, state, NULL, NULL, NULL, false FROM running;

-- name: job_retry_many
-- Run waiting jobs now (a job waiting for its dependencies too: the operator asked); give dead or
-- cancelled jobs one more attempt (same job, history kept). A job
-- that needs a semaphore slot it does not hold waits for one ('blocked': semaphore_hand_off follows).
-- A uniqueness key it released is not taken again: the operator asked for this run. A job with a rate key
-- still waits for its token (job_lease_limited).
WITH moved AS (
    UPDATE pgqueue_job
    SET state = pgqueue_runnable_state(now(), concurrency_key, slot),
        run_at = now(), finished_at = NULL, reason_code = '', cancel_requested = false,
        max_attempts = CASE WHEN state IN ('dead', 'cancelled')
                            THEN GREATEST(max_attempts, attempts - lost_attempts + 1) ELSE max_attempts END,
        lost_attempts = 0, crashes = 0, waiting_on = 0
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('scheduled', 'ready', 'blocked', 'waiting', 'dead', 'cancelled')
    RETURNING id, queue, state, concurrency_key, rate_key
), wake AS (
    SELECT pg_notify(%(channel)s, q.payload)
    FROM (SELECT DISTINCT pgqueue_wake_payload(queue, rate_key) AS payload
          FROM moved WHERE state = 'ready') q
)
SELECT id, (SELECT count(*) FROM wake) AS woken, CASE WHEN state = 'blocked' THEN concurrency_key END AS key
FROM moved;

-- name: job_delete_finished_many
-- Delete finished jobs (succeeded, dead, cancelled) and their attempts; other states are left alone.
WITH gone AS (
    SELECT id FROM pgqueue_job
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('succeeded', 'dead', 'cancelled')
    FOR UPDATE
), attempts AS (
    DELETE FROM pgqueue_attempt WHERE job_id IN (SELECT id FROM gone)
)
DELETE FROM pgqueue_job WHERE id IN (SELECT id FROM gone) RETURNING id;

-- name: queuestate_set_paused
-- Pause or resume queues (creating their rows as needed); workers stop or start leasing from them. An
-- operator's pause or resume overrides a tripped circuit breaker (its cool-down and streak are cleared).
INSERT INTO pgqueue_queuestate (name, paused, updated_at)
SELECT name, %(paused)s, now() FROM unnest(%(names)s::text[]) AS q(name)
ON CONFLICT (name) DO UPDATE
SET paused = EXCLUDED.paused, pause_when_empty = false, paused_reason = '', resume_at = NULL, breaker_failures = 0,
    breaker_first_failure_at = NULL, updated_at = now()
RETURNING name, (CASE WHEN NOT paused THEN pg_notify(%(channel)s, name) END IS NULL) AS quiet;

-- name: queuestate_resume_due
-- Resume queues whose circuit breaker's cool-down is over, and record it in the audit log.
WITH resumed AS (
    UPDATE pgqueue_queuestate
    SET paused = false, paused_reason = '', resume_at = NULL, updated_at = now()
    WHERE paused AND resume_at <= now()
    RETURNING name
), audit AS (
    INSERT INTO pgqueue_auditentry (at, username, action, target, count, selected, object_ids, scope)
    SELECT now(), 'pgqueue circuit breaker', 'breaker_resumed', 'queue', 1, 1, jsonb_build_array(name),
        'cool-down over'
    FROM resumed
), wake AS (
    SELECT pg_notify(%(channel)s, name) FROM resumed
)
SELECT name, (SELECT count(*) FROM wake) AS woken FROM resumed;

-- name: queuestate_set_breaker
-- Set or clear a queue's circuit breaker (creating its row as needed); its streak starts over.
INSERT INTO pgqueue_queuestate (name, breaker_threshold, breaker_window, breaker_cooldown, updated_at)
VALUES (%(name)s, %(threshold)s, %(window)s, %(cooldown)s, now())
ON CONFLICT (name) DO UPDATE
SET breaker_threshold = EXCLUDED.breaker_threshold, breaker_window = EXCLUDED.breaker_window,
    breaker_cooldown = EXCLUDED.breaker_cooldown, breaker_failures = 0, breaker_first_failure_at = NULL,
    updated_at = now()
RETURNING name;

-- name: queuestate_pause_drained
-- Pause queues marked "drain and pause" once none of their jobs is ready or running.
UPDATE pgqueue_queuestate s
SET paused = true, pause_when_empty = false, updated_at = now()
WHERE s.pause_when_empty AND NOT s.paused
  -- one probe per partial index (ready without and with a rate key, running): never a scan of the history
  AND NOT EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.queue = s.name AND j.state = 'ready' AND j.rate_key IS NULL)
  AND NOT EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.queue = s.name AND j.state = 'ready' AND j.rate_key IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM pgqueue_job j WHERE j.queue = s.name AND j.state = 'running')
RETURNING s.name;

-- name: queuestate_drain
-- Mark queues "drain and pause": keep working until none of their jobs is ready or running, then pause.
INSERT INTO pgqueue_queuestate (name, pause_when_empty, updated_at)
SELECT name, true, now() FROM unnest(%(names)s::text[]) AS q(name)
ON CONFLICT (name) DO UPDATE
SET pause_when_empty = true, paused = false, paused_reason = '', resume_at = NULL, updated_at = now()
RETURNING name;

-- name: job_get_replayable
-- The dead or cancelled jobs among these ids, with an id reserved for the copy pgqueue.operations.replay
-- inserts of each (job_insert_many: a copy keeps the semaphore and rate key, not the uniqueness and
-- idempotency keys).
SELECT j.id, nextval(pg_get_serial_sequence('pgqueue_job', 'id')) AS copy_id, j.queue, j.task, j.args::text AS args,
    j.kwargs::text AS kwargs, j.priority, j.max_attempts, j.timeout, j.concurrency_key, j.concurrency_hold, j.rate_key
FROM pgqueue_job j
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state IN ('dead', 'cancelled')
ORDER BY j.id;

-- name: job_prune
-- Delete finished jobs (and their attempts) past their retention, at most %(limit)s, oldest first; with
-- %(archive)s, copy each to pgqueue_archivedjob first (the row and its attempts as JSON). Retention is per
-- finished state (keep_* seconds; NULL: that state is not pruned) unless a rule of its queue says otherwise;
-- %(queues)s (NULL: all) limits it to some queues. Rows a transaction holds are skipped, never waited for.
WITH rules AS (
    SELECT * FROM unnest(%(rule_queues)s::text[], %(rule_states)s::text[], %(rule_keeps)s::float8[])
        AS r(queue, state, keep)
), gone AS (
    SELECT j.id FROM pgqueue_job j
    WHERE j.state IN ('succeeded', 'dead', 'cancelled')
      AND j.finished_at < now() - make_interval(secs => %(min_keep)s)
      AND (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
      AND j.finished_at < now() - make_interval(secs => COALESCE(
          (SELECT r.keep FROM rules r WHERE r.queue = j.queue AND r.state = j.state),
          CASE j.state WHEN 'succeeded' THEN %(keep_succeeded)s::float8 WHEN 'dead' THEN %(keep_dead)s::float8
                       ELSE %(keep_cancelled)s::float8 END))
      -- a batch's jobs stay until batch_settle can no longer need them (the batches batch_unsettled lists):
      -- a dead job pruned first would let its batch report success
      AND (j.batch_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM pgqueue_batch b WHERE b.id = j.batch_id
            AND pgqueue_batch_may_settle(b.finished_at, b.succeeded_at, b.cancelled_at, b.on_success)))
    ORDER BY j.finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), ids AS (  -- as one array: each delete below is then an index lookup per id, whatever the plan
    SELECT COALESCE(array_agg(id), '{}') AS ids FROM gone
), archived AS (
    INSERT INTO pgqueue_archivedjob (id, queue, task, state, reason_code, created_at, finished_at, archived_at,
                                     job, attempts)
    SELECT j.id, j.queue, j.task, j.state, j.reason_code, j.created_at, j.finished_at, now(), to_jsonb(j),
        COALESCE((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.id) FROM pgqueue_attempt a WHERE a.job_id = j.id),
                 '[]'::jsonb)
    FROM pgqueue_job j
    WHERE %(archive)s AND j.id = ANY((SELECT ids FROM ids)::bigint[])
    ON CONFLICT (id) DO NOTHING
), attempts AS (
    DELETE FROM pgqueue_attempt WHERE job_id = ANY((SELECT ids FROM ids)::bigint[]) RETURNING 1
), deleted AS (
    DELETE FROM pgqueue_job WHERE id = ANY((SELECT ids FROM ids)::bigint[]) RETURNING id
)
SELECT (SELECT count(*) FROM deleted) AS jobs, (SELECT count(*) FROM attempts) AS attempts;

-- name: job_prune_count
-- How many finished jobs job_prune would take with the same retention (pgqueue_prune --dry-run).
WITH rules AS (
    SELECT * FROM unnest(%(rule_queues)s::text[], %(rule_states)s::text[], %(rule_keeps)s::float8[])
        AS r(queue, state, keep)
)
SELECT j.state, count(*) AS count FROM pgqueue_job j
WHERE j.state IN ('succeeded', 'dead', 'cancelled')
  AND j.finished_at < now() - make_interval(secs => %(min_keep)s)
  AND (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
  AND j.finished_at < now() - make_interval(secs => COALESCE(
      (SELECT r.keep FROM rules r WHERE r.queue = j.queue AND r.state = j.state),
      CASE j.state WHEN 'succeeded' THEN %(keep_succeeded)s::float8 WHEN 'dead' THEN %(keep_dead)s::float8
                   ELSE %(keep_cancelled)s::float8 END))
  AND (j.batch_id IS NULL OR NOT EXISTS (  -- as in job_prune: a batch's jobs stay until it has settled
      SELECT 1 FROM pgqueue_batch b WHERE b.id = j.batch_id
        AND pgqueue_batch_may_settle(b.finished_at, b.succeeded_at, b.cancelled_at, b.on_success)))
GROUP BY j.state ORDER BY j.state;

-- name: archive_prune
-- Delete archived jobs archived more than %(keep)s seconds ago, at most %(limit)s.
WITH gone AS (
    SELECT id FROM pgqueue_archivedjob WHERE archived_at < now() - make_interval(secs => %(keep)s)
    ORDER BY archived_at LIMIT %(limit)s
), deleted AS (
    DELETE FROM pgqueue_archivedjob WHERE id IN (SELECT id FROM gone) RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: stat_prune
-- Delete per-minute outcome counts older than %(keep)s seconds.
DELETE FROM pgqueue_stat WHERE bucket < now() - make_interval(secs => %(keep)s);

-- name: workerprocess_register
-- Record a process (supervisor, worker or another role) as alive, with the database connections it opens,
-- or revive its row.
INSERT INTO pgqueue_workerprocess (id, kind, supervisor_id, hostname, pid, queues, concurrency, connections, state,
    started_at, last_heartbeat)
VALUES (%(id)s, %(kind)s, %(supervisor)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(connections)s,
    'running', now(), now())
ON CONFLICT (id) DO UPDATE
SET state = 'running', pid = EXCLUDED.pid, connections = EXCLUDED.connections, last_heartbeat = now(),
    stopped_at = NULL;

-- name: workerprocess_heartbeat
-- Say a process without leases (supervisor, maintenance) is alive.
UPDATE pgqueue_workerprocess SET last_heartbeat = now() WHERE id = %(id)s;

-- name: supervisor_heartbeat
-- A supervisor is alive and vouches for its children (%(children)s: forked and not yet reaped), whatever
-- their jobs do to their own heartbeats; a child row it no longer has is dead (its exit may have gone
-- unrecorded while the database was away), so maintenance takes its jobs back.
WITH me AS (
    UPDATE pgqueue_workerprocess SET last_heartbeat = now() WHERE id = %(id)s
), gone AS (
    UPDATE pgqueue_workerprocess
    SET state = 'dead', stopped_at = now()
    WHERE supervisor_id = %(id)s AND state IN ('running', 'stopping') AND NOT id = ANY(%(children)s::text[])
)
UPDATE pgqueue_workerprocess SET vouched_at = now()
WHERE supervisor_id = %(id)s AND id = ANY(%(children)s::text[]) AND state IN ('running', 'stopping');

-- name: workerprocess_set_state
-- Mark processes stopping, stopped or dead.
UPDATE pgqueue_workerprocess
SET state = %(state)s::text, stopped_at = CASE WHEN %(state)s::text IN ('stopped', 'dead') THEN now() END
WHERE id = ANY(%(ids)s::text[]);

-- name: workerprocess_reap
-- Mark processes dead that neither said they are alive nor were vouched for by their supervisor within
-- %(dead_after)s seconds, and forget stopped ones after a day.
WITH dead AS (
    UPDATE pgqueue_workerprocess
    SET state = 'dead', stopped_at = now()
    WHERE state IN ('running', 'stopping')
      AND pgqueue_process_silent(last_heartbeat, vouched_at, %(dead_after)s, now())
    RETURNING id
), forgotten AS (
    DELETE FROM pgqueue_workerprocess
    WHERE state IN ('stopped', 'dead') AND stopped_at < now() - interval '1 day'
)
SELECT id FROM dead;

-- name: leader_claim
-- Become the leader of a role if nobody leads it or its leader's lease ran out (by the database's clock):
-- the holder gets the next token. No row back: another process leads.
INSERT INTO pgqueue_leader AS l (role, holder, token, acquired_at, renewed_at, expires_at)
VALUES (%(role)s, %(holder)s, 1, now(), now(), now() + make_interval(secs => %(seconds)s))
ON CONFLICT (role) DO UPDATE
    SET holder = excluded.holder, token = l.token + 1, acquired_at = now(), renewed_at = now(),
        expires_at = excluded.expires_at
    WHERE l.expires_at <= now() OR l.holder = excluded.holder
RETURNING token;

-- name: leader_renew
-- Extend the leader's lease while it still holds it (same holder and token, not run out). No row back:
-- it no longer leads and must stop acting.
UPDATE pgqueue_leader
SET renewed_at = now(), expires_at = now() + make_interval(secs => %(seconds)s)
WHERE role = %(role)s AND holder = %(holder)s AND token = %(token)s AND expires_at > now()
RETURNING token;

-- name: leader_resign
-- A leader stopping on purpose lets its lease run out now, so another process takes over at its next round.
UPDATE pgqueue_leader SET expires_at = now()
WHERE role = %(role)s AND holder = %(holder)s AND token = %(token)s AND expires_at > now()
RETURNING token;

-- name: leader_get
-- Who leads a role, since when, and whether its lease still runs (doctor, explain, status).
SELECT holder, token, acquired_at, renewed_at, expires_at, expires_at > now() AS live
FROM pgqueue_leader WHERE role = %(role)s;

-- name: channel_notify
-- Send NOTIFYs on the channel (at commit of the caller's transaction), one per payload.
SELECT count(pg_notify(%(channel)s, p)) AS sent FROM unnest(%(payloads)s::text[]) AS p;

-- name: session_generic_plans
-- A worker role's connection plans each prepared statement once and keeps the plan: the lease and
-- completion statements are CTEs over parameter arrays, whose custom plans cost more to make than to run.
SET plan_cache_mode = force_generic_plan;

-- name: session_discard_plans
-- Make a worker role connection's kept plans again at their next use (pgqueue.db.REPLAN_SECONDS), from the
-- tables as they are now: a plan made while the job table was empty must not outlive its growth.
DISCARD PLANS;

-- name: channel_listen
-- Wake this connection on every NOTIFY of the channel (its name is quoted in by the database layer).
LISTEN {channel};

-- name: table_estimated_rows
-- PostgreSQL's row estimate for a table (the admin counts a million-row list without scanning it).
SELECT reltuples::bigint AS estimate FROM pg_class WHERE oid = %(table)s::regclass;

-- name: job_is_leased
-- Whether a job is still running under this lease token (false once it completed in its own transaction).
SELECT EXISTS (
    SELECT 1 FROM pgqueue_job WHERE id = %(id)s AND state = 'running' AND lease_token = %(token)s
) AS held;

-- name: devdb_database_exists
-- Whether the development server (pgqueue.devdb) already has this database.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s) AS exists;

-- name: devdb_create_database
-- Create a database on the development server (its name is quoted in by the database layer).
CREATE DATABASE {database};
