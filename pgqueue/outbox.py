"""The transactional outbox: pgqueue.publish() writes an event in the caller's transaction; @subscriber
functions receive it; the relay (run by the maintenance leader) turns each committed event into one job
per matching subscriber, once (docs/outbox.md).

Topics are dotted words (order.paid). A subscriber's pattern matches a topic word by word: `*` matches one
word, `**` (as the last word) matches one or more; order.* matches order.paid but not order.paid.late.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections

from pgqueue import db, events, sql
from pgqueue.conf import Settings, get_settings
from pgqueue.enqueuing import rows
from pgqueue.enqueuing.decorator import JobFunction, job
from pgqueue.enqueuing.flow import NO_FLOW, Flow
from pgqueue.exceptions import InvalidJob, NotSerializable, PayloadTooLarge
from pgqueue.payload import Unstorable, dumps
from pgqueue.sql.rows import ClaimedEvent, Delivered
from pgqueue.text import short_repr, text_problem

TOPIC_MAX = 255  # the topic and key columns' length
KEY_MAX = 255
_WORD = re.compile(r"[A-Za-z0-9_\-]+")
RELAY_BATCH = 5_000  # events claimed per relay transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What a subscriber receives: an event as it was published."""

    id: int
    topic: str
    key: str | None
    payload: Any
    published_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Subscriber:
    name: str  # its job's name
    patterns: tuple[str, ...]
    ordered: bool
    job: JobFunction
    _regex: re.Pattern[str]

    def matches(self, topic: str) -> bool:
        return self._regex.fullmatch(topic) is not None


_subscribers: dict[str, Subscriber] = {}


def subscribers() -> list[Subscriber]:
    """The subscribers registered in this process (the worker command imports every app's jobs module)."""
    return list(_subscribers.values())


def check_topic(topic: Any, *, pattern: bool = False) -> str:
    """A topic (or, with pattern=True, a subscriber's pattern) if it is usable, else InvalidJob."""
    what = "A subscriber pattern" if pattern else "A topic"
    if not isinstance(topic, str) or not topic:
        raise InvalidJob(f"{what} must be a non-empty string, got {short_repr(topic)}.")
    if len(topic) > TOPIC_MAX:
        raise InvalidJob(f"{what} is at most {TOPIC_MAX} characters, got {len(topic)}.")
    words = topic.split(".")
    for index, word in enumerate(words):
        wild = pattern and (word == "*" or (word == "**" and index == len(words) - 1))
        if not wild and not _WORD.fullmatch(word):
            rule = ("letters, digits, _ and -, or * for one word (** as the last word: one or more)"
                    if pattern else "letters, digits, _ and -")
            raise InvalidJob(f"{what} is words of {rule}, separated by dots: {short_repr(topic)} is not.")
    return topic


def _regex(patterns: Sequence[str]) -> re.Pattern[str]:
    parts = []
    for pattern in patterns:
        words = []
        for word in pattern.split("."):
            words.append({"*": r"[^.]+", "**": r"[^.]+(?:\.[^.]+)*"}.get(word, re.escape(word)))
        parts.append(r"\.".join(words))
    return re.compile(f"(?:{'|'.join(parts)})")


def subscriber(*patterns: str, ordered: bool = False, name: str | None = None, **job_options: Any) -> Callable[..., Any]:
    """Register a function as a subscriber of the topics matching `patterns`: for each committed event,
    the relay enqueues one job that calls it with the Event. ordered=True: events with the same key run
    one at a time, in publish order. Other keyword arguments are @job options (queue, max_attempts, ...)."""
    if not patterns:
        raise InvalidJob("@subscriber needs at least one topic pattern: @subscriber('order.paid').")
    checked = tuple(check_topic(p, pattern=True) for p in patterns)
    if not isinstance(ordered, bool):
        raise InvalidJob(f"@subscriber ordered must be True or False, got {short_repr(ordered)}.")
    for option in ("pass_context", "unique", "concurrency_key", "concurrency_limit", "ordering_key", "rate_key",
                   "rate_limit", "rate_window"):
        if option in job_options:
            raise InvalidJob(f"@subscriber takes no {option}: a subscriber is called with the Event only "
                             "(use ordered=True for per-key order).")

    def register(fn: Callable[..., Any]) -> Any:
        path = name or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"

        def event(event_id: int, topic: str, key: str | None, payload: Any, published_at: str) -> Event:
            return Event(id=event_id, topic=topic, key=key, payload=payload,
                         published_at=dt.datetime.fromisoformat(published_at))

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def deliver(event_id: int, topic: str, key: str | None, payload: Any, published_at: str) -> Any:
                return await fn(event(event_id, topic, key, payload, published_at))
        else:
            @functools.wraps(fn)
            def deliver(event_id: int, topic: str, key: str | None, payload: Any, published_at: str) -> Any:
                return fn(event(event_id, topic, key, payload, published_at))

        wrapped = job(name=path, **job_options)(deliver)
        _subscribers[wrapped.name] = Subscriber(name=wrapped.name, patterns=checked, ordered=ordered, job=wrapped,
                                                _regex=_regex(checked))
        return wrapped

    return register


def publish(topic: str, payload: Any = None, *, key: str | None = None) -> int:
    """Publish an event in the caller's transaction on pgqueue's database: its subscribers' jobs are
    enqueued once it has committed, never if it rolls back. Returns the event's id."""
    return publish_many([(topic, payload, key)])[0]


