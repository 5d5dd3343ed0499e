"""The only code that runs pgqueue's runtime SQL: named statements on a Django or psycopg connection."""

from __future__ import annotations

from typing import Any

from django.db import connections

from pgqueue.conf import get_settings
from pgqueue.sql import QUERIES


def run(cursor: Any, name: str, **params: Any) -> list[tuple[Any, ...]]:
    """Execute statement `name` on a DB-API cursor and return its rows (empty for no result set)."""
    cursor.execute(QUERIES[name], params)
    if cursor.description is None:
        return []
    return list(cursor.fetchall())


def run_in_django(name: str, *, using: str | None = None, **params: Any) -> list[tuple[Any, ...]]:
    """Execute statement `name` on Django's connection for the pgqueue alias (joins its transaction)."""
    alias = using or get_settings().DATABASE
    with connections[alias].cursor() as cursor:
        return run(cursor, name, **params)


def connection_kwargs(alias: str | None = None) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for a Django database alias."""
    alias = alias or get_settings().DATABASE
    settings_dict = connections[alias].settings_dict
    options = dict(settings_dict.get("OPTIONS") or {})
    for django_only in ("pool", "server_side_binding", "isolation_level", "assume_role", "cursor_factory"):
        options.pop(django_only, None)
    params: dict[str, Any] = {"dbname": settings_dict.get("NAME") or "postgres", **options}
    for key, param in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        if settings_dict.get(key):
            params[param] = str(settings_dict[key])
    params.setdefault("application_name", "pgqueue")
    return params
