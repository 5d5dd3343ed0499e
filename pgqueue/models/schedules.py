"""Recurring schedules (docs/schedules.md): one row per declared schedule (its definition, the operator's
on/off switch, its last and next tick), and one row per tick enqueued. The tick row's unique
(schedule, tick) constraint is what enqueues each tick once across any number of schedulers."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Schedule(models.Model):
    name = models.CharField(max_length=200, primary_key=True)
    task = models.CharField(max_length=255, help_text="The job it enqueues.")
    cron = models.CharField(max_length=255, help_text="croniter expression (5 fields, or 6 with seconds last).")
    timezone = models.CharField(max_length=64, db_default="UTC")
    args = models.JSONField(default=list, db_default=[])
    kwargs = models.JSONField(default=dict, db_default={})
    catch_up = models.BooleanField(db_default=False, help_text="After downtime, enqueue every missed tick "
                                                               "(else only the latest one).")
    enabled = models.BooleanField(db_default=True, help_text="An operator's switch, kept across deploys.")
    declared = models.BooleanField(db_default=True, help_text="Still declared in settings or code.")
    last_tick_at = models.DateTimeField(null=True, blank=True, help_text="Ticks up to this time were dealt with (enqueued, or skipped after downtime).")
    next_tick_at = models.DateTimeField(null=True, blank=True)
    last_job_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_schedule"
        ordering = ["name"]
        permissions = [("trigger_schedule", "Can run a schedule now"), ("toggle_schedule", "Can enable or disable schedules")]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron})"


class ScheduleTick(models.Model):
    id = models.BigAutoField(primary_key=True)
    schedule = models.ForeignKey(Schedule, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                 related_name="ticks", db_column="schedule")
    tick = models.DateTimeField(help_text="The time the expression named (for a manual run: when it was asked).")
    job_id = models.BigIntegerField(null=True, blank=True, help_text="The job enqueued for it.")
    manual = models.BooleanField(db_default=False, help_text="Run now by an operator.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pgqueue_schedule_tick"
        ordering = ["-tick"]
        constraints = [models.UniqueConstraint(fields=["schedule", "tick"], name="pgqueue_schedule_tick_once")]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.tick}"
