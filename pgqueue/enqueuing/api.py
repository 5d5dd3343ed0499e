"""pgqueue.enqueue() and pgqueue.enqueue_many(): enqueue registered jobs by name, or many calls at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pgqueue.enqueuing import registry
from pgqueue.enqueuing.handle import JobHandle
from pgqueue.enqueuing.insert import enqueue_calls
from pgqueue.enqueuing.options import JobCall
from pgqueue.exceptions import InvalidJob
from pgqueue.text import a_type


def enqueue(task: str, /, *args: Any, **kwargs: Any) -> JobHandle:
    """Enqueue a registered job by its name: enqueue("myapp.jobs.send", 42)."""
    return enqueue_calls([JobCall(job=registry.get(task), args=args, kwargs=kwargs)])[0]


def enqueue_many(calls: Iterable[JobCall]) -> list[JobHandle]:
    """Enqueue many calls (fn.call(...) or fn.options(...).call(...)) in one INSERT."""
    items = items_of(calls, "pgqueue.enqueue_many()")
    for index, item in enumerate(items):
        if not isinstance(item, JobCall):
            raise InvalidJob(
                f"pgqueue.enqueue_many() item {index} is {a_type(item)}, not a call; build calls with "
                "fn.call(...) or fn.options(...).call(...)."
            )
    return enqueue_calls(items)


def items_of(calls: Any, where: str) -> list[Any]:
    """The items of an enqueue_many() argument, refusing what is surely a mistake (one call, a string)."""
    if isinstance(calls, str | bytes | dict | JobCall) or not isinstance(calls, Iterable):
        raise InvalidJob(f"{where} takes a list (or another iterable) of calls, got {a_type(calls)}.")
    return list(calls)
