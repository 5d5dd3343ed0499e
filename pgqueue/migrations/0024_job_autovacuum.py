"""pgqueue_job gets the autovacuum settings pgqueue_doctor asks for: every job leaves dead rows as it runs,
so the table is vacuumed once 1% of its rows are dead and analysed once 2% changed (the server's defaults,
20% and 10%, are meant for ordinary tables). A fresh install's doctor then reads all-ok."""

from django.db import migrations

TUNED = "autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02"


class Migration(migrations.Migration):
    dependencies = [
        ("pgqueue", "0023_workerprocess_connections"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"ALTER TABLE pgqueue_job SET ({TUNED})",
            reverse_sql="ALTER TABLE pgqueue_job RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)",
        ),
    ]
