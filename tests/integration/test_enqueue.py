"""The enqueue path on a real PostgreSQL: transactions, bulk insert, NOTIFY, bad input writes nothing."""

from __future__ import annotations

import datetime as dt
import logging
import math

import psycopg
import pytest
from django.db import OperationalError, connections, transaction
from django.test import override_settings
from django.utils import timezone

import pgqueue
from pgqueue.db import connection_kwargs
from pgqueue.exceptions import (
    InvalidJob,
    NotSerializable,
    PayloadTooLarge,
    UnknownJob,
    UnknownQueue,
)
from pgqueue.models import Job
from tests.conftest import wait_for
from tests.testapp import jobs
from tests.testapp.models import Order

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def test_enqueue_returns_a_handle_and_writes_one_ready_row() -> None:
    handle = jobs.add.enqueue(2, b=3)
    row = Job.objects.get(pk=handle.id)
    assert (row.task, row.queue, row.state, row.args, row.kwargs) == ("tests.testapp.jobs.add", "default",
                                                                       "ready", [2], {"b": 3})
    assert row.max_attempts == 3 and row.priority == 0 and handle.state == "ready"


def test_job_and_call_options() -> None:
    h = jobs.mark.options(priority=7, queue="other", max_attempts=9, timeout=4).enqueue("x")
    row = Job.objects.get(pk=h.id)
    assert (row.queue, row.priority, row.max_attempts, row.timeout) == ("other", 7, 9, 4.0)
    assert jobs.mark.enqueue("y").queue == "marks"  # the @job default


def test_delay_and_run_at_make_scheduled_jobs() -> None:
    later = timezone.now() + dt.timedelta(hours=1)
    a = jobs.add.options(run_at=later).enqueue(1, 1)
    b = jobs.add.options(delay=dt.timedelta(minutes=5)).enqueue(1, 1)
    c = jobs.add.options(delay=0).enqueue(1, 1)
    states = dict(Job.objects.values_list("id", "state"))
    assert states[a.id] == "scheduled" and states[b.id] == "scheduled" and states[c.id] == "ready"
    assert Job.objects.get(pk=a.id).run_at == later


def test_enqueue_by_name() -> None:
    h = pgqueue.enqueue("tests.testapp.jobs.add", 1, 2)
    assert Job.objects.get(pk=h.id).task == "tests.testapp.jobs.add"
    with pytest.raises(UnknownJob):
        pgqueue.enqueue("tests.testapp.jobs.missing", 1)


def test_bulk_enqueue_is_one_insert() -> None:
    with CaptureStatements() as captured:
        handles = pgqueue.enqueue_many(
            [jobs.add.call(i, i) for i in range(500)] + [jobs.mark.options(priority=5).call("z")]
        )
    assert len(handles) == 501 and len({h.id for h in handles}) == 501
    assert sum("INSERT INTO pgqueue_job" in s for s in captured.statements) == 1
    assert Job.objects.count() == 501
    assert jobs.add.enqueue_many([(1, 2), (3, 4)])[1].id > handles[-1].id


def test_rolled_back_job_never_exists() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Order.objects.create(name="lost")
        handle = jobs.add.enqueue(1, 2)
        raise RuntimeError("roll back")
    assert not Job.objects.filter(pk=handle.id).exists()
    assert not Order.objects.exists()


def test_committed_job_exists_with_its_row() -> None:
    with transaction.atomic():
        Order.objects.create(name="kept")
        handle = jobs.add.enqueue(1, 2)
    assert Job.objects.filter(pk=handle.id).exists() and Order.objects.exists()


def test_other_alias_transaction_defers_insert_until_commit() -> None:
    with transaction.atomic(using="other"):
        handle = jobs.add.enqueue(5, 5)
        assert handle.id > 0  # the id exists before commit
        assert not Job.objects.filter(pk=handle.id).exists()
    assert Job.objects.get(pk=handle.id).args == [5, 5]


