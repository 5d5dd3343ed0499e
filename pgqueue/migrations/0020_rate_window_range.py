"""Rate windows within what the SQL can compute (pgqueue.conf.RATE_WINDOW_MIN to SECONDS_MAX), as check
constraints. Windows set before this bound are brought inside it, and jobs a long window deferred past a
century are brought back to it (the bucket still decides when they start)."""

from django.db import migrations, models

CLAMP = """
UPDATE pgqueue_ratelimit SET "window" = LEAST(GREATEST("window", 0.001), 31536000)
WHERE "window" < 0.001 OR "window" > 31536000;
UPDATE pgqueue_queuestate SET rate_window = LEAST(GREATEST(rate_window, 0.001), 31536000)
WHERE rate_window < 0.001 OR rate_window > 31536000;
UPDATE pgqueue_ratelimit SET deferred_until = now() + interval '100 years'
WHERE deferred_until > now() + interval '100 years';
UPDATE pgqueue_job SET run_at = now() + interval '100 years'
WHERE state = 'scheduled' AND run_at > now() + interval '100 years';
"""


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0019_workerprocess_vouched_at"),
    ]

    operations = [
        migrations.RunSQL(CLAMP, migrations.RunSQL.noop),
        migrations.RemoveConstraint(
            model_name="ratelimit",
            name="pgqueue_ratelimit_window_positive",
        ),
        migrations.AddConstraint(
            model_name="queuestate",
            constraint=models.CheckConstraint(
                condition=models.Q(("rate_window__isnull", True),
                                   models.Q(("rate_window__gte", 0.001), ("rate_window__lte", 31536000)),
                                   _connector="OR"),
                name="pgqueue_queuestate_rate_window_range"),
        ),
        migrations.AddConstraint(
            model_name="ratelimit",
            constraint=models.CheckConstraint(condition=models.Q(("window__gte", 0.001), ("window__lte", 31536000)),
                                              name="pgqueue_ratelimit_window_range"),
        ),
    ]
