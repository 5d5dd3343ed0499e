"""Template tags for pgqueue's admin pages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import mark_safe

register = template.Library()


@register.inclusion_tag("admin/pgqueue/overview.html")
def pgqueue_overview() -> dict[str, Any]:
    from pgqueue.admin.overview import overview, svg_chart

    data = overview()
    data["hour_chart"] = mark_safe(svg_chart(data["hour_bars"]))  # built from numbers and escaped labels
    data["day_chart"] = mark_safe(svg_chart(data["day_bars"]))
    return data


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"
