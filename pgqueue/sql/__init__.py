"""Loads the statement files into QUERIES: statement name -> SQL text.

queries.sql holds every statement the engine runs (enqueue, lease, transitions, maintenance); the other
files hold read-only reporting for operators (status, doctor, explain, metrics), one file per concern."""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(text: str) -> dict[str, str]:
    """Split a file of "-- name: x" sections into {name: sql}; comments stay in the text."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"queries.sql defines {name!r} twice")
        sql = "\n".join(line for line in body.strip().splitlines() if not line.startswith("--")).strip()
        queries[name] = sql.rstrip(";")
    return queries


def load_all(folder: Path) -> dict[str, str]:
    """Every *.sql file of the folder, queries.sql first; a name defined in two files is an error."""
    queries: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql"), key=lambda p: (p.name != "queries.sql", p.name)):
        for name, sql in load(path.read_text()).items():
            if name in queries:
                raise ValueError(f"{path.name} defines {name!r}, already defined in another statement file")
            queries[name] = sql
    return queries


FILES: tuple[Path, ...] = tuple(sorted(Path(__file__).parent.glob("*.sql")))
QUERIES: dict[str, str] = load_all(Path(__file__).parent)
