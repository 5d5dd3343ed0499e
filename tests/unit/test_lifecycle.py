"""pgqueue.lifecycle as a table: (the job, how its attempt ended) -> the transition. No database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest

from pgqueue import lifecycle
from pgqueue.lifecycle import (
    AttemptEnd,
    Ending,
    ErrorInfo,
    RetryPolicy,
    decide,
    exit_status,
    release,
    stripped,
)
from pgqueue.types import HeldJob, JobState, Outcome, Release, SettledDependency

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=3)
POLICY = RetryPolicy(backoff=2.0, backoff_max=60.0, jitter=0.5)
BOOM = ErrorInfo(error_class="RuntimeError", message="RuntimeError: boom", traceback="Traceback ...")


def held(attempt: int = 1, max_attempts: int = 3, lost: int = 0, crashes: int = 0) -> HeldJob:
    return HeldJob(id=7, queue="default", task="app.jobs.work", attempt=attempt, max_attempts=max_attempts, lost_attempts=lost, crashes=crashes,
                   lease_token=uuid.UUID(int=1), started_at=T0, leased_by="w1")


def end(how: Ending, **kwargs: object) -> AttemptEnd:
    defaults: dict[str, object] = {"worker": "w1", "finished_at": T1}
    if how in (Ending.RAISED, Ending.TIMED_OUT, Ending.CANCELLED, Ending.UNKNOWN_TASK, Ending.RESULT_TOO_LARGE):
        defaults["error"] = BOOM
    return AttemptEnd(how=how, **{**defaults, **kwargs})  # type: ignore[arg-type]


# (job, ending) -> (state, outcome, reason, yields to cancel, attempts, lost attempts, crashes)
TABLE = [
    ("returned", held(), end(Ending.RETURNED, result="5"), ("succeeded", "succeeded", "", False, 1, 0, 0)),
    ("returned on the last attempt", held(3, 3), end(Ending.RETURNED), ("succeeded", "succeeded", "", False, 3, 0, 0)),
    ("raised, attempts left", held(1, 3), end(Ending.RAISED), ("scheduled", "failed", "", True, 1, 0, 0)),
    ("raised, last attempt", held(3, 3), end(Ending.RAISED), ("dead", "failed", "max_attempts", False, 3, 0, 0)),
    ("raised, lost attempts not counted", held(3, 3, lost=1), end(Ending.RAISED),
     ("scheduled", "failed", "", True, 3, 1, 0)),
    ("raised a non-retryable error", held(1, 5), end(Ending.RAISED, retryable=False),
     ("dead", "failed", "non_retryable", False, 1, 0, 0)),
    ("timed out, attempts left", held(1, 2), end(Ending.TIMED_OUT), ("scheduled", "timeout", "", True, 1, 0, 0)),
    ("timed out, last attempt", held(2, 2), end(Ending.TIMED_OUT), ("dead", "timeout", "max_attempts", False, 2, 0, 0)),
    ("cancelled", held(1, 3), end(Ending.CANCELLED), ("cancelled", "cancelled", "", False, 1, 0, 0)),
    ("unknown task, attempts left", held(1, 3), end(Ending.UNKNOWN_TASK), ("scheduled", "failed", "", True, 1, 0, 0)),
    ("unknown task, last attempt", held(3, 3), end(Ending.UNKNOWN_TASK),
     ("dead", "failed", "unknown_task", False, 3, 0, 0)),
    ("result too large", held(1, 3), end(Ending.RESULT_TOO_LARGE),
     ("dead", "failed", "result_too_large", False, 1, 0, 0)),
    ("released at shutdown", held(2, 3), end(Ending.RELEASED), ("ready", "released", "", True, 1, 0, 0)),
    ("lease expired", held(1, 1), end(Ending.LOST), ("ready", "lost", "", True, 1, 1, 0)),
    ("lease expired once more than max_attempts", held(2, 1, lost=1), end(Ending.LOST),
     ("dead", "lost", "lost", False, 2, 2, 0)),
    ("crash with neighbours", held(1, 3), end(Ending.LOST, crash=True, exit_code=-9),
     ("ready", "lost", "", True, 1, 1, 1)),
    ("first crash alone", held(1, 3), end(Ending.LOST, crash=True, alone=True, exit_code=-11),
     ("ready", "lost", "", True, 1, 1, 1)),
    ("crash alone after an earlier crash", held(2, 3, lost=1, crashes=1),
     end(Ending.LOST, crash=True, alone=True, exit_code=-11), ("dead", "lost", "crashed", False, 2, 2, 2)),
    ("second crash, not alone: no blame", held(2, 3, lost=1, crashes=1), end(Ending.LOST, crash=True, exit_code=1),
     ("ready", "lost", "", True, 2, 2, 2)),
]


def flow(slot: int | None = 0, hold: bool = False, lock: str | None = "k", **kwargs: int) -> HeldJob:
    """A held job with a uniqueness key and (unless slot=None) a semaphore slot."""
    return dataclasses.replace(held(**kwargs), lock_key=lock, concurrency_key="sem" if slot is not None else None,
                               slot=slot, concurrency_hold=hold)


# (job, ending) -> (state, yields to cancel, releases its key, gives its slot up)
FLOW_TABLE = [
    ("succeeded: key and slot go", flow(), end(Ending.RETURNED), ("succeeded", False, True, True)),
    ("dead: key and slot go", flow(attempt=3), end(Ending.RAISED), ("dead", False, True, True)),
    ("cancelled: key and slot go", flow(), end(Ending.CANCELLED), ("cancelled", False, True, True)),
    ("retry after a delay: blocked without its slot, key kept", flow(), end(Ending.RAISED),
     ("blocked", True, False, True)),
    ("retry after a delay holding the line", flow(hold=True), end(Ending.RAISED), ("scheduled", True, False, False)),
    ("released at shutdown: keeps both", flow(), end(Ending.RELEASED), ("ready", True, False, False)),
    ("rescued: keeps both", flow(), end(Ending.LOST), ("ready", True, False, False)),
    ("lost too often: both go", flow(attempt=2, max_attempts=1, lost=1), end(Ending.LOST), ("dead", False, True, True)),
    ("no semaphore: a retry is scheduled", flow(slot=None), end(Ending.RAISED), ("scheduled", True, False, False)),
    ("no key, no slot", flow(slot=None, lock=None), end(Ending.RETURNED), ("succeeded", False, False, False)),
]


@pytest.mark.parametrize(("label", "job", "ending", "expected"), FLOW_TABLE, ids=[row[0] for row in FLOW_TABLE])
def test_flow_table(label: str, job: HeldJob, ending: AttemptEnd, expected: tuple) -> None:
    t = decide(job, ending, POLICY, rand=0.0)
    assert (t.state.value, t.yields_to_cancel, t.release_lock, t.release_slot) == expected
    assert t.slot == job.slot


def test_a_retry_without_delay_keeps_the_slot() -> None:
    t = decide(flow(), end(Ending.RAISED), RetryPolicy(backoff=0.0, backoff_max=0.0, jitter=0.0))
    assert (t.state, t.release_slot) == (JobState.READY, False)


@pytest.mark.parametrize(("label", "job", "ending", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_transition_table(label: str, job: HeldJob, ending: AttemptEnd, expected: tuple) -> None:
    t = decide(job, ending, POLICY, rand=0.0)
    got = (t.state.value, t.outcome.value, t.reason_code, t.yields_to_cancel, t.attempts, t.lost_attempts, t.crashes)
    assert got == expected
    assert (t.job_id, t.lease_token, t.attempt, t.started_at, t.finished_at) == (7, job.lease_token, job.attempt, T0, T1)


def test_retry_delay_is_exponential_capped_and_jittered() -> None:
    delays = [(decide(held(n, 10), end(Ending.RAISED), POLICY, rand=0.0).run_at - T1).total_seconds()
              for n in range(1, 8)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    jittered = decide(held(1, 10), end(Ending.RAISED), POLICY, rand=0.999).run_at
    assert jittered is not None and 2.0 < (jittered - T1).total_seconds() <= 3.0
    zero = decide(held(1, 3), end(Ending.RAISED), RetryPolicy(backoff=0, backoff_max=0, jitter=0))
    assert (zero.state, zero.run_at) == (JobState.READY, T1)


def test_a_non_finite_delay_never_escapes() -> None:
    nan = RetryPolicy(backoff=float("nan"), backoff_max=10.0, jitter=0.1)
    assert 0.0 <= nan.delay(1, 0.5) <= 10.0 * 1.1
    assert RetryPolicy(backoff=float("inf"), backoff_max=float("inf"), jitter=0.0).delay(3, 0.0) == 0.0


def test_attempt_row_and_job_error() -> None:
    failed = decide(held(), end(Ending.RAISED), POLICY)
    assert (failed.error_class, failed.message, failed.traceback) == ("RuntimeError", "RuntimeError: boom", "Traceback ...")
    assert (failed.job_error_class, failed.job_error) == ("RuntimeError", "RuntimeError: boom")
    ok = decide(held(), end(Ending.RETURNED, result='{"a":1}'), POLICY)
    assert (ok.result, ok.job_error_class, ok.job_error, ok.message) == ('{"a":1}', None, None, "")
    released = decide(held(), end(Ending.RELEASED), POLICY)
    assert released.job_error is None and "shut down" in released.message


def test_lost_attempt_rows_say_how_the_process_ended() -> None:
    crash = decide(held(), end(Ending.LOST, crash=True, exit_code=-9), POLICY)
    assert crash.exit_code == -9 and crash.error_class == lifecycle.DIED_ERROR_CLASS
    assert crash.message.startswith("worker w1 died with signal 9 (SIGKILL) during attempt 1")
    assert "run alone next" in crash.message
    expired = decide(held(), end(Ending.LOST), POLICY)
    assert expired.exit_code is None and expired.error_class == lifecycle.LOST_ERROR_CLASS
    assert exit_status(3) == "exit code 3" and exit_status(None) == "an unknown exit status"
    assert exit_status(-999) == "signal 999"


def test_text_is_fitted_to_its_columns() -> None:
    huge = ErrorInfo(error_class="x." * 400, message="m\x00" * 5000, traceback="t" * 50_000 + "END")
    t = decide(held(), end(Ending.RAISED, error=huge, worker="w" * 100), POLICY)
    assert len(t.error_class) == lifecycle.ERROR_CLASS_MAX and len(t.worker) == lifecycle.WORKER_MAX
    assert len(t.message) == lifecycle.MESSAGE_MAX and "\x00" not in t.message
    assert len(t.traceback) == lifecycle.TRACEBACK_MAX and t.traceback.endswith("END")
    lone = decide(held(), end(Ending.RAISED, error=ErrorInfo(error_class="E", message="bad \udc80")), POLICY)
    lone.message.encode("utf-8")  # storable


def test_column_sizes_match_the_models() -> None:
    from pgqueue.models import Attempt, Job

    assert Job._meta.get_field("error_class").max_length == lifecycle.ERROR_CLASS_MAX
    assert Attempt._meta.get_field("error_class").max_length == lifecycle.ERROR_CLASS_MAX
    assert Attempt._meta.get_field("worker").max_length == lifecycle.WORKER_MAX


def test_stripped_keeps_the_decision_and_drops_the_details() -> None:
    ok = decide(held(), end(Ending.RETURNED, result='"x"'), POLICY)
    s = stripped(ok, "DataError: nope")
    assert (s.state, s.outcome, s.result, s.job_error) == (JobState.SUCCEEDED, Outcome.SUCCEEDED, None, None)
    assert "could not store" in s.message
    retry = stripped(decide(held(), end(Ending.RAISED), POLICY), "x")
    assert (retry.state, retry.yields_to_cancel, retry.traceback) == (JobState.SCHEDULED, True, "")


# -- dependencies: what a waiting job does when jobs it depends on finish -------------------------------


def _edge(job_id: int, parent_id: int, parent_state: str, on_failure: str = "cancel") -> SettledDependency:
    return SettledDependency(job_id=job_id, parent_id=parent_id, parent_state=parent_state,
                             parent_task="app.jobs.step", on_failure=on_failure)


def test_release_counts_succeeded_dependencies_per_waiting_job() -> None:
    decisions = release([_edge(7, 2, "succeeded"), _edge(5, 1, "succeeded"), _edge(7, 1, "succeeded")])
    assert decisions == [Release(job_id=5, satisfied=1, cancel_reason=None),
                         Release(job_id=7, satisfied=2, cancel_reason=None)]


def test_release_cancels_for_the_first_failed_dependency_and_names_it() -> None:
    decisions = release([_edge(9, 4, "cancelled"), _edge(9, 3, "dead"), _edge(9, 2, "succeeded")])
    assert decisions == [Release(job_id=9, satisfied=1,
                                 cancel_reason="job 3 (app.jobs.step), which it depends on, is dead")]


def test_release_lets_a_job_that_runs_anyway_count_a_failed_dependency_as_done() -> None:
    assert release([_edge(9, 3, "dead", "run"), _edge(9, 4, "cancelled", "run")]) == [
        Release(job_id=9, satisfied=2, cancel_reason=None)]
    assert release([]) == []


def test_find_cycle_names_the_steps_of_a_cycle_or_nothing() -> None:
    from pgqueue.enqueuing.workflows import find_cycle

    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) == []
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": [], "a": ["x", "a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["d"], "d": ["e"], "e": ["c"]}) == ["c", "d", "e", "c"]
    deep = {f"s{i}": [f"s{i + 1}"] for i in range(5000)} | {"s5000": []}
    assert find_cycle(deep) == []  # no recursion limit
    assert find_cycle(deep | {"s5000": ["s0"]})[:2] == ["s0", "s1"]


# -- schedules: ticks in their time zone ---------------------------------------------------------------


def _spec(cron: str, zone: str = "UTC", catch_up: bool = False) -> Any:
    from pgqueue.schedules import ScheduleSpec

    return ScheduleSpec(name="s", task="t", cron=cron, timezone=zone, catch_up=catch_up)


def _utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def test_a_daily_schedule_runs_once_on_the_days_clocks_change() -> None:
    from pgqueue.schedules import ticks_between

    daily = _spec("30 2 * * *", "Europe/Paris")
    spring = ticks_between(daily, _utc(2026, 3, 28, 12), _utc(2026, 3, 30, 12), 10)
    assert spring == [_utc(2026, 3, 29, 1, 0), _utc(2026, 3, 30, 0, 30)]  # 02:30 does not exist: 03:00 local
    autumn = ticks_between(daily, _utc(2026, 10, 24, 12), _utc(2026, 10, 26, 12), 10)
    assert autumn == [_utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)]  # 02:30 happens twice: once


def test_an_hourly_schedule_runs_every_real_hour_when_clocks_go_back() -> None:
    from pgqueue.schedules import ticks_between

    hourly = _spec("0 * * * *", "Europe/Paris")
    ticks = ticks_between(hourly, _utc(2026, 10, 24, 23, 30), _utc(2026, 10, 25, 2, 30), 10)
    assert ticks == [_utc(2026, 10, 25, 0), _utc(2026, 10, 25, 1), _utc(2026, 10, 25, 2)]  # 02:00 local twice


def test_after_downtime_only_the_latest_tick_runs_unless_catching_up() -> None:
    from pgqueue.schedules import due

    every_minute = _spec("* * * * *")
    assert due(every_minute, _utc(2026, 1, 1, 0, 0), _utc(2026, 1, 1, 1, 0, 30)) == [_utc(2026, 1, 1, 1, 0)]
    caught = due(_spec("* * * * *", catch_up=True), _utc(2026, 1, 1, 0, 0), _utc(2026, 1, 1, 1, 0, 30))
    assert len(caught) == 60 and caught[0] == _utc(2026, 1, 1, 0, 1) and caught[-1] == _utc(2026, 1, 1, 1, 0)
    assert due(every_minute, _utc(2026, 1, 1, 0, 0), _utc(2026, 1, 1, 0, 0, 59)) == []
    seconds = _spec("* * * * * */10")
    assert due(seconds, _utc(2026, 1, 1), _utc(2026, 1, 1, 0, 0, 35)) == [_utc(2026, 1, 1, 0, 0, 30)]


def test_a_daily_schedule_runs_once_when_clocks_go_back_between_two_rounds() -> None:
    from pgqueue.schedules import ticks_between

    daily = _spec("30 2 * * *", "Europe/Paris")
    first = _utc(2026, 10, 25, 0, 30)  # 02:30 local, before the clocks go back at 03:00
    assert ticks_between(daily, first, _utc(2026, 10, 25, 1, 31), 10) == []  # 02:30 again, an hour later: no


def test_a_long_downtime_walks_only_the_ticks_it_keeps() -> None:
    import time

    from pgqueue.schedules import due

    every_second = _spec("* * * * * *")
    started = time.perf_counter()
    assert due(every_second, _utc(2026, 1, 1), _utc(2026, 1, 8, 0, 0, 5)) == [_utc(2026, 1, 8, 0, 0, 5)]
    caught = due(_spec("* * * * * *", catch_up=True), _utc(2026, 1, 1), _utc(2026, 1, 8))
    assert len(caught) == 1000 and caught[-1] == _utc(2026, 1, 8)
    assert time.perf_counter() - started < 5  # a week of seconds is 604,800 ticks: not walked


def test_aliases_are_written_out_and_bad_expressions_refused() -> None:
    from pgqueue.exceptions import InvalidJob
    from pgqueue.schedules import check, due
    from tests.testapp import jobs

    spec = check("nightly", {"cron": "@daily", "task": "x"}, job=jobs.noop)
    assert spec.cron == "0 0 * * *"
    assert due(spec, _utc(2026, 1, 1, 12), _utc(2026, 1, 2, 0, 0, 1)) == [_utc(2026, 1, 2)]
    for bad in ("* * * * * * 2030", "* * *", "61 * * * *", 5):
        with pytest.raises(InvalidJob, match="is not a valid cron expression"):
            check("bad", {"cron": bad, "task": "x"}, job=jobs.noop)