def test_other_alias_rollback_means_no_job() -> None:
    with pytest.raises(RuntimeError), transaction.atomic(using="other"):
        handle = jobs.add.enqueue(6, 6)
        raise RuntimeError("roll back")
    assert not Job.objects.filter(pk=handle.id).exists()
    assert not Job.objects.exists()


def terminate_backend(alias: str) -> None:
    """End the server process behind Django's connection on `alias`, as a restart or an operator would."""
    pid = connections[alias].connection.info.backend_pid
    with psycopg.connect(**connection_kwargs(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(),
                 what=f"backend {pid} to exit")


def test_deferred_insert_reconnects_once_when_the_connection_broke(caplog: pytest.LogCaptureFixture) -> None:
    with transaction.atomic(using="other"):
        handle = jobs.add.enqueue(7, 7)
        terminate_backend("default")  # pgqueue's connection dies before the caller commits
    assert Job.objects.get(pk=handle.id).args == [7, 7]
    assert [r.levelname for r in caplog.records if r.name == "pgqueue.enqueue"] == ["WARNING"]


def test_deferred_insert_that_fails_again_is_logged_and_raised(caplog: pytest.LogCaptureFixture) -> None:
    database = connections["default"].settings_dict["NAME"]
    with psycopg.connect(**{**connection_kwargs(), "dbname": "postgres"}, autocommit=True) as admin:
        allow = "ALTER DATABASE {} ALLOW_CONNECTIONS {}"
        try:
            with pytest.raises(OperationalError), transaction.atomic(using="other"):
                handles = jobs.add.enqueue_many([(1, 1), (2, 2)])
                terminate_backend("default")
                # ... and it cannot be replaced: the database refuses new connections.
                admin.execute(psycopg.sql.SQL(allow.format("{}", "false")).format(psycopg.sql.Identifier(database)))
        finally:
            admin.execute(psycopg.sql.SQL(allow.format("{}", "true")).format(psycopg.sql.Identifier(database)))
    errors = [r for r in caplog.records if r.name == "pgqueue.enqueue" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    message = errors[0].getMessage()
    assert "on database 'other', which committed, could not be inserted into 'default' and are lost" in message
    assert f"{handles[0].id} tests.testapp.jobs.add, {handles[1].id} tests.testapp.jobs.add" in message
    assert not Job.objects.exists()


def test_notify_is_sent_once_per_queue_per_statement() -> None:
    with psycopg.connect(**connection_kwargs(), autocommit=True) as listener:
        listener.execute('LISTEN "pgqueue"')
        with transaction.atomic():
            jobs.add.enqueue_many([(i, i) for i in range(100)])
            jobs.mark.enqueue("n")
            jobs.add.options(delay=60).enqueue(1, 1)  # scheduled: no wake-up
        payloads = sorted(n.payload for n in listener.notifies(timeout=1.0, stop_after=10))
    assert payloads == ["default", "marks"]


class CaptureStatements:
    def __enter__(self) -> CaptureStatements:
        from django.test.utils import CaptureQueriesContext

        self.ctx = CaptureQueriesContext(connections["default"])
        self.ctx.__enter__()
        return self

    @property
    def statements(self) -> list[str]:
        return [q["sql"] for q in self.ctx.captured_queries]

    def __exit__(self, *exc: object) -> None:
        self.ctx.__exit__(*exc)


# --- bad input: a precise error and no row written ------------------------------------------------

class NotJson:
    pass


@pytest.mark.parametrize(
    ("enqueue", "error", "message"),
    [
        (lambda: jobs.add.enqueue(NotJson(), 1), NotSerializable, "positional arguments cannot be stored as JSON"),
        (lambda: jobs.add.enqueue(1, b={"x": {1, 2}}), NotSerializable, "keyword arguments cannot be stored"),
        (lambda: jobs.add.enqueue(math.nan, 1), NotSerializable, "cannot be stored as JSON"),
        (lambda: jobs.add.enqueue("a\x00b", 1), NotSerializable, "NUL character"),
        (lambda: jobs.add.options(run_at=dt.datetime(2030, 1, 1)).enqueue(1, 1), InvalidJob, "naive datetime"),
        (lambda: jobs.add.options(run_at="tomorrow").enqueue(1, 1), InvalidJob, "run_at must be a datetime"),
        (lambda: jobs.add.options(delay=-1).enqueue(1, 1), InvalidJob, "delay must be seconds >= 0"),
        (lambda: jobs.add.options(delay=1, run_at=timezone.now()).enqueue(1, 1), InvalidJob, "not both"),
        (lambda: jobs.add.options(priority=1000).enqueue(1, 1), InvalidJob, "priority must be an integer from -100"),
        (lambda: jobs.add.options(max_attempts=0).enqueue(1, 1), InvalidJob, "max_attempts must be"),
        (lambda: jobs.add.options(queue="").enqueue(1, 1), InvalidJob, "Invalid queue name"),
        (lambda: jobs.add.enqueue("x" * 300_000, 1), PayloadTooLarge, "over PGQUEUE['MAX_PAYLOAD_BYTES']"),
        (lambda: pgqueue.enqueue("nowhere.at_all", 1), UnknownJob, "No job is registered"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(enqueue, error, message) -> None:
    with pytest.raises(error, match=message.replace("[", "\\[").replace("]", "\\]").replace("(", "\\(")):
        enqueue()
    assert not Job.objects.exists()


def test_unknown_queue_when_queues_are_declared() -> None:
    with override_settings(PGQUEUE={"QUEUES": ["default", "marks"]}):
        jobs.mark.enqueue("fine")
        with pytest.raises(UnknownQueue, match="Queue 'reports' is not declared"):
            jobs.add.options(queue="reports").enqueue(1, 1)
    assert Job.objects.count() == 1


def test_one_bad_call_in_a_bulk_enqueue_writes_nothing() -> None:
    with pytest.raises(NotSerializable):
        pgqueue.enqueue_many([jobs.add.call(1, 1), jobs.add.call(NotJson(), 2), jobs.add.call(3, 3)])
    assert not Job.objects.exists()


def test_configurable_payload_limit() -> None:
    with override_settings(PGQUEUE={"MAX_PAYLOAD_BYTES": 50}):
        jobs.add.enqueue("x" * 20, 1)
        with pytest.raises(PayloadTooLarge, match="= 50"):
            jobs.add.enqueue("x" * 60, 1)
    assert Job.objects.count() == 1


def test_a_literal_backslash_u0000_is_not_a_nul() -> None:
    h = jobs.add.enqueue("\\u0000", 1)
    assert Job.objects.get(pk=h.id).args == ["\\u0000", 1]


def prepared_statements() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO pgqueue_job%%'")
        return cursor.fetchone()[0]


def test_the_single_ready_enqueue_runs_prepared_and_survives_rollbacks() -> None:
    with CaptureStatements() as captured:
        jobs.add.enqueue(0, 0)
    # while Django logs queries, the statement is not prepared, so the log shows its text
    assert len([s for s in captured.statements if "INSERT INTO pgqueue_job" in s]) == 1
    assert prepared_statements() == 0
    first = jobs.add.enqueue(1, 1)
    assert prepared_statements() == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        jobs.add.enqueue(2, 2)
        raise RuntimeError("roll back")  # psycopg forgets its prepared statements after a rollback
    second = jobs.add.enqueue(3, 3)
    assert list(Job.objects.order_by("id").values_list("id", "args"))[1:] == [(first.id, [1, 1]), (second.id, [3, 3])]
    assert prepared_statements() == 1


def test_prepared_statements_can_be_turned_off() -> None:
    connections["default"].close()  # a fresh session: no statement prepared yet
    with override_settings(PGQUEUE={"PREPARE_STATEMENTS": False}):
        h = jobs.add.enqueue(1, 1)
        assert prepared_statements() == 0
    assert Job.objects.get(pk=h.id).state == "ready"
