"""What every pgqueue ModelAdmin shares: querysets on pgqueue's database alias (PGQUEUE["DATABASE"])."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from pgqueue.conf import get_settings


def alias() -> str:
    return get_settings().DATABASE


class PgQueueAdmin(admin.ModelAdmin):
    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(alias())
