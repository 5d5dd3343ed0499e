"""Rows the test jobs write, so tests can see what ran (and when) from another process."""

from django.db import models


class Mark(models.Model):
    """One row per job execution that wants to be counted."""

    label = models.CharField(max_length=100, db_index=True)
    job_id = models.BigIntegerField(null=True)
    attempt = models.IntegerField(null=True)
    pid = models.IntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)


class Order(models.Model):
    """A row enqueued together with a job, for transaction tests."""

    name = models.CharField(max_length=100)
