"""The maintenance leader's election through pgqueue_leader: one holder at a time, by the database's clock; a
holder renews while it acts and stops acting before its lead can pass; another process takes over only after
the lead ran out (or was given up), with the next token; a stale holder's renewal is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pgqueue import db, events
from pgqueue.models import Leader
from pgqueue.worker.leader import ACT_FRACTION, Lead

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def databases() -> Iterator[list[db.Database]]:
    opened: list[db.Database] = []
    yield opened
    for database in opened:
        database.close()


def lead(databases: list[db.Database], holder: str, seconds: float) -> Lead:
    database = db.Database(db.connection_kwargs(), owner=holder, role="maintenance")
    databases.append(database)
    return Lead(database, "maintenance", holder, seconds)


def test_one_holder_at_a_time_and_the_next_token_after_the_lead_runs_out(databases: list[db.Database]) -> None:
    said: list[tuple[str, dict[str, object]]] = []

    def leader(**e: object) -> None:
        said.append(("leader", e))

    def follower(**e: object) -> None:
        said.append(("follower", e))

    events.subscribe("maintenance_leader", leader)
    events.subscribe("maintenance_follower", follower)
    try:
        a, b = lead(databases, "a", 1.0), lead(databases, "b", 1.0)
        assert a.hold() and a.acting and a.token == 1
        assert not b.hold() and not b.acting  # a holds it
        assert a.hold()  # no round trip before a third of the lead has gone
        row = Leader.objects.get(role="maintenance")
        assert (row.holder, row.token) == ("a", 1)

        time.sleep(1.1)  # a stops (a pause, a lost connection): its lead runs out by the database's clock
        assert not a.acting  # it stopped acting before the row ran out (ACT_FRACTION of the lead)
        assert b.hold() and b.token == 2  # the next token
        assert not a.hold() and a.token is None  # its renewal names token 1: refused, and b holds the lead
        assert [(kind, e["worker"], e["token"]) for kind, e in said] == [
            ("leader", "a", 1), ("leader", "b", 2), ("follower", "a", 1)]
    finally:
        events.unsubscribe("maintenance_leader", leader)
        events.unsubscribe("maintenance_follower", follower)


def test_a_holder_renews_while_it_acts_and_acts_no_longer_than_its_last_renewal_allows(
        databases: list[db.Database]) -> None:
    a, b = lead(databases, "a", 1.5), lead(databases, "b", 1.5)
    assert a.hold()
    for _ in range(6):  # 1.8 s of rounds: renewed every half second, the lead never runs out
        time.sleep(0.3)
        assert a.hold() and not b.hold()
    assert a.token == 1
    renewed = time.monotonic()
    assert a.act_until <= renewed + 1.5 * ACT_FRACTION
    assert Leader.objects.get(role="maintenance").expires_at > Leader.objects.get(role="maintenance").renewed_at


def test_a_holder_that_stops_gives_the_lead_up_at_once(databases: list[db.Database]) -> None:
    a, b = lead(databases, "a", 60.0), lead(databases, "b", 60.0)
    assert a.hold() and not b.hold()
    a.resign()
    assert not a.acting
    assert b.hold() and b.token == 2  # no need to wait a minute for the lead to run out
