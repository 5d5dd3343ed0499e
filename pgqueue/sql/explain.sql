-- Read-only statements of manage.py pgqueue_explain (pgqueue.explain) that the ORM cannot express; the
-- explanation itself reads the models.

-- name: explain_job_id_last
-- The highest id the job sequence has given so far (NULL: none), to tell an id never given from a job gone.
SELECT pg_sequence_last_value(pg_get_serial_sequence('pgqueue_job', 'id')::regclass) AS last_id;
