"""pgqueue_worker's options: validated once into a frozen value that goes unchanged from the command to
the supervisor and every worker it forks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pgqueue.conf import Settings, check_queue_name
from pgqueue.exceptions import InvalidJob

QUEUES_COLUMN_MAX = 1000  # pgqueue_workerprocess.queues
SECONDS_MAX = 365 * 24 * 3600.0


class OptionError(ValueError):
    """A pgqueue_worker option is invalid; the message names it and says why."""


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    queues: tuple[str, ...]
    processes: int = 1
    concurrency: int = 10
    shutdown_timeout: float = 30.0
    max_jobs: int | None = None
    max_memory_mb: float | None = None
    max_lifetime: float | None = None
    maintenance: bool = True
    scheduler: bool = True
    # one connection per worker (completions on the lease connection) and one LISTEN per supervisor, passed
    # down pipes: 2 + processes connections instead of 2 + 3 x processes, for a slower W1 and pickup
    share_connections: bool = False
    metrics_port: int | None = None  # serve Prometheus metrics on this port (a metrics process)
    metrics_address: str = "0.0.0.0"


def parse(
    settings: Settings,
    *,
    queues: str | None = None,
    processes: Any = 1,
    concurrency: Any = 10,
    shutdown_timeout: Any = 30.0,
    max_jobs: Any = None,
    max_memory_mb: Any = None,
    max_lifetime: Any = None,
    maintenance: bool = True,
    scheduler: bool = True,
    share_connections: bool = False,
    metrics_port: Any = None,
    metrics_address: str = "0.0.0.0",
) -> WorkerOptions:
    """Check every option and build the value; raise OptionError with a precise message."""
    return WorkerOptions(
        queues=_queues(queues, settings),
        processes=_int("--processes", processes, 1, 256),
        concurrency=_int("--concurrency", concurrency, 1, 1000),
        shutdown_timeout=_seconds("--shutdown-timeout", shutdown_timeout, allow_zero=True),
        max_jobs=None if max_jobs is None else _count("--max-jobs", max_jobs),
        max_memory_mb=None if max_memory_mb is None else _number("--max-memory", max_memory_mb, 1024.0**2),
        max_lifetime=None if max_lifetime is None else _seconds("--max-lifetime", max_lifetime),
        maintenance=bool(maintenance),
        scheduler=bool(scheduler),
        share_connections=bool(share_connections),
        metrics_port=None if metrics_port is None else _int("--metrics-port", metrics_port, 1, 65535),
        metrics_address=_address(metrics_address),
    )


def _address(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() or c in "/[]" for c in value.strip()):
        raise OptionError(f"--metrics-address must be a host name or IP address to listen on, got {value!r}.")
    return value.strip()


def _int(label: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(f"{label} must be from {low} to {high}, got {value}.")
    return value


def _count(label: str, value: Any) -> int:
    high = 2**31 - 1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= high:
        raise OptionError(f"{label} must be greater than 0 and at most {high}, got {value}.")
    return value


def _number(label: str, value: Any, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"{label} must be a finite number, got {value}.")
    if not 0 < value <= high:
        raise OptionError(f"{label} must be greater than 0 and at most {high:g}, got {value}.")
    return float(value)


def _seconds(label: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"{label} must be a finite number of seconds, got {value}.")
    if value < 0 or (value == 0 and not allow_zero) or value > SECONDS_MAX:
        low = ">= 0" if allow_zero else "greater than 0"
        raise OptionError(f"{label} must be {low} and at most {SECONDS_MAX:g} s (a year), got {value}.")
    return float(value)


def _queues(raw: str | None, settings: Settings) -> tuple[str, ...]:
    if raw is None:
        names = [settings.DEFAULT_QUEUE]
    else:
        if not raw.strip():
            raise OptionError("--queues is empty: name at least one queue (comma-separated).")
        names = [part.strip() for part in raw.split(",")]
    try:
        names = [check_queue_name(name) for name in names]
    except InvalidJob as exc:
        raise OptionError(f"--queues: {exc}") from None
    if settings.QUEUES is not None:
        unknown = [q for q in names if q not in settings.QUEUES]
        if unknown:
            raise OptionError(f"--queues: {', '.join(unknown)} not declared in PGQUEUE['QUEUES'] "
                              f"({', '.join(settings.QUEUES)}).")
    unique = tuple(dict.fromkeys(names))
    joined = ",".join(unique)
    if len(joined) > QUEUES_COLUMN_MAX:
        raise OptionError(f"--queues: {len(joined)} characters, over the {QUEUES_COLUMN_MAX} that "
                          "pgqueue_workerprocess.queues holds; run fewer queues per worker.")
    return unique
