"""Fixtures for the bad-input tests: each refusal is checked for its exact type and message, and for
having written nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pgqueue.models import Job, QueueState

Refused = Callable[[type[BaseException], str, Callable[[], Any]], BaseException]


@pytest.fixture
def refused(db: None) -> Refused:
    """refused(error, message, action): action() raises exactly `error` whose message starts with
    `message` (compared literally), and no job or queue row exists afterwards."""

    def check(error: type[BaseException], message: str, action: Callable[[], Any]) -> BaseException:
        with pytest.raises(error, match=f"^{re.escape(message)}") as info:
            action()
        assert type(info.value) is error, f"{type(info.value).__name__} raised, {error.__name__} expected"
        assert not Job.objects.exists(), "a refused call wrote a job row"
        assert not QueueState.objects.exists(), "a refused call wrote a queue row"
        return info.value

    return check
