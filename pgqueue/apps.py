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

