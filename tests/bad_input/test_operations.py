"""Bad ids and queue names given to the operator verbs: InvalidJobId / InvalidJob, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pgqueue import operations
from pgqueue.exceptions import InvalidJob, InvalidJobId
from tests.bad_input.conftest import Refused

RANGE = "is out of range: job ids are integers from 1 to 9223372036854775807."

CASES: list[tuple[str, type[BaseException], str, Callable[[], Any]]] = [
    ("cancel(2**63)", InvalidJobId, f"job id 9223372036854775808 {RANGE}", lambda: operations.cancel(2**63)),
    ("cancel(-1)", InvalidJobId, f"job id -1 {RANGE}", lambda: operations.cancel(-1)),
    ("cancel(0)", InvalidJobId, f"job id 0 {RANGE}", lambda: operations.cancel(0)),
    ("replay([1, 2**64])", InvalidJobId, f"job id 18446744073709551616 {RANGE}",
     lambda: operations.replay([1, 2**64])),
    ("retry(-(2**63))", InvalidJobId, f"job id -9223372036854775808 {RANGE}", lambda: operations.retry(-(2**63))),
    ("delete_finished([0])", InvalidJobId, f"job id 0 {RANGE}", lambda: operations.delete_finished([0])),
    ("cancel('12')", InvalidJobId, "job ids must be an integer or an iterable of integers, got str '12'.",
     lambda: operations.cancel("12")),
    ("cancel(None)", InvalidJobId, "job ids must be an integer or an iterable of integers, got NoneType None.",
     lambda: operations.cancel(None)),
    ("replay(True)", InvalidJobId, "job ids must be an integer or an iterable of integers, got bool True.",
     lambda: operations.replay(True)),
    ("retry([1, '2'])", InvalidJobId, "job ids must be integers, got str '2'.", lambda: operations.retry([1, "2"])),
    ("cancel([1.0])", InvalidJobId, "job ids must be integers, got float 1.0.", lambda: operations.cancel([1.0])),
    ("pause('a\\x00b')", InvalidJob, "Invalid queue name 'a\\x00b': it contains the control character U+0000.",
     lambda: operations.pause("a\x00b")),
    ("resume(['ok', ''])", InvalidJob, "Invalid queue name '': it is empty.", lambda: operations.resume(["ok", ""])),
    ("drain_and_pause(None)", InvalidJob, "queues must be a queue name or an iterable of names, got NoneType None.",
     lambda: operations.drain_and_pause(None)),
]


@pytest.mark.parametrize(("error", "message", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_and_nothing_written(refused: Refused, error: type[BaseException], message: str,
                                     action: Callable[[], Any]) -> None:
    refused(error, message, action)


def test_a_bad_id_is_still_a_type_error_for_older_callers(refused: Refused) -> None:
    error = refused(InvalidJobId, "job ids must be integers", lambda: operations.cancel(["1"]))
    assert isinstance(error, TypeError) and isinstance(error, InvalidJob)
