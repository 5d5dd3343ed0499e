"""The named-statement file: every statement the code runs exists, each has a comment."""

import re
from pathlib import Path

import pytest

from pgqueue.sql import QUERIES, load

ROOT = Path(__file__).resolve().parents[2]


def test_every_statement_named_in_code_exists() -> None:
    used = set()
    for path in (ROOT / "pgqueue").rglob("*.py"):
        used |= set(re.findall(r'run(?:_in_django|_until_done)?\(\s*(?:\w+,\s*)?"([a-z_]+)"', path.read_text()))
    assert used, "no statement names found in the code"
    missing = used - set(QUERIES)
    assert not missing, f"code runs statements missing from queries.sql: {missing}"


def test_every_statement_has_a_one_line_comment() -> None:
    text = (ROOT / "pgqueue" / "sql" / "queries.sql").read_text()
    for name in QUERIES:
        header = text.index(f"-- name: {name}\n")
        next_line = text[header:].splitlines()[1]
        assert next_line.startswith("-- "), f"{name} has no description line"


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="defines 'a' twice"):
        load("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_no_sql_outside_the_statement_file() -> None:
    pattern = re.compile(r"\b(UPDATE|INSERT INTO|DELETE FROM)\s+pgqueue_", re.IGNORECASE)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "pgqueue").rglob("*.py")
        if "migrations" not in p.parts and pattern.search(p.read_text())
    ]
    assert offenders == []
