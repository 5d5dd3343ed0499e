"""A worker's supervisor says it is alive: liveness that the jobs a worker runs cannot starve."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0018_blocked_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerprocess",
            name="vouched_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
