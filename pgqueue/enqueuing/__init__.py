"""The enqueue wing: everything between a call of a job and its row in pgqueue_job.

Layers, each importing only those above it in this list (tests/unit/test_layout.py fails on any cycle):
handle (JobHandle), flow (uniqueness, semaphores, rates), options (JobOptions, JobCall, the checks),
registry (name -> job), guardrails (enqueue rate limits), scope (the batch jobs join), rows (the one merge
of a call's options, the job's and the settings into a NewJob, and the one builder of insert parameters),
insert (the named INSERT paths), api (enqueue, enqueue_many), decorator (@job), batches, workflows.
Producers outside the wing go through rows too: schedule ticks through insert, the outbox relay, replay and
batch callbacks (pgqueue.settle) through rows' builder and job_insert_many."""
