"""JSON and storable-text rules shared by the enqueue path and the executor: what PostgreSQL can keep."""

from __future__ import annotations

import json
import re
from typing import Any

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_text: str) -> bool:
    """True if JSON text encodes a NUL character (which jsonb rejects); an escaped backslash is not one."""
    return "\\u0000" in json_text and _NUL_ESCAPE.search(json_text) is not None


class Unstorable(ValueError):
    """A value that cannot be written as JSON PostgreSQL accepts; the message says why."""


def dumps(value: Any) -> str:
    """Compact JSON text that jsonb accepts, or Unstorable with the reason (never another exception)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise Unstorable("it is nested too deeply") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise Unstorable(str(exc)) from None
    except Exception as exc:  # a custom __iter__, __float__ or dict key hook that raises
        raise Unstorable(f"{type(exc).__name__} while encoding") from None
    if has_nul(text):
        raise Unstorable("it contains a NUL character, which PostgreSQL JSON cannot store")
    if "{" in text:
        clash = _clashing_keys(value)
        if clash is not None:
            raise Unstorable(f"a dict has the keys {clash[0]!r} and {clash[1]!r}, which JSON writes as the one key "
                             f"{_json_key(clash[0])!r}: one value would be lost")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Unstorable("it contains text that is not valid Unicode (a lone surrogate)") from None
    return text


def _json_key(key: Any) -> str:
    """The text json.dumps writes for a dict key (it accepts str, int, float, bool and None keys)."""
    if isinstance(key, str):
        return key
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    return float.__repr__(key) if isinstance(key, float) else int.__repr__(key)


def _clashing_keys(value: Any) -> tuple[Any, Any] | None:
    """Two keys of one dict in `value` that json.dumps writes as the same text (1 and "1", True and
    "true"); None if there are none. Only dicts with a key that is not a str can have them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(type(k) is str for k in item):
                seen: dict[str, Any] = {}
                for key in item:
                    text = _json_key(key)
                    if text in seen:
                        return seen[text], key
                    seen[text] = key
            stack.extend(v for v in item.values() if isinstance(v, dict | list | tuple))
        elif isinstance(item, list | tuple):
            stack.extend(v for v in item if isinstance(v, dict | list | tuple))
    return None


def storable_text(value: str) -> str:
    """Text PostgreSQL can store: no NUL, and valid UTF-8 (lone surrogates become backslash escapes)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def fit(value: str, limit: int, *, keep_end: bool = False) -> str:
    """Storable text cut to at most `limit` characters (the end kept for tracebacks)."""
    text = storable_text(value)
    if len(text) <= limit:
        return text
    return text[-limit:] if keep_end else text[:limit]
