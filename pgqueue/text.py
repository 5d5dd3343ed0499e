"""How pgqueue writes values into its messages and reports: a value shown in an error, a type named, a
length of time, a size; and what makes a text unfit for a name PostgreSQL stores and the admin shows."""

from __future__ import annotations

import re
from typing import Any

_BAD_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def seconds_text(seconds: float) -> str:
    """A length of time for a report, sign dropped: "0.4 s", "42 s", "12 min", "3.5 h", "2.0 d"."""
    s = abs(seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def short_repr(value: object, limit: int = 80) -> str:
    """repr(value), shortened for an error message."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def text_problem(text: str) -> str | None:
    """What makes `text` unfit for a name PostgreSQL stores and the admin shows, or None if it is fine."""
    found = _BAD_CHARACTER.search(text)
    if found is None:
        return None
    char = found.group()
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone surrogate (U+{ord(char):04X}), which is not valid Unicode"
    return f"contains the control character U+{ord(char):04X}"


def a_type(value: Any) -> str:
    """ "an int", "a dict": the type of value, for messages."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def counted(n: int, noun: str, plural: str = "") -> str:
    """ "1 job", "3 jobs", "0 jobs" (`plural` when adding an s will not do)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def duration_text(seconds: float) -> str:
    """Seconds as a short duration: "850 ms", "4.2 s", "3 min", "5 h", "2 d"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def size_text(n: int) -> str:
    """A number of bytes for a report: "512 bytes", "3.4 kB", "1.2 GB"."""
    if n < 1024:
        return f"{n} bytes"
    size, unit = n / 1024, "kB"
    for bigger in ("MB", "GB", "TB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"
