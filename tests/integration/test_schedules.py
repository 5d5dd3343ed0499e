"""Schedules on a real PostgreSQL: definitions written and kept, due ticks enqueued once even by two
schedulers at once (catching up or not), an operator's run now and switch, the system check."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.core import checks
from django.db import connection, connections
from django.test import override_settings

from pgqueue import schedules
from pgqueue.conf import get_settings
from pgqueue.models import Job, Schedule, ScheduleTick

pytestmark = pytest.mark.django_db(transaction=True)

MINUTELY = {"task": "tests.testapp.jobs.mark", "cron": "* * * * *", "args": ["minutely"]}


def specs() -> dict[str, schedules.ScheduleSpec]:
    return {s.name: s for s in schedules.declared(get_settings())}


def missed(name: str, minutes: int) -> None:
    """As if no scheduler had run for `minutes` minutes."""
    with connection.cursor() as cur:
        cur.execute("UPDATE pgqueue_schedule SET last_tick_at = date_trunc('minute', now()) - make_interval(mins => %s), "
                    "next_tick_at = NULL WHERE name = %s", [minutes, name])


def together(call, n: int = 2) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(10)
            call()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY}})
def test_two_schedulers_enqueue_the_latest_missed_tick_once() -> None:
    schedules.sync(list(specs().values()), "default")
    missed("minutely", 10)
    together(lambda: schedules.run_due(specs(), "default"))
    ticks = list(ScheduleTick.objects.values_list("tick", "job_id", "manual"))
    assert len(ticks) == 1 and ticks[0][2] is False
    job = Job.objects.get()
    assert (job.id, job.task, job.args) == (ticks[0][1], "tests.testapp.jobs.mark", ["minutely"])
    row = Schedule.objects.get()
    assert row.last_job_id == job.id and row.next_tick_at > row.last_tick_at >= ticks[0][0]
    schedules.run_due(specs(), "default")  # nothing more is due this minute
    assert Job.objects.count() == 1


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": {**MINUTELY, "catch_up": True}}})
def test_catching_up_enqueues_every_missed_tick_once_with_two_schedulers() -> None:
    schedules.sync(list(specs().values()), "default")
    missed("minutely", 10)
    together(lambda: schedules.run_due(specs(), "default"))
    ticks = sorted(ScheduleTick.objects.values_list("tick", flat=True))
    assert len(ticks) in (10, 11) and len(set(ticks)) == len(ticks)  # 11 if a minute turned meanwhile
    assert Job.objects.count() == len(ticks)
    assert all((b - a).total_seconds() == 60 for a, b in itertools.pairwise(ticks))


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY}})
def test_a_resync_keeps_the_operators_switch_and_a_disabled_schedule_enqueues_nothing() -> None:
    schedules.sync(list(specs().values()), "default")
    assert schedules.set_enabled(["minutely"], False) == ["minutely"]
    schedules.sync(list(specs().values()), "default")
    assert Schedule.objects.get().enabled is False
    missed("minutely", 3)
    assert schedules.run_due(specs(), "default") is None  # nothing enabled
    assert not Job.objects.exists()
    assert schedules.run_now(["minutely", "unknown"]) == ["minutely"]  # an operator may still run it
    tick = ScheduleTick.objects.get()
    assert tick.manual and Job.objects.get().id == tick.job_id == Schedule.objects.get().last_job_id


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY}})
def test_a_schedule_no_longer_declared_is_marked_and_not_run() -> None:
    schedules.sync(list(specs().values()), "default")
    schedules.sync([], "default")  # a scheduler whose code no longer declares it starts
    assert Schedule.objects.get().declared is False
    missed("minutely", 3)
    assert schedules.run_due({}, "default") is None  # it runs only what it declares
    assert not Job.objects.exists()


@pytest.mark.parametrize(("entry", "message"), [
    ({"task": "tests.testapp.jobs.mark", "cron": "61 * * * *"},
     "Schedule 'bad': '61 * * * *' is not a valid cron expression"),
    ({"task": "tests.testapp.jobs.mark", "cron": "* * * * *", "timezone": "Mars/Olympus"},
     "Schedule 'bad': unknown time zone 'Mars/Olympus'"),
    ({"task": "tests.testapp.jobs.nope", "cron": "* * * * *"}, "Schedule 'bad': task 'tests.testapp.jobs.nope':"),
    ({"task": "tests.testapp.jobs.add", "cron": "* * * * *", "args": [1]},
     "Schedule 'bad': Job tests.testapp.jobs.add: the arguments do not fit"),
    ({"task": "tests.testapp.jobs.mark", "cron": "* * * * *", "catch_up": "yes"},
     "Schedule 'bad': catch_up must be True or False, got 'yes'."),
    ({"task": "tests.testapp.jobs.mark", "cron": "* * * * *", "args": {"a": 1}},
     "Schedule 'bad': args must be a list, got {'a': 1}."),
])
def test_a_bad_schedule_is_a_system_check_error(entry: dict, message: str) -> None:
    with override_settings(PGQUEUE={"SCHEDULES": {"bad": entry}}):
        errors = [m for m in checks.run_checks() if m.id == "pgqueue.E005"]
    assert len(errors) == 1 and errors[0].msg.startswith(message), errors


def test_a_malformed_schedules_setting_is_a_settings_error() -> None:
    with override_settings(PGQUEUE={"SCHEDULES": {"bad": {"cron": "* * * * *"}}}):
        errors = [m for m in checks.run_checks() if m.id == "pgqueue.E001"]
    assert len(errors) == 1 and "schedule 'bad' needs task" in errors[0].msg


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY, "other": {**MINUTELY, "args": ["other"]}}})
def test_a_scheduler_runs_only_its_own_schedules_and_does_not_spin_on_others() -> None:
    schedules.sync(list(specs().values()), "default")
    missed("minutely", 3)
    missed("other", 3)
    mine = {"minutely": specs()["minutely"]}  # another version of the code declares "other" only
    wait = schedules.run_due(mine, "default")
    assert list(Job.objects.values_list("args", flat=True)) == [["minutely"]]
    assert wait is not None and wait > 0  # the other's due tick is not its business: no busy loop


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY}})
def test_a_changed_expression_starts_over_instead_of_running_what_the_old_one_missed() -> None:
    schedules.sync(list(specs().values()), "default")
    missed("minutely", 30)
    with override_settings(PGQUEUE={"SCHEDULES": {"minutely": {**MINUTELY, "cron": "*/2 * * * *"}}}):
        schedules.sync(list(specs().values()), "default")
        schedules.run_due(specs(), "default")
    assert not Job.objects.exists()
    assert Schedule.objects.get().cron == "*/2 * * * *"


def test_run_now_uses_the_schedule_row_and_leaves_out_what_it_cannot_enqueue() -> None:
    with override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY}}):
        schedules.sync(list(specs().values()), "default")
    Schedule.objects.create(name="broken", task="tests.testapp.jobs.add", cron="* * * * *", args=["x"],
                            kwargs={"nope": 1})
    assert schedules.run_now(["minutely", "broken", "unknown"]) == ["minutely"]  # settings no longer name it
    assert list(Job.objects.values_list("args", flat=True)) == [["minutely"]]
    assert ScheduleTick.objects.count() == 1


def test_a_schedule_declared_twice_with_the_decorator_is_refused() -> None:
    from pgqueue.exceptions import InvalidJob
    from tests.testapp import jobs

    schedules.schedule("0 1 * * *", name="twice")(jobs.noop)
    try:
        with pytest.raises(InvalidJob, match="Schedule 'twice' is declared twice with @schedule"):
            schedules.schedule("0 2 * * *", name="twice")(jobs.noop)
    finally:
        schedules._decorated.pop("twice", None)


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "* * 31 2 *"])
def test_a_schedule_that_never_fires_is_a_system_check_error(cron: str) -> None:
    with override_settings(PGQUEUE={"SCHEDULES": {"never": {"task": "tests.testapp.jobs.mark", "cron": cron}}}):
        errors = [m for m in checks.run_checks() if m.id == "pgqueue.E005"]
    assert len(errors) == 1 and errors[0].msg.startswith(f"Schedule 'never': {cron!r} never fires: no date "
                                                         "matches it"), errors


def test_february_29th_fires_and_passes_the_check() -> None:
    with override_settings(PGQUEUE={"SCHEDULES": {"leap": {"task": "tests.testapp.jobs.mark", "cron": "0 0 29 2 *",
                                                              "args": ["leap"]}}}):
        assert [m for m in checks.run_checks() if m.id == "pgqueue.E005"] == []


@override_settings(PGQUEUE={"SCHEDULES": {"minutely": MINUTELY}})
def test_a_schedule_that_cannot_compute_its_ticks_never_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    good = specs()
    broken = schedules.ScheduleSpec(name="a-never", task="tests.testapp.jobs.mark", cron="0 0 30 2 *",
                                    timezone="UTC", args=("never",), kwargs=(), catch_up=False)  # past the check
    both = {**good, "a-never": broken}
    schedules.sync(list(both.values()), "default")
    missed("minutely", 2)
    missed("a-never", 2)
    schedules._FAILING.discard("a-never")
    for _ in range(3):  # each round skips the broken one (reported once) and runs the good one
        wait = schedules.run_due(both, "default")
        assert wait is not None and wait > 0  # it waits for the good schedule: no spin on the broken one
    assert Job.objects.filter(args=["minutely"]).count() == 1  # the latest missed tick, once
    assert Schedule.objects.get(name="minutely").next_tick_at is not None
    assert not Job.objects.filter(args=["never"]).exists()
    reports = [r for r in caplog.records if "cannot compute schedule a-never's ticks" in r.getMessage()]
    assert len(reports) == 1
