"""How the admin's pages write values in words: a lag, how long ago, a list of queues, a long dotted name
that may wrap. The template filters of pgqueue_admin are these."""

from __future__ import annotations

from django.utils.html import escape, format_html_join
from django.utils.safestring import SafeString


def seconds(value: float | None) -> str:
    """A lag or an age: "-", "42 s", "12 min", "3.5 h"."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def ago(value: float | None) -> str:
    """How long ago, from seconds: "just now" (under 2 s), "12 s ago", "3 min ago", "2.5 h ago"."""
    if value is None:
        return "-"
    if value < 2:
        return "just now"
    return f"{seconds(value)} ago"


def listing(names: str) -> str:
    """A comma-separated list (a process's --queues) with room to wrap: "a, b, c"."""
    return ", ".join(names.split(",")) if names else "-"


def breakable(text: str, separator: str = ".") -> SafeString:
    """A dotted path, host or zone name that may wrap after each separator rather than inside a name."""
    return format_html_join(SafeString(f"{escape(separator)}<wbr>"), "{}", ((part,) for part in text.split(separator)))
