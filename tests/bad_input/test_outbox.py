"""Bad outbox input: refused with InvalidJob (or its NotSerializable / PayloadTooLarge subclasses) and a
precise message, and no event written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from pgqueue.exceptions import InvalidJob, NotSerializable, PayloadTooLarge
from pgqueue.models import OutboxEvent
from tests.bad_input.conftest import Refused


def handler(event: Any) -> None: ...


CASES: list[tuple[str, type[BaseException], str, Callable[[], Any]]] = [
    ("empty topic", InvalidJob, "A topic must be a non-empty string, got ''.", lambda: pgqueue.publish("", 1)),
    ("topic not text", InvalidJob, "A topic must be a non-empty string, got 5.", lambda: pgqueue.publish(5, 1)),
    ("topic with a space", InvalidJob, "A topic is words of letters, digits, _ and -, separated by dots: "
     "'order paid' is not.", lambda: pgqueue.publish("order paid", 1)),
    ("topic with an empty word", InvalidJob, "A topic is words of letters, digits, _ and -, separated by dots: "
     "'order..paid' is not.", lambda: pgqueue.publish("order..paid", 1)),
    ("topic with a wildcard", InvalidJob, "A topic is words of letters, digits, _ and -, separated by dots: "
     "'order.*' is not.", lambda: pgqueue.publish("order.*", 1)),
    ("topic ending in a newline", InvalidJob, "A topic is words of letters, digits, _ and -, separated by dots: "
     "'order.paid\\n' is not.", lambda: pgqueue.publish("order.paid\n", 1)),
    ("topic too long", InvalidJob, "A topic is at most 255 characters, got 256.", lambda: pgqueue.publish("a" * 256, 1)),
    ("payload not JSON", NotSerializable, "Event order.paid: its payload cannot be stored as JSON",
     lambda: pgqueue.publish("order.paid", object())),
    ("payload NaN", NotSerializable, "Event order.paid: its payload cannot be stored as JSON",
     lambda: pgqueue.publish("order.paid", float("nan"))),
    ("payload too large", PayloadTooLarge, "Event order.paid: its payload is 300002 bytes as JSON, over "
     "PGQUEUE['MAX_PAYLOAD_BYTES'] = 262144.", lambda: pgqueue.publish("order.paid", "x" * 300_000)),
    ("key empty", InvalidJob, "An event key must be a non-empty string or None, got ''.",
     lambda: pgqueue.publish("order.paid", 1, key="")),
    ("key not text", InvalidJob, "An event key must be a non-empty string or None, got 7.",
     lambda: pgqueue.publish("order.paid", 1, key=7)),  # type: ignore[arg-type]
    ("key with NUL", InvalidJob, "An event key contains the control character U+0000.",
     lambda: pgqueue.publish("order.paid", 1, key="a\x00")),
    ("publish_many a dict", InvalidJob, "pgqueue.publish_many() takes a list of (topic, payload[, key]) tuples",
     lambda: pgqueue.publish_many({"order.paid": 1})),  # type: ignore[arg-type]
    ("publish_many a bad item", InvalidJob, "pgqueue.publish_many() item 1 must be a (topic, payload) or (topic, "
     "payload, key) tuple, got ['a', 1].", lambda: pgqueue.publish_many([("order.paid", 1), ["a", 1]])),  # type: ignore[list-item]
    ("a bad item after good ones", InvalidJob, "A topic must be a non-empty string",
     lambda: pgqueue.publish_many([("order.paid", 1), ("", 2)])),
    ("subscriber without a pattern", InvalidJob, "@subscriber needs at least one topic pattern",
     lambda: pgqueue.subscriber()(handler)),
    ("subscriber pattern with ** inside", InvalidJob, "A subscriber pattern is words of letters, digits, _ and -, "
     "or * for one word (** as the last word: one or more), separated by dots: '**.paid' is not.",
     lambda: pgqueue.subscriber("**.paid")(handler)),
    ("subscriber with a concurrency key", InvalidJob, "@subscriber takes no concurrency_key: a subscriber is called "
     "with the Event only (use ordered=True for per-key order).",
     lambda: pgqueue.subscriber("order.paid", concurrency_key="x")(handler)),
    ("subscriber ordered not a bool", InvalidJob, "@subscriber ordered must be True or False, got 'yes'.",
     lambda: pgqueue.subscriber("order.paid", ordered="yes")(handler)),
]


@pytest.mark.parametrize(("error", "message", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_and_no_event_written(refused: Refused, error: type[BaseException], message: str,
                                      action: Callable[[], Any]) -> None:
    refused(error, message, action)
    assert not OutboxEvent.objects.exists()
