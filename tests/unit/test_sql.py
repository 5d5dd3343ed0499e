"""The named-statement file: every statement the code runs exists, each has a comment."""

import importlib
import re
from pathlib import Path

import pytest

from pgqueue import db, sql
from pgqueue.sql import FILES, QUERIES, load, rows

ROOT = Path(__file__).resolve().parents[2]
REPORTING = ("pgqueue.ops.doctor", "pgqueue.ops.monitor", "pgqueue.ops.explain")


def test_every_statement_named_in_code_has_a_handle() -> None:
    used = set()
    for path in (ROOT / "pgqueue").rglob("*.py"):
        used |= set(re.findall(r"(?<![\w.])sql\.([a-z_]+)\b(?!\.)", path.read_text()))
    assert "job_lease" in used, "no statement handles found in the code"
    missing = {name for name in used if not isinstance(getattr(sql, name, None), sql.Statement)}
    assert not missing, f"code runs statements pgqueue.sql has no handle for: {missing}"


def test_every_statement_has_a_one_line_comment() -> None:
    text = "\n".join(path.read_text() for path in FILES)
    for name in QUERIES:
        header = text.index(f"-- name: {name}\n")
        next_line = text[header:].splitlines()[1]
        assert next_line.startswith("-- "), f"{name} has no description line"


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="defines 'a' twice"):
        load("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_every_statement_has_one_handle_and_every_handle_is_run() -> None:
    """Engine handles are pgqueue.sql's names; the reporting files' handles are made by the module that runs
    them (importing it makes them). Each is used somewhere besides where it is made."""
    for module in REPORTING:
        importlib.import_module(module)
    assert set(sql.STATEMENTS) == set(QUERIES)
    engine = {name for name in QUERIES if not name.startswith(("doctor_", "monitor_", "explain_"))}
    assert all(getattr(sql, name) is sql.STATEMENTS[name] for name in engine)  # sql.x is statement x
    code = {p: p.read_text() for p in (ROOT / "pgqueue").rglob("*.py") if p != ROOT / "pgqueue/sql/__init__.py"}
    text = "\n".join(code.values())
    unused = [name for name in sorted(engine) if not re.search(rf"\bsql\.{name}\b", text)]
    assert unused == [], f"statements nothing runs: {unused}"
    for module in REPORTING:
        source = code[ROOT / (module.replace(".", "/") + ".py")]
        for constant in re.findall(r"^([A-Z_]+) = statement\(", source, re.M):
            assert len(re.findall(rf"\b{constant}\b", source)) >= 2, f"{module}.{constant} is never run"


def test_a_handle_names_its_parameters_and_row_columns() -> None:
    heartbeat = sql.job_heartbeat
    assert heartbeat.params == {"ids", "tokens", "worker", "lease_seconds"}
    assert heartbeat.row is rows.Beat and heartbeat.columns == ("id", "cancel_requested")
    assert sql.channel_listen.identifiers == ("channel",) and sql.channel_listen.params == {"channel"}
    assert sql.lock_drop_many.row is None and sql.lock_drop_many.columns == ()


def test_a_statement_gets_one_handle_only() -> None:
    with pytest.raises(ValueError, match="statement job_lease already has a handle"):
        sql.statement("job_lease", rows.JobId)
    with pytest.raises(KeyError, match="no statement named 'job_leese' in pgqueue/sql"):
        sql.statement("job_leese")


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


@pytest.mark.parametrize("name", sorted(n for n, s in sql.STATEMENTS.items() if s.from_json is not None))
def test_a_statement_returning_json_rows_lists_its_row_type_fields_in_order(name: str) -> None:
    """A handle's from_json builds rows by position: the statement's json_build_array must name the row type's
    fields in the row type's order (a swapped pair would put one value in the other's place, silently)."""
    text = re.sub(r"--[^\n]*", "", QUERIES[name])
    listed = re.search(r"json_build_array\((.*?)\)\), '\[\]'\) AS rows", text, re.S)
    assert listed, f"{name} does not end with SELECT COALESCE(json_agg(json_build_array(...)), '[]') AS rows"
    names = [part.strip().split(".")[-1] for part in listed[1].replace("\n", " ").split(",")]
    assert tuple(names) == sql.STATEMENTS[name].columns


def test_the_completion_reads_each_transition_field_at_its_position() -> None:
    """job_set_state_if_running_many reads a transition's JSON row by position: r->>N AS name must match
    db.TRANSITION_FIELDS[N], which db.transition_params writes in that order."""
    text = QUERIES["job_set_state_if_running_many"]
    read = dict((int(n), name) for n, name in re.findall(r"r->>(\d+)\)?(?:::\w+)? AS (\w+)", text))
    assert read == dict(enumerate(db.TRANSITION_FIELDS))
