"""Numbers every check accepted but the SQL could not compute (issue #18, class 2): a rate window so short
that the bucket's refill overflows float8, at every place a window can be entered; nothing is written."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from pgqueue import job, operations
from pgqueue.exceptions import InvalidJob
from pgqueue.models import RateLimit
from tests.bad_input.conftest import Refused
from tests.testapp import jobs

WINDOW = "must be a number of seconds from 0.001 to 31536000 (a year), got"


def tiny(account: str) -> None: ...


def declared() -> Any:
    return job(rate_limit=5, rate_window=1e-300)(tiny)


CASES: list[tuple[str, str, Callable[[], Any]]] = [
    ("@job", f"@job tests.bad_input.test_numbers.tiny: rate_window {WINDOW} 1e-300.", declared),
    ("per call", f"Job tests.testapp.jobs.partner_call: rate_window {WINDOW} 1e-09.",
     lambda: jobs.partner_call.options(rate_window=1e-9).enqueue("a", "x")),
    ("per call, largest limit", f"Job tests.testapp.jobs.partner_call: rate_window {WINDOW} 0.0005.",
     lambda: jobs.partner_call.options(rate_limit=1_000_000, rate_window=0.0005).enqueue("a", "x")),
    ("a queue's limit", f"Queue 'emails': per {WINDOW} 5e-324.",
     lambda: operations.set_limits("emails", rate=10, per=5e-324)),
    ("a queue's limit, past a year", f"Queue 'emails': per {WINDOW} 31536001.",
     lambda: operations.set_limits("emails", rate=10, per=31_536_001)),
]


@pytest.mark.parametrize(("message", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_window_the_sql_cannot_refill_is_refused(refused: Refused, message: str, action: Callable[[], Any]) -> None:
    refused(InvalidJob, message, action)
    assert not RateLimit.objects.exists()


def test_the_queue_command_refuses_it_too(refused: Refused) -> None:
    def run() -> None:
        call_command("pgqueue_queue", "limit", "emails", "--rate", "10", "--per", "1e-12", stdout=io.StringIO())

    refused(CommandError, f"Queue 'emails': per {WINDOW} 1e-12.", run)
