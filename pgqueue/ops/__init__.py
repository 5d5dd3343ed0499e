"""The operations wing: what an operator reads and runs beside the engine. monitor (the snapshot of queues
and processes), metrics (Prometheus), health (the live/ready report), logs (the log lines that subscribe to
engine events), doctor (pgqueue_doctor's checks), explain (why a job is or is not running), retention
(pruning and archiving) and audit (the record of every operator action). Of the engine, only the worker
wing reaches in: the maintenance role runs retention, the worker command subscribes logs, launch and the
exporter serve metrics."""
