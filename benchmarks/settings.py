"""Settings for the benchmark: pgqueue's defaults on a real PostgreSQL (DATABASE_URL or embedded)."""

import os
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("DATABASE_URL"):
    from pgqueue.devdb import database_url

    os.environ["DATABASE_URL"] = database_url(ROOT / ".pgdata", "pgqueue_bench")

DATABASES = {"default": environ.Env().db_url_config(os.environ["DATABASE_URL"])}
SECRET_KEY = "pgqueue-benchmark"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "pgqueue", "benchmarks"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PGQUEUE = {"DEFAULT_QUEUE": "bench"}
# The pooled workloads (w1_pooled, w3_pooled): the workers' DATABASE_URL is the pooler, this the server itself.
if os.environ.get("PGQUEUE_BENCH_DIRECT_URL"):
    DATABASES["direct"] = environ.Env().db_url_config(os.environ["PGQUEUE_BENCH_DIRECT_URL"])
# The django.tasks workloads (Django 6.0+, `--only tasks`): the same queue through pgqueue's backend.
import django  # noqa: E402

if django.VERSION >= (6, 0):
    TASKS = {"default": {"BACKEND": "pgqueue.tasks.PgQueueBackend", "QUEUES": ["bench"]}}
