"""The maintenance leader is elected through a table with an expiry and a fencing token (not a session
advisory lock): it holds through a transaction pooler and across hosts."""

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0021_state_rule_functions"),
    ]

    operations = [
        migrations.CreateModel(
            name="Leader",
            fields=[
                ("role", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("holder", models.CharField(max_length=64)),
                ("token", models.BigIntegerField()),
                ("acquired_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("renewed_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("expires_at", models.DateTimeField()),
            ],
            options={
                "verbose_name": "leader",
                "verbose_name_plural": "leaders",
                "db_table": "pgqueue_leader",
            },
        ),
    ]
