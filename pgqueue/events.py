"""Engine events: emitted once by the core; metrics and logging subscribe (the core imports neither)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("pgqueue.events")

Handler = Callable[..., None]
_handlers: dict[str, list[Handler]] = defaultdict(list)

# The events pgqueue emits, with their keyword data.
EVENTS = {
    "job_enqueued": "count, queues",
    "job_leased": "worker, count",
    "job_finished": "worker, job_id, outcome, state, applied, duration",
    "job_rescued": "count",
    "job_staged": "count",
    "worker_started": "worker, kind",
    "worker_stopped": "worker, kind, reason",
    "child_died": "worker, kind, status",
    "db_reconnect": "worker, error",
}


def subscribe(event: str, handler: Handler) -> None:
    if event not in EVENTS:
        raise ValueError(f"Unknown pgqueue event {event!r}; known: {', '.join(sorted(EVENTS))}")
    if handler not in _handlers[event]:
        _handlers[event].append(handler)


def unsubscribe(event: str, handler: Handler) -> None:
    if handler in _handlers.get(event, []):
        _handlers[event].remove(handler)


def has_subscribers(event: str) -> bool:
    return bool(_handlers.get(event))


def emit(event: str, **data: Any) -> None:
    """Call every subscriber; a failing subscriber is logged, never raised into the engine."""
    for handler in _handlers.get(event, ()):
        try:
            handler(**data)
        except Exception:
            logger.exception("pgqueue event handler %r failed on %s", handler, event)
