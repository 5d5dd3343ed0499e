"""Admin actions that confirm first (with how many rows they touch), call pgqueue.operations, and audit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from pgqueue.ops import audit

CHUNK = 5_000  # ids per statement when an action covers many rows


def selects_across(request: HttpRequest) -> bool:
    """Whether the action covers every row matching the filter, read as Django reads it (a form boolean:
    anything but "", "0" and "false" is true), so the page and the audit say what Django applies."""
    return bool(helpers.ActionForm.base_fields["select_across"].to_python(request.POST.get("select_across")))


def confirmed_action(
    *,
    name: str,
    description: str,
    permission: str,
    run: Callable[[list[Any]], Sequence[Any]],
    explain: str,
    target: str = "job",
    key: str = "pk",
    targets: Callable[[HttpRequest, QuerySet[Any]], list[Any]] | None = None,
) -> Callable[..., Any]:
    """Build an action: a confirmation page with the count, then `run(ids)` in chunks, then an audit entry.

    The action applies to the `key` of each selected row, or to what `targets(request, queryset)` returns
    when the selection is more than the rows (queues that have jobs but no row yet).
    """

    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        keys = targets(request, queryset) if targets is not None else None
        selected = len(keys) if keys is not None else queryset.count()
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(request, "admin/pgqueue/confirm_action.html", {
                **modeladmin.admin_site.each_context(request),
                "title": f"{description}?",
                "opts": modeladmin.model._meta,
                "action": name,
                "description": description,
                "explain": explain,
                "selected": selected,
                "select_across": selects_across(request),
                "scope": request.GET.urlencode(),
                "sample": keys[:20] if keys is not None else list(queryset.values_list(key, flat=True)[:20]),
                "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": modeladmin.media,
            })
        ids = keys if keys is not None else list(queryset.values_list(key, flat=True))
        changed: list[Any] = []
        for start in range(0, len(ids), CHUNK):
            changed.extend(run(ids[start:start + CHUNK]))
        audit.record(action=name, target=target, changed=[str(i) for i in changed], selected=selected,
                     scope=request.GET.urlencode() if selects_across(request) else "", user=request.user)
        level = messages.SUCCESS if changed else messages.WARNING
        modeladmin.message_user(request, f"{description}: {len(changed)} of {selected} selected {target}(s) "
                                         "changed (the others were not in a state this action applies to).", level)
        return None

    action.__name__ = name
    return admin.action(description=description, permissions=[permission])(action)
