"""pgqueue_worker's options: each bad value is a precise error before anything starts or is written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pgqueue.conf import load
from pgqueue.worker.options import OptionError, WorkerOptions, parse
from tests.conftest import ROOT

SETTINGS = load({}, environ={})
DECLARED = load({"QUEUES": ["default", "emails"]}, environ={})
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"processes": 0}, "--processes must be from 1 to 256, got 0."),
        ({"processes": 257}, "--processes must be from 1 to 256, got 257."),
        ({"concurrency": 0}, "--concurrency must be from 1 to 1000, got 0."),
        ({"shutdown_timeout": NAN}, "--shutdown-timeout must be a finite number of seconds, got nan."),
        ({"shutdown_timeout": INF}, "--shutdown-timeout must be a finite number of seconds, got inf."),
        ({"shutdown_timeout": -1.0}, "--shutdown-timeout must be >= 0 and at most 3.1536e+07 s (a year), got -1.0."),
        ({"max_memory_mb": NAN}, "--max-memory must be a finite number, got nan."),
        ({"max_memory_mb": 0.0}, "--max-memory must be greater than 0 and at most 1.04858e+06, got 0.0."),
        ({"max_lifetime": NAN}, "--max-lifetime must be a finite number of seconds, got nan."),
        ({"max_lifetime": -INF}, "--max-lifetime must be a finite number of seconds, got -inf."),
        ({"max_lifetime": 0.0}, "--max-lifetime must be greater than 0 and at most 3.1536e+07 s (a year), got 0.0."),
        ({"max_jobs": 0}, "--max-jobs must be greater than 0 and at most 2147483647, got 0."),
        ({"queues": ""}, "--queues is empty: name at least one queue (comma-separated)."),
        ({"queues": " , "}, "--queues: Invalid queue name ''"),
        ({"queues": "a,,b"}, "--queues: Invalid queue name ''"),
        ({"queues": "a\x00b"}, "--queues: Invalid queue name 'a\\x00b'"),
        ({"queues": ",".join(f"queue-{i:04d}" for i in range(100))},
         "--queues: 1099 characters, over the 1000 that pgqueue_workerprocess.queues holds"),
    ],
)
def test_bad_worker_options(options: dict, message: str) -> None:
    with pytest.raises(OptionError) as excinfo:
        parse(SETTINGS, **options)
    assert message in str(excinfo.value)


def test_undeclared_queue() -> None:
    with pytest.raises(OptionError, match=r"--queues: reports not declared in PGQUEUE\['QUEUES'\] \(default, emails\)"):
        parse(DECLARED, queues="emails,reports")


def test_good_options_are_one_frozen_value() -> None:
    options = parse(SETTINGS, queues=" emails , default,emails", processes=2, shutdown_timeout=0, max_jobs=5)
    assert options == WorkerOptions(queues=("emails", "default"), processes=2, shutdown_timeout=0.0, max_jobs=5)
    assert parse(SETTINGS).queues == ("default",)
    with pytest.raises(AttributeError):
        options.processes = 3  # type: ignore[misc]


def run_worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url(),
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "django", "pgqueue_worker", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def database_url() -> str:
    from tests.conftest import WorkerProcess

    return WorkerProcess.database_url()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--shutdown-timeout", "nan"], {}, "--shutdown-timeout must be a finite number of seconds, got nan."),
        (["--max-memory", "inf"], {}, "--max-memory must be a finite number, got inf."),
        (["--queues", ""], {}, "--queues is empty"),
        ([], {"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}, "Database 'default' is not reachable: "),
        ([], {"PGQUEUE_HEARTBEAT_SECONDS": "nan"}, "PGQUEUE_HEARTBEAT_SECONDS"),
        ([], {"PGQUEUE_TEST_BROKEN_APP": "1"},
         "Importing tests.brokenapp.jobs (app 'brokenapp') failed: ImportError(\"cannot import name 'NoSuchModel'"),
    ],
)
def test_the_command_refuses_to_start(args: list[str], env: dict[str, str], message: str) -> None:
    result = run_worker(*args, env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("CommandError: "), result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_help_names_every_process_it_starts() -> None:
    from pgqueue.management.commands.pgqueue_worker import Command

    text = " ".join(Command().create_parser("manage.py", "pgqueue_worker").format_help().split())
    for process in ("worker processes (--processes)", "one maintenance process", "one scheduler process",
                    "with --metrics-port, one metrics process"):
        assert process in text, text


@pytest.mark.django_db
def test_a_sqlite_database_is_refused_in_one_line(tmp_path) -> None:
    result = run_worker(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})
    assert result.returncode == 1, result.stderr
    first, *others = result.stderr.strip().splitlines()
    assert first == "CommandError: pgqueue.E003: pgqueue needs PostgreSQL, but database 'default' is sqlite."
    # no migration check on a database that is not PostgreSQL; on Django 6 the tasks backend says it too
    assert all(line.startswith("pgqueue.E011: TASKS[") and line.endswith("sqlite, not PostgreSQL.")
               for line in others), result.stderr


def test_unapplied_migrations_are_named_app_by_app_in_plan_order() -> None:
    from types import SimpleNamespace

    from pgqueue.checks import unapplied_names

    plan = [SimpleNamespace(app_label=app, name=name) for app, name in [
        ("contenttypes", "0001_initial"), ("auth", "0001_initial"), ("pgqueue", "0001_initial"),
        ("pgqueue", "0002_attempt_lean"), ("pgqueue", "0003_audit_and_drain"), ("auth", "0002_alter")]]
    assert unapplied_names(plan) == ("contenttypes.0001_initial, auth.0001_initial, auth.0002_alter, "
                                     "pgqueue.0001_initial .. pgqueue.0003_audit_and_drain (3 migrations)")
    assert unapplied_names(plan[2:4]) == "pgqueue.0001_initial, pgqueue.0002_attempt_lean"
