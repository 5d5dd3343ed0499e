"""Template tags for pgqueue's admin pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils.safestring import mark_safe

from pgqueue.admin import display
from pgqueue.text import counted

register = template.Library()
register.filter("seconds", display.seconds)
register.filter("ago", display.ago)
register.filter("listing", display.listing)
register.filter("breakable", display.breakable)


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
def plural(n: int, noun: str) -> str:
    """{{ n|plural:"running job" }}: "1 running job", "2,048 running jobs" (the noun as pgqueue.text.counted
    inflects it)."""
    return f"{n:,} {counted(n, noun).partition(' ')[2]}"


@register.filter
def number(n: int | None) -> str:
    """A count with thousands separators: "63,412"."""
    return f"{n or 0:,}"
