"""Bad @job declarations: refused at import time with InvalidJob naming the job, nothing registered."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import pytest

from pgqueue import job
from pgqueue.enqueuing import registry
from pgqueue.exceptions import InvalidJob
from tests.bad_input.conftest import Refused
from tests.testapp import jobs

TARGET = "@job tests.bad_input.test_job_decorator.target:"


def target(a: int, b: int = 0) -> int:
    return a + b


def no_arguments() -> None: ...


def long_named() -> None: ...


long_named.__qualname__ = "n" * 250


def from_main() -> None: ...


from_main.__module__ = "__main__"


def declare(**options: Any) -> Callable[[], Any]:
    return lambda: job(**options)(target)


CASES: list[tuple[str, str, Callable[[], Any]]] = [
    ("timeout nan", f"{TARGET} timeout must be a finite number of seconds, got nan.", declare(timeout=math.nan)),
    ("timeout inf", f"{TARGET} timeout must be a finite number of seconds, got inf.", declare(timeout=math.inf)),
    ("timeout beyond a year", f"{TARGET} timeout must be at most 31536000 seconds (365 days), got 40000000.0.",
     declare(timeout=4e7)),
    ("timeout 0", f"{TARGET} timeout must be a number of seconds greater than 0, got 0.", declare(timeout=0)),
    ("timeout True", f"{TARGET} timeout must be a number of seconds, got True.", declare(timeout=True)),
    ("timeout '30'", f"{TARGET} timeout must be a number of seconds, got '30'.", declare(timeout="30")),
    ("retry_backoff nan", f"{TARGET} retry_backoff must be a finite number of seconds, got nan.",
     declare(retry_backoff=math.nan)),
    ("retry_backoff inf", f"{TARGET} retry_backoff must be a finite number of seconds, got inf.",
     declare(retry_backoff=math.inf)),
    ("retry_backoff_max inf", f"{TARGET} retry_backoff_max must be a finite number of seconds, got inf.",
     declare(retry_backoff_max=math.inf)),
    ("retry_backoff_max beyond a year",
     f"{TARGET} retry_backoff_max must be at most 31536000 seconds (365 days), got 1e+300.",
     declare(retry_backoff_max=1e300)),
    ("retry_jitter nan", f"{TARGET} retry_jitter must be a number from 0 to 1, got nan.",
     declare(retry_jitter=math.nan)),
    ("retry_jitter inf", f"{TARGET} retry_jitter must be a number from 0 to 1, got inf.",
     declare(retry_jitter=math.inf)),
    ("retry_jitter negative", f"{TARGET} retry_jitter must be a number from 0 to 1, got -0.1.",
     declare(retry_jitter=-0.1)),
    ("priority 1.5", f"{TARGET} priority must be an integer from -100 to 100, got 1.5.", declare(priority=1.5)),
    ("priority True", f"{TARGET} priority must be an integer from -100 to 100, got True.", declare(priority=True)),
    ("max_attempts 2.0", f"{TARGET} max_attempts must be an integer from 1 to 10000, got 2.0.",
     declare(max_attempts=2.0)),
    ("max_attempts huge", f"{TARGET} max_attempts must be an integer from 1 to 10000, got 4294967296.",
     declare(max_attempts=2**32)),
    ("queue ''", f"{TARGET} Invalid queue name '': it is empty.", declare(queue="")),
    ("queue ' a'", f"{TARGET} Invalid queue name ' a': it has spaces around it.", declare(queue=" a")),
    ("queue 'a,b'", f"{TARGET} Invalid queue name 'a,b': it contains a comma, which separates queue names in "
     "--queues and PGQUEUE_QUEUES.", declare(queue="a,b")),
    ("queue with NUL", f"{TARGET} Invalid queue name 'a\\x00': it contains the control character U+0000.",
     declare(queue="a\x00")),
    ("queue 5", f"{TARGET} Invalid queue name 5: a queue name must be a string, got int.", declare(queue=5)),
    ("pass_context 'yes'", f"{TARGET} pass_context must be True or False, got 'yes'.",
     declare(pass_context="yes")),
    ("non_retryable a string", f"{TARGET} non_retryable must list exception classes, got 'ValueError'.",
     declare(non_retryable="ValueError")),
    ("non_retryable [int]", f"{TARGET} non_retryable must list exception classes, got <class 'int'>.",
     declare(non_retryable=[int])),
    ("name 256 characters long",
     f"Job name {'x' * 60!r}... is 256 characters long, over 255 (the task column); pass a shorter name=... "
     "to @job.", declare(name="x" * 256)),
    ("name with NUL", "Job name 'jobs.a\\x00b' contains the control character U+0000.",
     declare(name="jobs.a\x00b")),
    ("name with a lone surrogate",
     "Job name 'jobs.\\udc80' contains a lone surrogate (U+DC80), which is not valid Unicode.",
     declare(name="jobs.\udc80")),
    ("name ''", "A job name must be a non-empty string, got ''.", declare(name="")),
    ("name 42", "A job name must be a non-empty string, got 42.", declare(name=42)),
    ("a dotted path over 255 characters",
     f"Job name {'tests.bad_input.test_job_decorator.' + 'n' * 25!r}... is 285 characters long, over 255",
     lambda: job(long_named)),
    ("a lambda", "@job cannot register tests.bad_input.test_job_decorator.<lambda>: a job must be importable by its "
     "dotted path (not a lambda or a function defined inside another function)",
     functools.partial(job, lambda: None)),
    ("a job in __main__", "@job cannot register 'from_main' from __main__: a worker imports jobs by module, and "
     "its __main__ is another program. Define the job in an importable module.", lambda: job(from_main)),
    ("a partial without a name", "@job cannot name functools.partial(", lambda: job(functools.partial(target, 1))),
    ("options given positionally", "@job needs a function, got 'emails'; its options are keyword arguments: "
     "@job(queue=...).", lambda: job("emails")),
    ("@job twice", "@job is applied twice to tests.testapp.jobs.add.", lambda: job(queue="x")(jobs.add)),
    ("pass_context without a parameter for it",
     "@job tests.bad_input.test_job_decorator.no_arguments: pass_context=True passes the JobContext as the first "
     "positional argument, but no_arguments() takes none.", lambda: job(pass_context=True)(no_arguments)),
    ("another function under a taken name",
     "Two different functions are registered as job 'tests.testapp.jobs.add': ",
     lambda: job(name="tests.testapp.jobs.add")(target)),
]


@pytest.mark.parametrize(("message", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_at_declaration(refused: Refused, message: str, action: Callable[[], Any]) -> None:
    before = registry.registered()
    refused(InvalidJob, message, action)
    assert registry.registered() == before


def test_one_exception_class_is_accepted_as_non_retryable() -> None:
    fn = job(name="tests.bad_input.single_class", non_retryable=KeyError)(target)
    assert not fn.is_retryable(KeyError()) and fn.is_retryable(ValueError())
