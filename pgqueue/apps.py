"""Django app config: wires the settings reset, the system checks and the process's metrics."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class PgQueueConfig(AppConfig):
    name = "pgqueue"
    verbose_name = "pgqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from pgqueue import checks, conf  # noqa: F401  (registers the checks)

        def reset_settings(setting: str, **_: Any) -> None:
            if setting == "PGQUEUE":
                conf.reset()

        setting_changed.connect(reset_settings, weak=False, dispatch_uid="pgqueue-reset-settings")
        from pgqueue.ops import metrics

        metrics.install()  # counts this process's enqueues and jobs from the events (pgqueue.events)
        from django.conf import settings

        backends = getattr(settings, "TASKS", None)
        if isinstance(backends, dict) and any(
                isinstance(c, dict) and c.get("BACKEND") == "pgqueue.tasks.PgQueueBackend" for c in backends.values()):
            # the django.tasks backend: a worker then finds any Task by its module_path (and Django 5.2 is
            # told at start that it needs 6.0)
            import pgqueue.tasks  # noqa: F401

