"""Each process records the database connections pgqueue opens for it: pgqueue_status and pgqueue_doctor
add them up against max_connections."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0022_leader"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerprocess",
            name="connections",
            field=models.IntegerField(db_default=1),
        ),
    ]
