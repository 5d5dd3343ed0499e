"""What every pgqueue ModelAdmin shares: read-only pages on pgqueue's database alias (PGQUEUE["DATABASE"]),
and input checks that turn odd URLs and posts into a message instead of a database error."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect, QueryDict
from django.urls import reverse
from django.utils.html import format_html

from pgqueue.conf import get_settings

BIGINT_MAX = 2**63 - 1
NUL = "\x00"  # PostgreSQL refuses it in text: psycopg raises before the query is sent


def alias() -> str:
    return get_settings().DATABASE


def parse_id(text: str) -> int | None:
    """A row id as an operator types or links it: ASCII digits within bigint range, else None.

    `str.isdigit()` is not enough: "²".isdigit() is True but int("²") fails, and 20 digits overflow bigint
    (and int() refuses strings of more than 4,300 digits).
    """
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= BIGINT_MAX:
        return int(text)
    return None





def job_link(job_id: int | None) -> str:
    """A link to a job's page: "#42"."""
    if job_id is None:
        return "-"
    return format_html('<a href="{}">#{}</a>', reverse("admin:pgqueue_job_change", args=[job_id]), job_id)


def has_nul(query: QueryDict) -> bool:
    return any(NUL in key or any(NUL in value for value in values) for key, values in query.lists())


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

    # -- odd input: Django validates most of it; these are the values that would reach PostgreSQL -----

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        if NUL in object_id:  # no row can have it: "does not exist", as for any other unknown id
            return None
        return super().get_object(request, object_id, from_field)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if has_nul(request.GET):
            # Django's own answer to a filter it cannot apply: the unfiltered list with ?e=1.
            self.message_user(request, "A filter or search contained a NUL character, which PostgreSQL cannot "
                                       "compare; the filters were dropped.", messages.ERROR)
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        if request.method == "POST" and (bad := self._invalid_selection(request)) is not None:
            name = self.model._meta.verbose_name
            self.message_user(request, f"{bad[:40]!r} is not a valid {name} id: nothing was done.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)

    def _invalid_selection(self, request: HttpRequest) -> str | None:
        """The first selected id that is not a valid primary key (Django would filter on it and crash)."""
        pk = self.model._meta.pk
        assert pk is not None
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                if NUL in value:
                    raise ValidationError("NUL character")
                pk.run_validators(pk.to_python(value))
            except ValidationError:
                return value
        return None
