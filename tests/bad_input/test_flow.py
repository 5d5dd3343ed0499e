"""Bad flow-control input (uniqueness, idempotency, semaphores, ordering, rate limits): refused with InvalidJob and a
precise message when @job is applied or at enqueue, and nothing written (no job, no key, no semaphore)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections, transaction

from pgqueue import Unique, job
from pgqueue.exceptions import InvalidJob
from pgqueue.models import Job, Lock, RateLimit, Semaphore, SemaphoreSlot
from tests.bad_input.conftest import Refused
from tests.testapp import jobs

TARGET = "@job tests.bad_input.test_flow.target:"
LIMITED = "Job tests.testapp.jobs.limited:"


def target(account_id: int, day: str = "") -> None: ...


def declare(**options: Any) -> Callable[[], Any]:
    return lambda: job(**options)(target)


def failing_key(account_id: int, day: str = "") -> str:
    raise KeyError("no such account")


DECLARATIONS: list[tuple[str, str, Callable[[], Any]]] = [
    ("unique not a policy", f"{TARGET} unique must be True, False or a pgqueue.Unique(...), got 'yes'.",
     declare(unique="yes")),
    ("template names a non-parameter",
     f"{TARGET} unique key 'acct:{{account}}' names {{account}}, which is not a parameter of target(account_id: 'int', "
     "day: 'str' = '').", declare(unique=Unique(key="acct:{account}"))),
    ("positional template field", f"{TARGET} concurrency_key 'acct:{{0}}': name the parameter in {{...}}, e.g. "
     "{account_id}.", declare(concurrency_key="acct:{0}", concurrency_limit=2)),
    ("Unique args not parameters", f"{TARGET} Unique(args=...) names user, not parameters of target(account_id: 'int', "
     "day: 'str' = '').", declare(unique=Unique(args=("user",)))),
    ("concurrency_key without a limit", f"{TARGET} concurrency_key needs concurrency_limit=N (jobs of a key that may "
     "run at once).", declare(concurrency_key="acct:{account_id}")),
    ("concurrency_limit 0", f"{TARGET} concurrency_limit must be an integer from 1 to 10000, got 0.",
     declare(concurrency_limit=0)),
    ("concurrency_limit True", f"{TARGET} concurrency_limit must be an integer from 1 to 10000, got True.",
     declare(concurrency_limit=True)),
    ("concurrency_limit 1e9", f"{TARGET} concurrency_limit must be an integer from 1 to 10000, got 1000000000.",
     declare(concurrency_limit=10**9)),
    ("two semaphores", f"{TARGET} concurrency_limit and ordering_key each make a semaphore; a job takes one.",
     declare(concurrency_limit=2, ordering_key="acct:{account_id}")),
    ("unique running and a limit",
     f"{TARGET} concurrency_limit and unique until='running' each make a semaphore; a job takes one.",
     declare(concurrency_limit=2, unique=Unique(until="running"))),
    ("ordering key with a NUL", f"{TARGET} ordering_key 'a\\x00b' contains the control character U+0000.",
     declare(ordering_key="a\x00b")),
    ("concurrency key too long", f"{TARGET} concurrency_key is 300 characters long, over 255:",
     declare(concurrency_key="k" * 300, concurrency_limit=1)),
    ("concurrency key a number", f"{TARGET} concurrency_key must be a string, a template like "
     "'account:{account_id}' or a function, got 42.", declare(concurrency_key=42, concurrency_limit=1)),
    ("broken template", f"{TARGET} ordering_key 'acct:{{account_id' is not a valid template: expected '}}' before "
     "end of string.", declare(ordering_key="acct:{account_id")),
    ("ordering_retry unknown", f"{TARGET} ordering_retry must be one of 'block', 'skip', got 'wait'.",
     declare(ordering_key="a", ordering_retry="wait")),
    ("rate_key without a limit", f"{TARGET} rate_key needs rate_limit=N (starts allowed per rate_window seconds).",
     declare(rate_key="acct:{account_id}")),
    ("rate_window without a limit", f"{TARGET} rate_window needs rate_limit=N (starts allowed per rate_window "
     "seconds).", declare(rate_window=60)),
    ("rate_limit 0", f"{TARGET} rate_limit must be an integer from 1 to 1000000, got 0.", declare(rate_limit=0)),
    ("rate_limit a float", f"{TARGET} rate_limit must be an integer from 1 to 1000000, got 2.5.",
     declare(rate_limit=2.5)),
    ("rate_limit True", f"{TARGET} rate_limit must be an integer from 1 to 1000000, got True.",
     declare(rate_limit=True)),
    ("rate_window nan", f"{TARGET} rate_window must be a number of seconds from 0.001 to 31536000 (a year), got nan.",
     declare(rate_limit=5, rate_window=math.nan)),
    ("rate_window inf", f"{TARGET} rate_window must be a number of seconds from 0.001 to 31536000 (a year), got inf.",
     declare(rate_limit=5, rate_window=math.inf)),
    ("rate_window 0", f"{TARGET} rate_window must be a number of seconds from 0.001 to 31536000 (a year), got 0.",
     declare(rate_limit=5, rate_window=0)),
    ("rate_window text", f"{TARGET} rate_window must be a number of seconds from 0.001 to 31536000 (a year), got '1s'.",
     declare(rate_limit=5, rate_window="1s")),
    ("rate key template names a non-parameter", f"{TARGET} rate_key 'acct:{{account}}' names {{account}}, which is "
     "not a parameter of target(account_id: 'int', day: 'str' = '').",
     declare(rate_limit=5, rate_key="acct:{account}")),
    ("rate key a number", f"{TARGET} rate_key must be a string, a template like 'account:{{account_id}}' or a "
     "function, got 7.", declare(rate_limit=5, rate_key=7)),
]

POLICIES: list[tuple[str, str, Callable[[], Any]]] = [
    ("until unknown", "Unique: until must be one of 'started', 'finished', 'running', got 'done'.",
     lambda: Unique(until="done")),
    ("on_conflict unknown", "Unique: on_conflict must be one of 'reject', 'discard', 'replace', got 'skip'.",
     lambda: Unique(on_conflict="skip")),
    ("window nan", "Unique: window must be a number of seconds from 0 (excluded) to 31536000, got nan.",
     lambda: Unique(window=math.nan)),
    ("window inf", "Unique: window must be a number of seconds from 0 (excluded) to 31536000, got inf.",
     lambda: Unique(window=math.inf)),
    ("window 0", "Unique: window must be a number of seconds from 0 (excluded) to 31536000, got 0.",
     lambda: Unique(window=0)),
    ("key and args", "Unique: give key or args, not both.", lambda: Unique(key="k", args=("a",))),
    ("args a string", "Unique: args must be a tuple of parameter names, got 'user_id'.",
     lambda: Unique(args="user_id")),  # type: ignore[arg-type]
    ("running with a window", "Unique: until='running' takes no window or on_conflict: enqueueing never conflicts, "
     "copies wait and run one at a time.", lambda: Unique(until="running", window=60)),
    ("empty key", "Unique: key must be a non-empty string, got ''.", lambda: Unique(key="")),
]

ENQUEUES: list[tuple[str, str, Callable[[], Any]]] = [
    ("idempotency key empty", "Job tests.testapp.jobs.add: idempotency_key must be a non-empty string, got ''.",
     lambda: jobs.add.options(idempotency_key="").enqueue(1, 2)),
    ("idempotency key too long", "Job tests.testapp.jobs.add: idempotency_key is 256 characters long, over 255:",
     lambda: jobs.add.options(idempotency_key="i" * 256).enqueue(1, 2)),
    ("idempotency key not text", "Job tests.testapp.jobs.add: idempotency_key must be a non-empty string, got 42.",
     lambda: jobs.add.options(idempotency_key=42).enqueue(1, 2)),
    ("unique key with a lone surrogate", "Job tests.testapp.jobs.add: unique_key 'a\\ud800' contains a lone "
     "surrogate (U+D800), which is not valid Unicode.", lambda: jobs.add.options(unique_key="a\ud800").enqueue(1, 2)),
    ("template value too long", f"{LIMITED} concurrency key (from 'sem:{{group}}') is 304 characters long, over 255:",
     lambda: jobs.limited.enqueue("g" * 300, "x")),
    ("template value with a control character",
     f"{LIMITED} concurrency key (from 'sem:{{group}}') 'sem:a\\nb' contains the control character U+000A.",
     lambda: jobs.limited.enqueue("a\nb", "x")),
    ("key function fails", "Job tests.testapp.jobs.add: unique key function failing_key failed: KeyError: "
     "'no such account'", lambda: jobs.add.options(unique=Unique(key=failing_key)).enqueue(1, 2)),
    ("key function returns None", "Job tests.testapp.jobs.add: unique key (from <lambda>.<locals>.<lambda>) must "
     "be a non-empty string, got None.", lambda: jobs.add.options(unique=Unique(key=lambda a, b: None)).enqueue(1, 2)),
    ("unique off with a key", "Job tests.testapp.jobs.unique_note: unique=False turns uniqueness off; it takes no "
     "unique_key.", lambda: jobs.unique_note.options(unique=False, unique_key="k").enqueue("x")),
    ("per-call limit 0", f"{LIMITED} concurrency_limit must be an integer from 1 to 10000, got 0.",
     lambda: jobs.limited.options(concurrency_limit=0).enqueue("g", "x")),
    ("per-call rate key without a limit", "Job tests.testapp.jobs.add: rate_key needs rate_limit=N (starts allowed "
     "per rate_window seconds).", lambda: jobs.add.options(rate_key="k").enqueue(1, 2)),
    ("per-call rate_limit negative", "Job tests.testapp.jobs.partner_call: rate_limit must be an integer from 1 to "
     "1000000, got -1.", lambda: jobs.partner_call.options(rate_limit=-1).enqueue("a", "x")),
    ("per-call rate_window negative", "Job tests.testapp.jobs.partner_call: rate_window must be a number of seconds "
     "from 0.001 to 31536000 (a year), got -5.", lambda: jobs.partner_call.options(rate_window=-5).enqueue("a", "x")),
    ("rate key value too long", "Job tests.testapp.jobs.partner_call: rate key (from 'partner:{account}') is 308 "
     "characters long, over 255:", lambda: jobs.partner_call.enqueue("a" * 300, "x")),
    ("rate key from a failing function", "Job tests.testapp.jobs.add: rate key function failing_key failed: "
     "KeyError: 'no such account'", lambda: jobs.add.options(rate_limit=2, rate_key=failing_key).enqueue(1, 2)),
    ("one bad call of a batch", "Job tests.testapp.jobs.partner_call: rate key (from 'partner:{account}') "
     "'partner:a\\n' contains the control character U+000A.",
     lambda: jobs.partner_call.enqueue_many([("a", "x"), ("a\n", "y")])),
    ("per-call two semaphores", "Job tests.testapp.jobs.add: concurrency_limit and unique until='running' each make "
     "a semaphore; a job takes one.",
     lambda: jobs.add.options(unique=Unique(until="running"), concurrency_limit=3).enqueue(1, 2)),
    # issue #18, class 6: the ordering key silently dropped the concurrency key given beside it
    ("per-call ordering and concurrency keys", "Job tests.testapp.jobs.add: concurrency_limit and ordering_key each "
     "make a semaphore; a job takes one.",
     lambda: jobs.add.options(ordering_key="o:1", concurrency_key="c:1", concurrency_limit=2).enqueue(1, 2)),
    ("per-call ordering key beside a job's limit, with a call's key", "Job tests.testapp.jobs.limited: "
     "concurrency_limit and ordering_key each make a semaphore; a job takes one.",
     lambda: jobs.limited.options(ordering_key="o:1", concurrency_key="c:1").enqueue("g", "x")),
]


def nothing_written() -> None:
    assert not Lock.objects.exists() and not Semaphore.objects.exists() and not SemaphoreSlot.objects.exists()
    assert not RateLimit.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(("message", "action"), [c[1:] for c in DECLARATIONS], ids=[c[0] for c in DECLARATIONS])
def test_refused_at_declaration(refused: Refused, message: str, action: Callable[[], Any]) -> None:
    refused(InvalidJob, message, action)


@pytest.mark.parametrize(("message", "action"), [c[1:] for c in POLICIES], ids=[c[0] for c in POLICIES])
def test_unique_policy_refused(refused: Refused, message: str, action: Callable[[], Any]) -> None:
    refused(InvalidJob, message, action)


@pytest.mark.parametrize(("message", "action"), [c[1:] for c in ENQUEUES], ids=[c[0] for c in ENQUEUES])
def test_refused_at_enqueue_and_nothing_written(refused: Refused, message: str, action: Callable[[], Any]) -> None:
    refused(InvalidJob, message, action)
    nothing_written()


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_a_key_inside_a_transaction_on_another_database_only_is_refused() -> None:
    with transaction.atomic(using="other"), pytest.raises(InvalidJob) as info:
        jobs.unique_note.enqueue("x")
    assert str(info.value).startswith("Uniqueness and idempotency keys are checked in the transaction that "
                                      "enqueues, on database 'default'; this call is inside a transaction on "
                                      "'other' only.")
    nothing_written()
    connections["other"].close()


def test_pgqueues_own_semaphore_keys_are_refused(refused: Refused) -> None:
    refused(InvalidJob, "Job tests.testapp.jobs.limited: concurrency key 'pgqueue:queue:emails' starts with "
            "'pgqueue:', which pgqueue keeps for its own semaphores and token buckets",
            lambda: jobs.limited.options(concurrency_key="pgqueue:queue:emails").enqueue("g", "x"))
    nothing_written()


def test_pgqueues_own_rate_keys_are_refused(refused: Refused) -> None:
    """The enqueue guardrail's bucket of a queue is 'pgqueue:enqueue:<queue>': a job's rate key never shares it."""
    refused(InvalidJob, "Job tests.testapp.jobs.noop: rate key 'pgqueue:enqueue:default' starts with 'pgqueue:', "
            "which pgqueue keeps for its own semaphores and token buckets",
            lambda: jobs.noop.options(rate_limit=5, rate_key="pgqueue:enqueue:default").enqueue())
    nothing_written()
