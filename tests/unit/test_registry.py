"""@job registration, options validation and the retry policy (no database)."""

import re
from pathlib import Path

import pytest

from pgqueue import job
from pgqueue.enqueuing.registry import get
from pgqueue.exceptions import InvalidJob, NonRetryable, UnknownJob
from tests.testapp import jobs


def test_registered_by_dotted_path_and_callable_inline() -> None:
    assert get("tests.testapp.jobs.add") is jobs.add
    assert jobs.add(2, 3) == 5
    assert jobs.async_add.is_async and not jobs.add.is_async


def test_unknown_job_is_a_clear_error() -> None:
    with pytest.raises(UnknownJob, match="No job is registered as 'tests.testapp.jobs.nope'"):
        get("tests.testapp.jobs.nope")
    with pytest.raises(UnknownJob, match="No job is registered as 'no_such_module.fn'"):
        get("no_such_module.fn")
    with pytest.raises(UnknownJob, match="No job is registered as 'tests.testapp.jobs.add.more'"):
        get("tests.testapp.jobs.add.more")


def test_a_job_module_that_fails_to_import_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pgqueue_broken_jobs.py").write_text("import pgqueue_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = ("Job 'pgqueue_broken_jobs.send': importing 'pgqueue_broken_jobs' failed: "
               "ModuleNotFoundError(\"No module named 'pgqueue_no_such_dependency'\")")
    with pytest.raises(UnknownJob, match=re.escape(message)):
        get("pgqueue_broken_jobs.send")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"priority": 101}, "priority must be an integer from -100 to 100"),
        ({"max_attempts": 0}, "max_attempts must be an integer from 1"),
        ({"timeout": -1}, "timeout must be a number of seconds greater than 0"),
        ({"retry_backoff": -2}, "retry_backoff must be a number of seconds >= 0"),
        ({"non_retryable": [int]}, "non_retryable must list exception classes"),
    ],
)
def test_bad_job_options(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        job(**kwargs)(not_a_job)


def not_a_job() -> None: ...


def test_local_functions_cannot_be_jobs() -> None:
    def inner() -> None: ...

    with pytest.raises(InvalidJob, match="importable by its dotted path"):
        job(inner)


def test_unknown_call_option() -> None:
    with pytest.raises(InvalidJob, match="Unknown job option\\(s\\) colour"):
        jobs.add.options(colour="red")


def test_retry_delay_grows_exponentially_with_cap_and_jitter() -> None:
    delays = [jobs.add.retry_delay(n, base=1.0, cap=10.0, jitter=0.0) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittered = [jobs.add.retry_delay(3, base=1.0, cap=100.0, jitter=0.5) for _ in range(50)]
    assert all(4.0 <= d <= 6.0 for d in jittered) and len(set(jittered)) > 1


def test_non_retryable_classes() -> None:
    assert not jobs.fatal.is_retryable(jobs.Fatal())
    assert not jobs.add.is_retryable(NonRetryable())
    assert jobs.fatal.is_retryable(ValueError())
