"""Template tags for pgqueue's admin pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils.html import escape, format_html_join
from django.utils.safestring import SafeString, mark_safe

from pgqueue.text import counted

register = template.Library()


@register.inclusion_tag("admin/pgqueue/overview.html")
def pgqueue_overview() -> dict[str, Any]:
    from pgqueue.admin.charts import svg_chart
    from pgqueue.admin.overview import overview

    data = overview()
    # built from numbers and escaped labels
    data["hour_chart"] = mark_safe(svg_chart(data["hour_bars"], step=dt.timedelta(minutes=1),
                                             label="Jobs finished per minute, last hour"))
    data["day_chart"] = mark_safe(svg_chart(data["day_bars"], step=dt.timedelta(hours=1),
                                            label="Jobs finished per hour, last 24 hours"))
    return data


@register.filter
def seconds(value: float | None) -> str:
    """A lag or an age: "-", "42 s", "12 min", "3.5 h"."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


@register.filter
def ago(value: float | None) -> str:
    """How long ago, from seconds: "just now" (under 2 s), "12 s ago", "3 min ago", "2.5 h ago"."""
    if value is None:
        return "-"
    if value < 2:
        return "just now"
    return f"{seconds(value)} ago"


@register.filter
def plural(n: int, noun: str) -> str:
    """{{ n|plural:"running job" }}: "1 running job", "2,048 running jobs" (the noun as pgqueue.text.counted
    inflects it)."""
    return f"{n:,} {counted(n, noun).partition(' ')[2]}"


@register.filter
def number(n: int | None) -> str:
    """A count with thousands separators: "63,412"."""
    return f"{n or 0:,}"


@register.filter
def listing(names: str) -> str:
    """A comma-separated list (a process's --queues) with room to wrap: "a, b, c"."""
    return ", ".join(names.split(",")) if names else "-"


@register.filter
def breakable(text: str, separator: str = ".") -> SafeString:
    """A dotted path, host or zone name that may wrap after each separator rather than inside a name."""
    return format_html_join(SafeString(f"{escape(separator)}<wbr>"), "{}", ((part,) for part in text.split(separator)))
