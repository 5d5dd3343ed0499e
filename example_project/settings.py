"""Settings for the pgqueue example project (a small shop that enqueues jobs inside transactions)."""

import os
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parent.parent
env = environ.Env()

if not os.environ.get("DATABASE_URL"):
    from pgqueue.devdb import database_url

    os.environ["DATABASE_URL"] = database_url(ROOT / ".pgdata", "pgqueue_example")

DATABASES = {"default": env.db_url_config(os.environ["DATABASE_URL"])}
SECRET_KEY = env("SECRET_KEY", default="pgqueue-example-not-secret")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
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
    "example_project.shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
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
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PGQUEUE = {"QUEUES": ["default", "emails", "reports"]}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgqueue": {"handlers": ["console"], "level": "INFO"}},
}
