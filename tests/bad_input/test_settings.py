"""Bad settings and PGQUEUE_* environment variables: ImproperlyConfigured naming the option and the
problem, reported by `manage.py check` as pgqueue.E001."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pgqueue import conf
from tests.bad_input.conftest import Refused

YEAR = "31536000 seconds (1 year)"

SETTINGS: list[tuple[dict[Any, Any], str]] = [
    ({"HEARTBEAT_SECONDS": math.nan},
     "settings.PGQUEUE['HEARTBEAT_SECONDS'] has an invalid value nan: expected a finite number."),
    ({"LEASE_SECONDS": math.inf}, "settings.PGQUEUE['LEASE_SECONDS'] has an invalid value inf: expected a finite number."),
    ({"RETRY_BACKOFF": math.nan}, "settings.PGQUEUE['RETRY_BACKOFF'] has an invalid value nan: expected a finite number."),
    ({"DEFAULT_TIMEOUT": math.inf},
     "settings.PGQUEUE['DEFAULT_TIMEOUT'] has an invalid value inf: expected a finite number."),
    ({"DEFAULT_TIMEOUT": 0}, "PGQUEUE['DEFAULT_TIMEOUT'] must be greater than 0, got 0.0."),
    ({"DEFAULT_TIMEOUT": 1e9}, f"PGQUEUE['DEFAULT_TIMEOUT'] must be at most {YEAR}, got 1000000000.0."),
    ({"LEASE_SECONDS": 1e12}, f"PGQUEUE['LEASE_SECONDS'] must be at most {YEAR}, got 1000000000000.0."),
    ({"WORKER_DEAD_AFTER": 4e7}, f"PGQUEUE['WORKER_DEAD_AFTER'] must be at most {YEAR}, got 40000000.0."),
    ({"RETRY_BACKOFF_MAX": 1e300}, f"PGQUEUE['RETRY_BACKOFF_MAX'] must be at most {YEAR}, got 1e+300."),
    ({"KEEP_FAILED_SECONDS": 1e10},
     "PGQUEUE['KEEP_FAILED_SECONDS'] must be at most 3153600000 seconds (100 years), got 10000000000.0."),
    ({"KEEP_SUCCEEDED_SECONDS": -1}, "PGQUEUE['KEEP_SUCCEEDED_SECONDS'] must not be negative, got -1.0."),
    ({"COMPLETION_FLUSH_MS": 1e9}, "PGQUEUE['COMPLETION_FLUSH_MS'] must be at most 60000, got 1000000000.0."),
    ({"RETRY_JITTER": 2}, "PGQUEUE['RETRY_JITTER'] must be at most 1, got 2.0."),
    ({"LEASE_SECONDS": 10**400},
     f"settings.PGQUEUE['LEASE_SECONDS'] has an invalid value {str(10**400)[:80]}... (401 characters): int too "
     "large to convert to float."),
    ({"MAX_PAYLOAD_BYTES": 1.5}, "settings.PGQUEUE['MAX_PAYLOAD_BYTES'] has an invalid value 1.5: expected a whole number."),
    ({"MAX_RESULT_BYTES": 0}, "PGQUEUE['MAX_RESULT_BYTES'] must be greater than 0, got 0."),
    ({"MAX_RESULT_BYTES": 2**40}, "PGQUEUE['MAX_RESULT_BYTES'] must be at most 67108864 bytes (64 MiB), got 1099511627776."),
    ({"DEFAULT_MAX_ATTEMPTS": 0}, "PGQUEUE['DEFAULT_MAX_ATTEMPTS'] must be at least 1, got 0."),
    ({"COMPLETION_BATCH": math.nan},
     "settings.PGQUEUE['COMPLETION_BATCH'] has an invalid value nan: expected a whole number."),
    ({"QUEUES": []}, "settings.PGQUEUE['QUEUES'] has an invalid value []: it lists no queue; name at least "
     "DEFAULT_QUEUE, or use None to allow any queue."),
    ({"QUEUES": ["default", "a\x00b"]}, "Invalid queue name 'a\\x00b': it contains the control character U+0000."),
    ({"DEFAULT_QUEUE": "\ud800"},
     "Invalid queue name '\\ud800': it contains a lone surrogate (U+D800), which is not valid Unicode."),
    ({"NOTIFY_CHANNEL": "jobs\x00"}, "PGQUEUE['NOTIFY_CHANNEL'] 'jobs\\x00' contains the control character U+0000."),
    ({"NOTIFY_CHANNEL": "\udcff"},
     "PGQUEUE['NOTIFY_CHANNEL'] '\\udcff' contains a lone surrogate (U+DCFF), which is not valid Unicode."),
    ({"DATABASE": ""}, "PGQUEUE['DATABASE'] must name a database alias, got ''."),
    ({"POOLER": "pgbouncer"}, "PGQUEUE['POOLER'] must be one of 'none', 'session', 'transaction', got 'pgbouncer'."),
    ({"POOLER": 1}, "settings.PGQUEUE['POOLER'] has an invalid value 1: expected a string, got int."),
    ({"LISTEN_DATABASE": ""}, "PGQUEUE['LISTEN_DATABASE'] must name a database alias or be None, got ''."),
    ({"LEADER_SECONDS": 0}, "PGQUEUE['LEADER_SECONDS'] must be greater than 0, got 0.0."),
    ({"LEADER_SECONDS": math.inf}, "settings.PGQUEUE['LEADER_SECONDS'] has an invalid value inf: expected a finite "
     "number."),
    ({"LEADER_SECONDS": 1.0}, "PGQUEUE['LEADER_SECONDS'] (1) must be more than twice PGQUEUE['MAINTENANCE_SECONDS'] "
     "(0.5): the leader renews its lead between rounds, and a lead that runs out between them passes to another "
     "process."),
    ({"PREPARE_STATEMENTS": "maybe"}, "settings.PGQUEUE['PREPARE_STATEMENTS'] has an invalid value 'maybe': expected "
     "True or False (or one of 1, true, yes, on, 0, false, no, off in the environment)."),
    ({1: 2}, "settings.PGQUEUE has unknown option(s) 1; known options: "),
]

ENVIRONMENT: list[tuple[dict[str, str], str]] = [
    ({"PGQUEUE_HEARTBEAT_SECONDS": "nan"},
     "environment variable PGQUEUE_HEARTBEAT_SECONDS has an invalid value 'nan': expected a finite number."),
    ({"PGQUEUE_LEASE_SECONDS": "inf"},
     "environment variable PGQUEUE_LEASE_SECONDS has an invalid value 'inf': expected a finite number."),
    ({"PGQUEUE_LEASE_SECONDS": "1e999"},
     "environment variable PGQUEUE_LEASE_SECONDS has an invalid value '1e999': expected a finite number."),
    ({"PGQUEUE_RETRY_BACKOFF": "NaN"},
     "environment variable PGQUEUE_RETRY_BACKOFF has an invalid value 'NaN': expected a finite number."),
    ({"PGQUEUE_DEFAULT_TIMEOUT": "-inf"},
     "environment variable PGQUEUE_DEFAULT_TIMEOUT has an invalid value '-inf': expected a finite number."),
    ({"PGQUEUE_COMPLETION_BATCH": "1.5"},
     "environment variable PGQUEUE_COMPLETION_BATCH has an invalid value '1.5': expected a whole number."),
    ({"PGQUEUE_COMPLETION_BATCH": "nan"},
     "environment variable PGQUEUE_COMPLETION_BATCH has an invalid value 'nan': expected a whole number."),
    ({"PGQUEUE_RESTART_LIMIT": "ten"},
     "environment variable PGQUEUE_RESTART_LIMIT has an invalid value 'ten': expected a whole number."),
    ({"PGQUEUE_QUEUES": ""}, "environment variable PGQUEUE_QUEUES has an invalid value '': it lists no queue; "
     "name them separated by commas, or leave it unset to allow any queue."),
    ({"PGQUEUE_QUEUES": " , "}, "environment variable PGQUEUE_QUEUES has an invalid value ' , ': queue name 1 of 2 "
     "is empty."),
    ({"PGQUEUE_QUEUES": "a,,default"},
     "environment variable PGQUEUE_QUEUES has an invalid value 'a,,default': queue name 2 of 3 is empty."),
    ({"PGQUEUE_QUEUES": "default,"},
     "environment variable PGQUEUE_QUEUES has an invalid value 'default,': queue name 2 of 2 is empty."),
    ({"PGQUEUE_LEASE_SECONDS": "1e12"}, f"PGQUEUE['LEASE_SECONDS'] must be at most {YEAR}, got 1000000000000.0 "
     "(set by environment variable PGQUEUE_LEASE_SECONDS)."),
    ({"PGQUEUE_DEFAULT_QUEUE": "caf\udce9"},  # an undecodable byte, as os.environ holds it
     "Invalid queue name 'caf\\udce9': it contains a lone surrogate (U+DCE9), which is not valid Unicode."),
    ({"PGQUEUE_POOLER": "transactions"},
     "PGQUEUE['POOLER'] must be one of 'none', 'session', 'transaction', got 'transactions' (set by environment "
     "variable PGQUEUE_POOLER)."),
    ({"PGQUEUE_DATABASE": "$PGQUEUE_NOT_SET_ANYWHERE"},
     "environment variable PGQUEUE_DATABASE: Set the PGQUEUE_NOT_SET_ANYWHERE environment variable."),
    ({"PGQUEUE_DATABASE": "$PGQUEUE_DATABASE"},
     "environment variable PGQUEUE_DATABASE: its '$' reference leads back to itself."),
]


@pytest.mark.parametrize(("options", "message"), SETTINGS, ids=[repr(s[0])[:60] for s in SETTINGS])
def test_bad_setting(refused: Refused, options: dict[Any, Any], message: str) -> None:
    refused(ImproperlyConfigured, message, lambda: conf.load(options, environ={}))


@pytest.mark.parametrize(("environ", "message"), ENVIRONMENT, ids=[repr(e[0])[:60] for e in ENVIRONMENT])
def test_bad_environment_variable(refused: Refused, environ: dict[str, str], message: str) -> None:
    refused(ImproperlyConfigured, message, lambda: conf.load({}, environ=environ))


@pytest.fixture
def fresh_settings() -> Iterator[Callable[[], list[checks.CheckMessage]]]:
    """Run the system checks on settings read afresh; the cached settings are forgotten after the test."""
    conf.reset()

    def run() -> list[checks.CheckMessage]:
        conf.reset()
        return [m for m in checks.run_checks() if m.id == "pgqueue.E001"]

    yield run
    conf.reset()


def test_manage_py_check_reports_a_nan_setting(fresh_settings: Callable[[], list[checks.CheckMessage]]) -> None:
    with override_settings(PGQUEUE={"HEARTBEAT_SECONDS": math.nan}):
        errors = fresh_settings()
    assert [e.msg for e in errors] == [
        "settings.PGQUEUE['HEARTBEAT_SECONDS'] has an invalid value nan: expected a finite number."
    ]


def test_manage_py_check_reports_an_infinite_environment_variable(
    fresh_settings: Callable[[], list[checks.CheckMessage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUE_LEASE_SECONDS", "inf")
    errors = fresh_settings()
    assert [e.msg for e in errors] == [
        "environment variable PGQUEUE_LEASE_SECONDS has an invalid value 'inf': expected a finite number."
    ]


def test_queue_lists_are_stripped_from_os_environ_and_from_a_given_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_QUEUES", " a , b,default ")
    assert conf.load({}).QUEUES == ("a", "b", "default")
    assert conf.load({}, environ={"PGQUEUE_QUEUES": " a , b,default "}).QUEUES == ("a", "b", "default")


def test_whole_floats_and_spaces_are_fine_for_integer_options() -> None:
    s = conf.load({"COMPLETION_BATCH": 2.0}, environ={"PGQUEUE_RESTART_LIMIT": " 7 ", "PGQUEUE_MAX_RESULT_BYTES": "1e3"})
    assert (s.COMPLETION_BATCH, s.RESTART_LIMIT, s.MAX_RESULT_BYTES) == (2, 7, 1000)
    assert conf.load({}, environ={}).MAX_RESULT_BYTES == 1024 * 1024


def test_manage_py_check_reports_a_listen_database_it_cannot_use() -> None:
    def problems(**options: Any) -> list[tuple[str, str]]:
        conf.reset()
        with override_settings(PGQUEUE={**options}):
            found = [(m.id, m.msg) for m in checks.run_checks(databases=["default"]) if m.id.endswith("006")]
        conf.reset()
        return found

    assert problems(POOLER="transaction", LISTEN_DATABASE="nowhere") == [
        ("pgqueue.E006", "PGQUEUE['LISTEN_DATABASE'] names database alias 'nowhere', which is not in DATABASES.")]
    assert problems(LISTEN_DATABASE="other") == [
        ("pgqueue.W006", "PGQUEUE['LISTEN_DATABASE'] 'other' is set but PGQUEUE['POOLER'] is 'none': workers LISTEN "
                         "on PGQUEUE['DATABASE'] and do not use it.")]
    assert problems(POOLER="transaction", LISTEN_DATABASE="other") == []
