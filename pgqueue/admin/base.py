"""What every pgqueue ModelAdmin shares: read-only pages on pgqueue's database alias (PGQUEUE["DATABASE"])."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from pgqueue.conf import get_settings


def alias() -> str:
    return get_settings().DATABASE


class PgQueueAdmin(admin.ModelAdmin):
    """Read-only pages on pgqueue's alias: every change goes through an action (and so through the
    named statements of the state machine), never through Django's add/change/delete forms."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(alias())

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
