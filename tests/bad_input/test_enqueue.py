"""Bad input at enqueue time, on a real PostgreSQL: always an InvalidJob kind with a precise message, and
no row. The values are what a careless caller or an attacker would pass."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from pgqueue import job
from pgqueue.enqueuing.options import JobCall, JobOptions
from pgqueue.exceptions import InvalidJob, NotSerializable, UnknownJob
from pgqueue.models import Job
from tests.bad_input.conftest import Refused
from tests.testapp import jobs

ADD = "Job tests.testapp.jobs.add:"
POSITIONAL = f"{ADD} positional arguments cannot be stored as JSON"
KEYWORD = f"{ADD} keyword arguments cannot be stored as JSON"
UTC_MINUS_5 = dt.timezone(dt.timedelta(hours=-5))


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class FailingZone(dt.tzinfo):
    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("no offset today")


BROKEN_ZONE_TIME = dt.datetime(2030, 1, 1, tzinfo=FailingZone())


class TooFarZone(dt.tzinfo):
    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=30)


FAR_ZONE_TIME = dt.datetime(2030, 1, 1, tzinfo=TooFarZone())


@job
def collect(**kwargs: Any) -> None:
    """Takes any keyword arguments (for the "odd but valid" cases)."""


CASES: list[tuple[str, type[BaseException], str, Callable[[], Any]]] = [
    # JSON that PostgreSQL (or reading it back) cannot take.
    ("lone surrogate", NotSerializable,
     f"{POSITIONAL} (it contains text that is not valid Unicode (a lone surrogate)).",
     lambda: jobs.add.enqueue("\ud800", 1)),
    ("lone surrogate in a key", NotSerializable,
     f"{POSITIONAL} (it contains text that is not valid Unicode (a lone surrogate)).",
     lambda: jobs.add.enqueue({"\udfff": 1}, 1)),
    ("lone surrogate in a keyword", NotSerializable,
     f"{KEYWORD} (it contains text that is not valid Unicode (a lone surrogate)).",
     lambda: jobs.add.enqueue(1, b="x\udc80")),
    # issue #18, class 6: keys json.dumps writes as one key kept only one of the values
    ("keys 1 and '1'", NotSerializable, f"{POSITIONAL} (a dict has the keys 1 and '1', which JSON writes as the one "
     "key '1': one value would be lost).", lambda: jobs.add.enqueue({1: "a", "1": "b"}, 1)),
    ("keys True and 'true', nested", NotSerializable, f"{KEYWORD} (a dict has the keys True and 'true', which JSON "
     "writes as the one key 'true': one value would be lost).", lambda: jobs.add.enqueue(1, b=[{"x": {True: 1, "true": 2}}])),
    ("NUL in a keyword", NotSerializable,
     f"{KEYWORD} (it contains a NUL character, which PostgreSQL JSON cannot store).",
     lambda: jobs.add.enqueue(1, b=["\x00"])),
    ("nested 100,000 deep", NotSerializable, f"{POSITIONAL} (it is nested too deeply).",
     lambda: jobs.add.enqueue(nested(100_000), 1)),
    ("nested 5,000 deep", NotSerializable, f"{POSITIONAL} (it is nested too deeply).",
     lambda: jobs.add.enqueue(nested(5_000), 1)),
    ("nested 900 deep (json.dumps takes it)", NotSerializable,
     f"{POSITIONAL} (a value is nested 900 levels deep, over the limit of 100).",
     lambda: jobs.add.enqueue(nested(900), 1)),
    ("nested 101 deep in a dict", NotSerializable,
     f"{KEYWORD} (a value is nested 101 levels deep, over the limit of 100).",
     lambda: jobs.add.enqueue(1, b={"k": nested(100)})),
    ("huge int", NotSerializable,
     f"{POSITIONAL} (Exceeds the limit (4300 digits) for integer string conversion",
     lambda: jobs.add.enqueue(10**5000, 1)),
    ("infinite float", NotSerializable, f"{POSITIONAL} (Out of range float values are not JSON compliant",
     lambda: jobs.add.enqueue(math.inf, 1)),
    ("a generator", NotSerializable, f"{POSITIONAL} (Object of type generator is not JSON serializable).",
     lambda: jobs.add.enqueue((i for i in range(3)), 1)),
    ("a tuple as dict key", NotSerializable,
     f"{POSITIONAL} (keys must be str, int, float, bool or None, not tuple).",
     lambda: jobs.add.enqueue({(1, 2): 3}, 1)),
    # When the job may start.
    ("delay inf", InvalidJob, f"{ADD} delay must be a finite number of seconds, got inf.",
     lambda: jobs.add.options(delay=math.inf)),
    ("delay nan", InvalidJob, f"{ADD} delay must be a finite number of seconds, got nan.",
     lambda: jobs.add.options(delay=math.nan)),
    ("delay 1e300", InvalidJob,
     f"{ADD} delay 1e+300 is too far in the future: a job must start before 9999-01-01 UTC.",
     lambda: jobs.add.options(delay=1e300)),
    ("delay timedelta.max", InvalidJob,
     f"{ADD} delay {dt.timedelta.max!r} is too far in the future: a job must start before 9999-01-01 UTC.",
     lambda: jobs.add.options(delay=dt.timedelta.max)),
    ("delay 10**400 (an int no float holds)", InvalidJob, f"{ADD} delay {str(10**400)[:80]}... (401 characters) is too far in the future",
     lambda: jobs.add.options(delay=10**400)),
    ("delay True", InvalidJob, f"{ADD} delay must be seconds >= 0 or a timedelta, got True.",
     lambda: jobs.add.options(delay=True)),
    ("delay nan given as JobOptions", InvalidJob, f"{ADD} delay must be a finite number of seconds, got nan.",
     lambda: pgqueue.enqueue_many([JobCall(job=jobs.add, args=(1, 1), kwargs={},
                                           options=JobOptions(delay=math.nan))])),
    ("run_at in the year 10000 once in UTC", InvalidJob,
     f"{ADD} run_at 9999-12-31T23:00:00-05:00 is out of range: a job must start from 0002-01-01 to before "
     "9999-01-01 UTC.",
     lambda: jobs.add.options(run_at=dt.datetime(9999, 12, 31, 23, tzinfo=UTC_MINUS_5))),
    ("run_at datetime.max", InvalidJob, f"{ADD} run_at 9999-12-31T23:59:59.999999+00:00 is out of range",
     lambda: jobs.add.options(run_at=dt.datetime.max.replace(tzinfo=dt.UTC))),
    ("run_at in the year 1", InvalidJob, f"{ADD} run_at 0001-01-01T00:00:00+05:00 is out of range",
     lambda: jobs.add.options(run_at=dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))))),
    ("run_at whose time zone raises", InvalidJob,
     f"{ADD} run_at's time zone (FailingZone) fails: RuntimeError('no offset today').",
     lambda: jobs.add.options(run_at=BROKEN_ZONE_TIME)),
    ("run_at whose offset is 30 hours", InvalidJob,
     f"{ADD} run_at's time zone (TooFarZone) fails: ValueError('offset must be a timedelta strictly between",
     lambda: jobs.add.options(run_at=FAR_ZONE_TIME)),
    ("run_at a date", InvalidJob, f"{ADD} run_at must be a datetime, got date.",
     lambda: jobs.add.options(run_at=dt.date(2030, 1, 1))),
    # Names PostgreSQL cannot store.
    ("NUL in a queue name", InvalidJob,
     f"{ADD} Invalid queue name 'a\\x00b': it contains the control character U+0000.",
     lambda: jobs.add.options(queue="a\x00b")),
    ("newline in a queue name", InvalidJob,
     f"{ADD} Invalid queue name 'a\\nb': it contains the control character U+000A.",
     lambda: jobs.add.options(queue="a\nb")),
    ("lone surrogate in a queue name", InvalidJob,
     f"{ADD} Invalid queue name '\\ud800': it contains a lone surrogate (U+D800), which is not valid Unicode.",
     lambda: jobs.add.options(queue="\ud800")),
    ("queue name 101 characters long", InvalidJob,
     f"{ADD} Invalid queue name {'q' * 80!r}... (101 characters): it is 101 characters long, over 100.",
     lambda: jobs.add.options(queue="q" * 101)),
    ("queue 123", InvalidJob, f"{ADD} Invalid queue name 123: a queue name must be a string, got int.",
     lambda: jobs.add.options(queue=123)),
    ("queue given as JobOptions", InvalidJob, f"{ADD} Invalid queue name 'a\\x00': it contains the control",
     lambda: pgqueue.enqueue_many([JobCall(job=jobs.add, args=(1, 1), kwargs={},
                                           options=JobOptions(queue="a\x00"))])),
    ("NUL in a task name", UnknownJob, "No job is registered as 'tests.testapp.jobs.add\\x00'.",
     lambda: pgqueue.enqueue("tests.testapp.jobs.add\x00", 1, 1)),
    ("a task name that is not a string", UnknownJob, "A job name is a string, got int 123.",
     lambda: pgqueue.enqueue(123, 1)),
    ("a task name that is a relative import", UnknownJob, "No job is registered as '..x'.",
     lambda: pgqueue.enqueue("..x")),
    # Numbers of the wrong kind.
    ("priority 1.0", InvalidJob, f"{ADD} priority must be an integer from -100 to 100, got 1.0.",
     lambda: jobs.add.options(priority=1.0)),
    ("priority True", InvalidJob, f"{ADD} priority must be an integer from -100 to 100, got True.",
     lambda: jobs.add.options(priority=True)),
    ("max_attempts 2.0", InvalidJob, f"{ADD} max_attempts must be an integer from 1 to 10000, got 2.0.",
     lambda: jobs.add.options(max_attempts=2.0)),
    ("max_attempts 10**12", InvalidJob,
     f"{ADD} max_attempts must be an integer from 1 to 10000, got 1000000000000.",
     lambda: jobs.add.options(max_attempts=10**12)),
    ("timeout nan", InvalidJob, f"{ADD} timeout must be a finite number of seconds, got nan.",
     lambda: jobs.add.options(timeout=math.nan)),
    ("timeout inf", InvalidJob, f"{ADD} timeout must be a finite number of seconds, got inf.",
     lambda: jobs.add.options(timeout=math.inf)),
    ("timeout beyond a year", InvalidJob,
     f"{ADD} timeout must be at most 31536000 seconds (365 days), got 1e+20.",
     lambda: jobs.add.options(timeout=1e20)),
    ("timeout nan given as JobOptions", InvalidJob, f"{ADD} timeout must be a finite number of seconds, got nan.",
     lambda: pgqueue.enqueue_many([JobCall(job=jobs.add, args=(1, 1), kwargs={},
                                           options=JobOptions(timeout=math.nan))])),
    # Calls that are not calls.
    ("enqueue_many([1])", InvalidJob,
     "pgqueue.enqueue_many() item 0 is an int, not a call; build calls with fn.call(...) or "
     "fn.options(...).call(...).",
     lambda: pgqueue.enqueue_many([1])),
    ("enqueue_many with a string among calls", InvalidJob, "pgqueue.enqueue_many() item 1 is a str, not a call",
     lambda: pgqueue.enqueue_many([jobs.add.call(1, 1), "tests.testapp.jobs.add"])),
    ("enqueue_many(one call)", InvalidJob,
     "pgqueue.enqueue_many() takes a list (or another iterable) of calls, got a JobCall.",
     lambda: pgqueue.enqueue_many(jobs.add.call(1, 1))),
    ("enqueue_many(None)", InvalidJob,
     "pgqueue.enqueue_many() takes a list (or another iterable) of calls, got a NoneType.",
     lambda: pgqueue.enqueue_many(None)),
    ("fn.enqueue_many([dict])", InvalidJob,
     f"{ADD} enqueue_many() item 0 is a dict, which would arrive as one positional argument; for keyword "
     "arguments use add.call(**kwargs).",
     lambda: jobs.add.enqueue_many([{"a": 1, "b": 2}])),
    ("fn.enqueue_many([str])", InvalidJob,
     f"{ADD} enqueue_many() item 1 is a str, which would be split into one argument per character; wrap it "
     "in a tuple: (value,).",
     lambda: jobs.add.enqueue_many([(1, 2), "ab"])),
    ("fn.enqueue_many([int])", InvalidJob,
     f"{ADD} enqueue_many() item 0 is an int; give a tuple or list of positional arguments, or add.call(...).",
     lambda: jobs.add.enqueue_many([3])),
    ("fn.enqueue_many(dict)", InvalidJob,
     "add.enqueue_many() takes a list (or another iterable) of calls, got a dict.",
     lambda: jobs.add.enqueue_many({"a": 1})),
    ("fn.enqueue_many with another job's call", InvalidJob,
     f"{ADD} enqueue_many() item 0 is a call of job tests.testapp.jobs.mark; enqueue calls of several jobs "
     "with pgqueue.enqueue_many().",
     lambda: jobs.add.enqueue_many([jobs.mark.call("x")])),
    ("a JobCall of something that is not a job", InvalidJob,
     "'tests.testapp.jobs.add' is not a registered job (or a later @job replaced it)",
     lambda: pgqueue.enqueue_many([JobCall(job="tests.testapp.jobs.add", args=(), kwargs={})])),  # type: ignore[arg-type]
    ("a JobCall with list args", InvalidJob, f"{ADD} JobCall args must be a tuple, got list.",
     lambda: JobCall(job=jobs.add, args=[1, 2], kwargs={})),  # type: ignore[arg-type]
    ("keyword names that are not strings", InvalidJob, f"{ADD} keyword argument names must be strings, got 1.",
     lambda: JobCall(job=jobs.add, args=(), kwargs={1: 2})),  # type: ignore[dict-item]
    # Arguments the function cannot take: the worker would fail every attempt.
    ("a missing argument", InvalidJob,
     f"{ADD} the arguments do not fit add(a: 'int', b: 'int'): missing a required argument: 'b'.",
     lambda: jobs.add.enqueue(1)),
    ("an option passed as an argument", InvalidJob,
     f"{ADD} the arguments do not fit add(a: 'int', b: 'int'): got an unexpected keyword argument "
     "'queue'. queue is a job option: use add.options(queue=...).enqueue(...).",
     lambda: jobs.add.enqueue(1, 2, queue="marks")),
    ("too many arguments in a bulk enqueue", InvalidJob,
     f"{ADD} the arguments do not fit add(a: 'int', b: 'int'): too many positional arguments.",
     lambda: jobs.add.enqueue_many([(1, 2), (1, 2, 3)])),
    ("by name, with a missing argument", InvalidJob, f"{ADD} the arguments do not fit add",
     lambda: pgqueue.enqueue("tests.testapp.jobs.add", 1)),
]


@pytest.mark.parametrize(("error", "message", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_and_nothing_written(refused: Refused, error: type[BaseException], message: str,
                                     action: Callable[[], Any]) -> None:
    refused(error, message, action)


def test_refusals_are_invalid_job_and_keep_their_old_bases(refused: Refused) -> None:
    error = refused(NotSerializable, POSITIONAL, lambda: jobs.add.enqueue("\ud800", 1))
    assert isinstance(error, InvalidJob) and isinstance(error, TypeError) and isinstance(error, ValueError)


@pytest.mark.django_db
def test_odd_but_valid_input_is_stored_as_given() -> None:
    deep = nested(100)
    zone = dt.timezone(dt.timedelta(hours=20))  # PostgreSQL takes offsets up to 15:59: sent as UTC
    h1 = jobs.add.options(run_at=dt.datetime(2030, 1, 1, 12, tzinfo=zone)).enqueue(deep, {1: "one"})
    h2 = collect.enqueue(**{"not an identifier": 1, "é": "\u2028"})
    h3 = jobs.add.options(delay=dt.timedelta(days=365 * 100)).enqueue("\\u0000", [])
    rows = {row.id: row for row in Job.objects.all()}
    assert rows[h1.id].args == [deep, {"1": "one"}]
    assert rows[h1.id].run_at == dt.datetime(2029, 12, 31, 16, tzinfo=dt.UTC)
    assert rows[h2.id].kwargs == {"not an identifier": 1, "é": "\u2028"}
    assert rows[h3.id].args == ["\\u0000", []] and rows[h3.id].state == "scheduled"
