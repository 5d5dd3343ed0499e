"""'blocked' gets one index: the semaphore hand-off's (blocked jobs of a key in enqueue order), which now
carries each job's queue for pgqueue.monitor's per-queue count; the monitor's index of other states no
longer covers 'blocked'. A kept generic plan chose that index to find one key's blocked jobs and walked all
of them (37 ms a hand-off with 18,000 blocked jobs). The new indexes are built before the old ones go, and
without blocking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("pgqueue", "0017_job_fillfactor"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(condition=models.Q(("state", "blocked")), fields=["concurrency_key", "id"],
                               include=("queue",), name="pgqueue_job_blocked_key"),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(condition=models.Q(("state__in", ["scheduled", "waiting", "dead"])),
                               fields=["queue", "state"], name="pgqueue_job_queue_states"),
        ),
        RemoveIndexConcurrently(model_name="job", name="pgqueue_job_blocked"),
        RemoveIndexConcurrently(model_name="job", name="pgqueue_job_queue_state"),
    ]
