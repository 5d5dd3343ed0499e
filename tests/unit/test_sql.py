"""The named-statement file: every statement the code runs exists, each has a comment."""

import re
from pathlib import Path

import pytest

from pgqueue import db
from pgqueue.sql import FILES, QUERIES, load

ROOT = Path(__file__).resolve().parents[2]


def test_every_statement_named_in_code_exists() -> None:
    used = set()
    for path in (ROOT / "pgqueue").rglob("*.py"):
        used |= set(re.findall(r'run(?:_in_django)?\(\s*(?:\w+,\s*)?"([a-z_]+)"', path.read_text()))
    assert used, "no statement names found in the code"
    missing = used - set(QUERIES)
    assert not missing, f"code runs statements missing from queries.sql: {missing}"


def test_every_statement_has_a_one_line_comment() -> None:
    text = "\n".join(path.read_text() for path in FILES)
    for name in QUERIES:
        header = text.index(f"-- name: {name}\n")
        next_line = text[header:].splitlines()[1]
        assert next_line.startswith("-- "), f"{name} has no description line"


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="defines 'a' twice"):
        load("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_every_statement_is_run_somewhere_and_every_row_type_names_a_statement() -> None:
    from pgqueue.db import RETURNS

    code = "\n".join(p.read_text() for p in (ROOT / "pgqueue").rglob("*.py"))
    unused = [name for name in QUERIES if f'"{name}"' not in code]
    assert unused == [], f"statements nothing runs: {unused}"
    assert set(RETURNS) <= set(QUERIES)


def test_only_the_database_layer_executes_sql() -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "pgqueue").rglob("*.py")
        if p.name != "db.py" and "migrations" not in p.parts and re.search(r"\.execute\(", p.read_text())
    ]
    assert offenders == []


def test_no_sql_outside_the_statement_file() -> None:
    pattern = re.compile(r"\b(UPDATE|INSERT INTO|DELETE FROM)\s+pgqueue_", re.IGNORECASE)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "pgqueue").rglob("*.py")
        if "migrations" not in p.parts and pattern.search(p.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(db.JSON_ROWS))
def test_a_statement_returning_json_rows_lists_its_row_type_fields_in_order(name: str) -> None:
    """db.JSON_ROWS builds rows by position: the statement's json_build_array must name the row type's fields
    in the row type's order (a swapped pair would put one value in the other's place, silently)."""
    text = re.sub(r"--[^\n]*", "", db.QUERIES[name])
    listed = re.search(r"json_build_array\((.*?)\)\), '\[\]'\) AS rows", text, re.S)
    assert listed, f"{name} does not end with SELECT COALESCE(json_agg(json_build_array(...)), '[]') AS rows"
    names = [part.strip().split(".")[-1] for part in listed[1].replace("\n", " ").split(",")]
    assert tuple(names) == db.RETURNS[name]._fields


def test_the_completion_reads_each_transition_field_at_its_position() -> None:
    """job_set_state_if_running_many reads a transition's JSON row by position: r->>N AS name must match
    db.TRANSITION_FIELDS[N], which db.transition_params writes in that order."""
    text = db.QUERIES["job_set_state_if_running_many"]
    read = dict((int(n), name) for n, name in re.findall(r"r->>(\d+)\)?(?:::\w+)? AS (\w+)", text))
    assert read == dict(enumerate(db.TRANSITION_FIELDS))