def publish_many(items: Iterable[tuple[str, Any] | tuple[str, Any, str | None]]) -> list[int]:
    """Publish many events, (topic, payload) or (topic, payload, key) each, in one INSERT."""
    if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
        raise InvalidJob(f"pgqueue.publish_many() takes a list of (topic, payload[, key]) tuples, got {short_repr(items)}.")
    settings = get_settings()
    topics: list[str] = []
    keys: list[str | None] = []
    payloads: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise InvalidJob(f"pgqueue.publish_many() item {index} must be a (topic, payload) or (topic, payload, "
                             f"key) tuple, got {short_repr(item)}.")
        topic, payload, key = (*item, None) if len(item) == 2 else item
        topics.append(check_topic(topic))
        keys.append(_check_key(key))
        payloads.append(_payload(topic, payload, settings))
    if not topics:
        return []
    alias = settings.DATABASE
    if len(connections.settings) > 1 and not connections[alias].in_atomic_block:
        other = next((c.alias for c in connections.all(initialized_only=True)
                      if c.alias != alias and c.in_atomic_block), None)
        if other is not None:
            raise InvalidJob(
                f"pgqueue.publish() writes its event in the transaction on database {alias!r}; this call is inside a "
                f"transaction on {other!r} only, which the event could not commit or roll back with. Open "
                f"transaction.atomic(using={alias!r}) around the publish too."
            )
    rows = db.run_in_django(sql.outbox_insert_many, topics=topics, keys=keys, payloads=payloads)
    return [row.id for row in rows]


def _check_key(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise InvalidJob(f"An event key must be a non-empty string or None, got {short_repr(key)}.")
    if len(key) > KEY_MAX:
        raise InvalidJob(f"An event key is at most {KEY_MAX} characters, got {len(key)}.")
    problem = text_problem(key)
    if problem is not None:
        raise InvalidJob(f"An event key {problem}.")
    return key


def _payload(topic: str, payload: Any, settings: Settings) -> str:
    try:
        text = dumps(payload)
    except Unstorable as exc:
        raise NotSerializable(f"Event {topic}: its payload cannot be stored as JSON ({exc}). Publish plain "
                              "values (str, int, float, bool, None, list, dict).") from None
    if 4 * len(text) > settings.MAX_PAYLOAD_BYTES and (size := len(text.encode())) > settings.MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"Event {topic}: its payload is {size} bytes as JSON, over "
                              f"PGQUEUE['MAX_PAYLOAD_BYTES'] = {settings.MAX_PAYLOAD_BYTES}.")
    return text


# -- the relay (maintenance leader) --------------------------------------------------------------------


def relay(database: db.Database, settings: Settings, *, limit: int = RELAY_BATCH) -> int:
    """Turn up to `limit` committed events into their subscribers' jobs, in one transaction: claim them
    (locked), record one delivery per (event, matching subscriber) with the id its job gets (a delivery
    recorded before is skipped: its unique constraint), insert those jobs, mark the events relayed.
    Killed midway, it rolls back whole and the next run does it all. Returns the events relayed."""
    subs = subscribers()
    with database.transaction():
        claimed = database.run(sql.outbox_claim, limit=limit)
        if not claimed:
            return 0
        pairs = [(event, sub) for event in claimed for sub in subs if sub.matches(event.topic)]
        delivered = database.run(sql.outbox_deliver_many, event_ids=[e.id for e, _ in pairs],
                                 subscribers=[s.name for _, s in pairs]) if pairs else []
        if delivered:
            by_event = {e.id: e for e in claimed}
            database.run(sql.job_insert_many, **_job_params(delivered, by_event, settings))
        counts: dict[int, int] = {}
        for event, _ in pairs:
            counts[event.id] = counts.get(event.id, 0) + 1
        database.run(sql.outbox_mark_relayed, ids=[e.id for e in claimed], deliveries=[counts.get(e.id, 0) for e in claimed])
    events.emit("outbox_relayed", events=len(claimed), jobs=len(delivered))
    return len(claimed)


def _job_params(delivered: list[Delivered], by_event: dict[int, ClaimedEvent], settings: Settings) -> dict[str, Any]:
    """job_insert_many's parameters for the deliveries' jobs: each subscriber job called with its event (its
    @job options merged with the settings as any call's are), ordered ones holding their key's semaphore."""
    new = []
    for d in delivered:
        event, sub = by_event[d.event_id], _subscribers[d.subscriber]
        options = rows.defaults(sub.job, settings)
        ordered = sub.ordered and event.key is not None
        new.append(rows.NewJob(
            queue=options.queue, task=sub.job.name, args=f"[{event.id},{dumps(event.topic)},{dumps(event.key)},"
            f"{event.payload},{dumps(event.created_at.isoformat())}]", kwargs="{}", priority=options.priority,
            run_at=None, max_attempts=options.max_attempts, timeout=options.timeout,
            flow=Flow(concurrency_key=_ordering_key(sub.name, event.key), concurrency_limit=1,
                      concurrency_hold=True) if ordered else NO_FLOW,
        ))
    return rows.insert_params(new, [d.job_id for d in delivered], settings.NOTIFY_CHANNEL)


def _ordering_key(subscriber_name: str, key: str | None) -> str:
    """The semaphore of one that runs a subscriber's events of one key in order."""
    full = f"outbox:{subscriber_name}:{key}"
    if len(full) <= KEY_MAX:
        return full
    return f"outbox:{hashlib.sha256(full.encode('utf-8', 'surrogatepass')).hexdigest()}"


def pending_lag(alias: str | None = None) -> tuple[int, float | None]:
    """Events not relayed yet, and the age in seconds of the oldest (None if there is none): the relay lag."""
    from django.db.models import Count, Min
    from django.utils import timezone

    from pgqueue.models import OutboxEvent

    row = (OutboxEvent.objects.using(alias or get_settings().DATABASE).filter(relayed_at__isnull=True)
           .aggregate(n=Count("id"), oldest=Min("created_at")))
    oldest = row["oldest"]
    return int(row["n"]), (timezone.now() - oldest).total_seconds() if oldest is not None else None

