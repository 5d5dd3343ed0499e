"""Admin actions that confirm first (with how many rows they touch), call pgqueue.operations, and audit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from pgqueue.ops import audit
from pgqueue.text import counted

CHUNK = 5_000  # ids per statement when an action covers many rows
FROM_PAGE = "from_page"  # a button on a row's own page posts the row's key in it: the action lands back there
MADE_SHOWN = 10  # new rows an action made that its message links to


def selects_across(request: HttpRequest) -> bool:
    """Whether the action covers every row matching the filter, read as Django reads it (a form boolean:
    anything but "", "0" and "false" is true), so the page and the audit say what Django applies."""
    return bool(helpers.ActionForm.base_fields["select_across"].to_python(request.POST.get("select_across")))


def from_page(request: HttpRequest) -> str | None:
    """The key of the row whose page the action was started from, when it is the one row selected."""
    key = request.POST.get(FROM_PAGE)
    if key is None or selects_across(request) or request.POST.getlist(helpers.ACTION_CHECKBOX_NAME) != [key]:
        return None
    return key


def confirmed_action(
    *,
    name: str,
    description: str,
    permission: str,
    run: Callable[[list[Any]], Sequence[Any] | Mapping[Any, Any]],
    explain: str,
    target: str = "job",
    key: str = "pk",
    targets: Callable[[HttpRequest, QuerySet[Any]], list[Any]] | None = None,
) -> Callable[..., Any]:
    """Build an action: a confirmation page with the count, then `run(ids)` in chunks, then an audit entry.

    The action applies to the `key` of each selected row, or to what `targets(request, queryset)` returns
    when the selection is more than the rows (queues that have jobs but no row yet). `run` returns the keys
    it changed, or a mapping of each to the new row it made (a replay's new job).

    Buttons on a row's page post the same action for that one row, with FROM_PAGE: the same permission
    check, confirmation and audit, and then the row's page (or the new row's) instead of the list.
    """

    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        opts = modeladmin.model._meta
        keys = targets(request, queryset) if targets is not None else None
        selected = len(keys) if keys is not None else queryset.count()
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(request, "admin/pgqueue/confirm_action.html", {
                **modeladmin.admin_site.each_context(request),
                "title": f"{description}?",
                "opts": opts,
                "action": name,
                "description": description,
                "explain": explain,
                "selected": selected,
                "selected_text": counted(selected, str(opts.verbose_name), str(opts.verbose_name_plural)),
                "select_across": selects_across(request),
                "scope": request.GET.urlencode(),
                "sample": keys[:20] if keys is not None else list(queryset.values_list(key, flat=True)[:20]),
                "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "from_page": from_page(request),
                "from_page_name": FROM_PAGE,
                "media": modeladmin.media,
            })
        ids = keys if keys is not None else list(queryset.values_list(key, flat=True))
        changed: list[Any] = []
        made: dict[Any, Any] = {}
        for start in range(0, len(ids), CHUNK):
            done = run(ids[start:start + CHUNK])
            changed.extend(done)
            if isinstance(done, Mapping):
                made.update(done)
        audit.record(action=name, target=target, changed=[str(i) for i in changed], selected=selected,
                     scope=request.GET.urlencode() if selects_across(request) else "", user=request.user)
        modeladmin.message_user(request, _message(opts, description, len(changed), selected, made),
                                messages.SUCCESS if changed else messages.WARNING)
        return _landing(modeladmin, request, key, made)

    action.__name__ = name
    return admin.action(description=description, permissions=[permission])(action)


def _message(opts: Any, description: str, changed: int, selected: int, made: Mapping[Any, Any]) -> str:
    """ "Replay: 1 of 1 selected job changed; new job: #84.", the new rows linked to their pages."""
    rows = counted(selected, f"selected {opts.verbose_name}", f"selected {opts.verbose_name_plural}")
    text = f"{description}: {changed} of {rows} changed"
    if changed < selected:
        text += " (the others were not in a state this action applies to)" if selected > 1 else \
                " (it was not in a state this action applies to)"
    if not made:
        return text + "."
    new = list(made.values())
    links = format_html_join(", ", '<a href="{}">#{}</a>', (
        (reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[i]), i) for i in new[:MADE_SHOWN]))
    noun = opts.verbose_name if len(new) == 1 else opts.verbose_name_plural
    return format_html("{}; new {}: {}{}.", text, noun, links, ", …" if len(new) > MADE_SHOWN else "")


def _landing(modeladmin: admin.ModelAdmin, request: HttpRequest, key: str, made: Mapping[Any, Any]) -> Any:
    """Where a button on a row's page lands: the new row the action made of it, else the row itself if it
    is still there (not after a delete); None (the list) for an action started from the list."""
    row = from_page(request)
    if row is None:
        return None
    landing = next((new for old, new in made.items() if str(old) == row), row)
    if not modeladmin.get_queryset(request).filter(**{key: landing}).exists():
        return None
    opts = modeladmin.model._meta
    return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[landing]))
