"""Settings for pgqueue's test suite: a real PostgreSQL (DATABASE_URL, or the embedded dev server)."""

import os
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parent.parent

if not os.environ.get("DATABASE_URL"):
    from pgqueue.devdb import database_url

    # Children (worker processes, benchmark runs) inherit this and skip starting a server.
    os.environ["DATABASE_URL"] = database_url(ROOT / ".pgdata", "pgqueue")
    os.environ.setdefault("PGQUEUE_TEST_DEVDB", str(ROOT / ".pgdata"))

env = environ.Env()
DATABASES = {
    "default": env.db_url_config(os.environ["DATABASE_URL"]),
    # A second alias to the same server, for the "caller's transaction is on another database" tests.
    "other": env.db_url_config(os.environ["DATABASE_URL"]),
}
# Behind a pooler (tests/pooler): DATABASE_URL is the pool, this alias the server itself, for LISTEN.
if os.environ.get("PGQUEUE_TEST_DIRECT_URL"):
    DATABASES["direct"] = env.db_url_config(os.environ["PGQUEUE_TEST_DIRECT_URL"])
    DATABASES["direct"]["TEST"] = {"MIRROR": "default"}
# Worker processes started by tests may keep connections between jobs (CONN_MAX_AGE > 0).
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("PGQUEUE_TEST_CONN_MAX_AGE", "0"))
# Named after the main test database, so runs against different DATABASE_URL names do not collide.
DATABASES["other"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_other"}
if os.environ.get("PGQUEUE_TEST_OTHER_DB"):
    DATABASES["other"]["NAME"] = os.environ["PGQUEUE_TEST_OTHER_DB"]

SECRET_KEY = "pgqueue-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pgqueue",
    "tests.testapp",
]
if os.environ.get("PGQUEUE_TEST_BROKEN_APP"):
    INSTALLED_APPS.append("tests.brokenapp")  # its jobs module fails to import
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
PGQUEUE = {
    "HEARTBEAT_SECONDS": 0.5,
    "LEASE_SECONDS": 5.0,
    "WORKER_DEAD_AFTER": 3.0,
    "POLL_SECONDS": 0.5,
    "MAINTENANCE_SECONDS": 0.2,
    "LEADER_SECONDS": 2.0,
    "RETRY_BACKOFF": 0.1,
    "RETRY_BACKOFF_MAX": 0.5,
}

# The django.tasks backend (Django 6.0+): tests/tasks and tests/process/test_tasks.py.
import django  # noqa: E402

if django.VERSION >= (6, 0):
    TASKS = {
        "default": {"BACKEND": "pgqueue.tasks.PgQueueBackend", "QUEUES": [], "OPTIONS": {"max_attempts": 1}},
        "declared": {"BACKEND": "pgqueue.tasks.PgQueueBackend", "QUEUES": ["default", "tasks-b"]},
        "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }
