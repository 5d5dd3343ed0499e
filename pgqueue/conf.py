"""pgqueue settings: read once from settings.PGQUEUE and PGQUEUE_* environment variables."""

from __future__ import annotations

import decimal
import functools
import ipaddress
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from pgqueue.exceptions import InvalidJob
from pgqueue.text import short_repr, text_problem

DAY = 24 * 3600.0
# Upper bounds that keep every value usable in SQL interval and Python datetime arithmetic.
SECONDS_MAX = 365 * DAY  # durations: leases, heartbeats, timeouts, retry delays
RETENTION_MAX = 100 * 365 * DAY  # KEEP_*_SECONDS
# A rate's window (N starts per window): a shorter one refills faster than float8 arithmetic can count
# (elapsed seconds x limit / window overflows); 1 ms with a limit of 1,000,000 is a billion starts a second.
RATE_WINDOW_MIN = 0.001
FLUSH_MS_MAX = 60_000.0  # COMPLETION_FLUSH_MS: a batching window, not a schedule
BYTES_MAX = 64 * 1024 * 1024  # payload and result limits: jsonb stores far less than 1 GB per value
MAX_ATTEMPTS_MAX = 10_000
JITTER_MAX = 1.0  # a fraction of the delay
QUEUE_NAME_MAX = 100  # the queue column's length
RETAINED_STATES = ("succeeded", "dead", "cancelled")  # the finished states retention applies to
POOLERS = ("none", "session", "transaction")  # PGQUEUE['POOLER']



@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every pgqueue option with its default; see docs/configuration.md."""

    # Django database alias that holds the pgqueue tables.
    DATABASE: str = "default"
    # Queue used when neither the job nor the call names one.
    DEFAULT_QUEUE: str = "default"
    # Declared queue names; when set, enqueueing to any other queue is an error.
    QUEUES: tuple[str, ...] | None = None
    # Largest JSON payload (args + kwargs) accepted at enqueue, in bytes.
    MAX_PAYLOAD_BYTES: int = 256 * 1024
    # Largest JSON result a job may return; a larger one is recorded as a failure, not stored.
    MAX_RESULT_BYTES: int = 1024 * 1024
    # Attempts a job gets when @job does not say.
    DEFAULT_MAX_ATTEMPTS: int = 3
    # Seconds a job may run when @job does not say; None means no limit.
    DEFAULT_TIMEOUT: float | None = None
    # Retry delay before attempt n+1 is RETRY_BACKOFF * 2**(n-1), capped at RETRY_BACKOFF_MAX.
    RETRY_BACKOFF: float = 2.0
    RETRY_BACKOFF_MAX: float = 3600.0
    # Random spread added to each retry delay, as a fraction of it (0.1 = up to +10%).
    RETRY_JITTER: float = 0.1
    # A lease lasts this long unless the worker's heartbeat extends it.
    LEASE_SECONDS: float = 30.0
    # How often a worker extends its leases and reports it is alive.
    HEARTBEAT_SECONDS: float = 2.0
    # A worker silent for this long is dead: maintenance rescues its jobs.
    WORKER_DEAD_AFTER: float = 10.0
    # Polling fallback when no NOTIFY arrives.
    POLL_SECONDS: float = 1.0
    # How often the maintenance leader stages due jobs and rescues lost ones.
    MAINTENANCE_SECONDS: float = 0.5
    # The maintenance leader's lead (a row in pgqueue_leader) lasts this long unless renewed: another
    # maintenance process takes over within it after the leader dies. None: 4 x MAINTENANCE_SECONDS, at
    # least 5 s.
    LEADER_SECONDS: float | None = None
    # Completions are written in batches: at most this many, at most this late.
    COMPLETION_BATCH: int = 500
    COMPLETION_FLUSH_MS: float = 25.0  # measured: 2 ms -> 25 ms raised W1 by ~10% (fewer, larger batches)
    # History retention, in seconds, for finished jobs (with their attempts).
    KEEP_SUCCEEDED_SECONDS: float = 24 * 3600.0
    KEEP_FAILED_SECONDS: float = 14 * 24 * 3600.0
    # Per queue and finished state, retention that overrides the two above:
    # {"emails": {"succeeded": 3600, "dead": 30 * 86400, "cancelled": 86400}} (docs/operations.md).
    RETENTION: dict[str, dict[str, float]] = field(default_factory=dict)
    # Move pruned jobs (with their attempts, as JSON) to the pgqueue_archivedjob table instead of deleting
    # them; archived jobs are deleted ARCHIVE_KEEP_SECONDS after they were archived (None: kept).
    ARCHIVE: bool = False
    ARCHIVE_KEEP_SECONDS: float | None = None
    # Outbox events are kept this long after they were relayed to their subscribers' jobs.
    OUTBOX_KEEP_SECONDS: float = 7 * 24 * 3600.0
    # Recurring jobs: {name: {"task": ..., "cron": ..., "timezone", "args", "kwargs", "catch_up"}}
    # (docs/schedules.md); checked by the system check pgqueue.E005.
    SCHEDULES: dict[str, dict[str, Any]] = field(default_factory=dict)
    # An idempotency key returns the same job's handle for this long after the first enqueue with it.
    IDEMPOTENCY_SECONDS: float = 24 * 3600.0
    # LISTEN/NOTIFY channel.
    NOTIFY_CHANNEL: str = "pgqueue"
    # Supervisor: at most this many child restarts per RESTART_WINDOW seconds, then back off.
    RESTART_LIMIT: int = 10
    RESTART_WINDOW: float = 60.0
    # What sits between pgqueue and PostgreSQL (docs/deployment.md): "none" (a direct connection), "session"
    # (a pooler in session mode: a client keeps its server connection) or "transaction" (PgBouncer,
    # Supavisor, RDS Proxy... in transaction mode: no session state survives a transaction, so pgqueue keeps
    # none there, and LISTEN goes through LISTEN_DATABASE or is replaced by polling).
    POOLER: str = "none"
    # A Django database alias with a direct (or session-pooled) connection to the same database, used only
    # for LISTEN when POOLER is "transaction". None: workers poll every POLL_SECONDS instead.
    LISTEN_DATABASE: str | None = None
    # Run hot statements as server-side prepared statements (the single enqueue on Django's connection,
    # and the workers' own connections). None: on, unless POOLER is "transaction" (set True there only for
    # a pooler that keeps protocol-level prepared statements: PgBouncer 1.21+ with max_prepared_statements).
    PREPARE_STATEMENTS: bool | None = None
    # Guardrails (docs/operations.md): enqueues per queue at most `rate` jobs per `per` seconds, cluster-wide
    # ({"emails": {"rate": 100, "per": 1}}); over it, enqueue raises EnqueueRefused and writes nothing.
    ENQUEUE_RATE_LIMITS: dict[str, dict[str, float]] = field(default_factory=dict)
    # Keep a row per refused enqueue (queue, task, reason, per minute with a count) for the admin's list.
    RECORD_REFUSALS: bool = False
    # Observability (docs/operations.md). The /metrics view accepts "Authorization: Bearer <token>" with
    # this token (or a staff login); pgqueue_worker refuses an empty or default one when DEBUG is off and
    # --metrics-port is given.
    METRICS_TOKEN: str = ""
    # The health view reports a queue whose oldest ready job waited longer than this as lagging (503),
    # per queue in HEALTH_QUEUE_MAX_LAG_SECONDS ({"emails": 60}), else HEALTH_MAX_LAG_SECONDS.
    HEALTH_MAX_LAG_SECONDS: float = 300.0
    HEALTH_QUEUE_MAX_LAG_SECONDS: dict[str, float] = field(default_factory=dict)
    # HTTP jobs (pgqueue.http.request, docs/http.md): when set, only these hosts may be requested
    # ("example.com", or ".example.com" for it and its subdomains); private, loopback, link-local and
    # metadata addresses are refused unless inside one of HTTP_ALLOWED_NETWORKS ("127.0.0.1/32").
    HTTP_ALLOWED_HOSTS: tuple[str, ...] | None = None
    HTTP_ALLOWED_NETWORKS: tuple[str, ...] = ()
    # Seconds an HTTP job's request may take (connect and read) when the call does not say.
    HTTP_TIMEOUT: float = 30.0

    def __post_init__(self) -> None:
        for name, (low, low_allowed, high) in _RANGES.items():
            _check_range(name, getattr(self, name), low, low_allowed, high)
        if self.DEFAULT_TIMEOUT is not None:
            _check_range("DEFAULT_TIMEOUT", self.DEFAULT_TIMEOUT, 0, False, SECONDS_MAX)
        if not self.DATABASE:
            raise ImproperlyConfigured("PGQUEUE['DATABASE'] must name a database alias, got ''.")
        problem = text_problem(self.NOTIFY_CHANNEL)
        if problem is not None:
            raise ImproperlyConfigured(f"PGQUEUE['NOTIFY_CHANNEL'] {short_repr(self.NOTIFY_CHANNEL)} {problem}.")
        if not self.NOTIFY_CHANNEL or len(self.NOTIFY_CHANNEL.encode()) > 63:
            raise ImproperlyConfigured("PGQUEUE['NOTIFY_CHANNEL'] must be 1 to 63 bytes long.")
        if self.HEARTBEAT_SECONDS >= self.LEASE_SECONDS:
            raise ImproperlyConfigured(
                f"PGQUEUE['HEARTBEAT_SECONDS'] ({self.HEARTBEAT_SECONDS}) must be shorter than "
                f"PGQUEUE['LEASE_SECONDS'] ({self.LEASE_SECONDS}), or leases expire between heartbeats."
            )
        if self.HEARTBEAT_SECONDS >= self.WORKER_DEAD_AFTER:
            raise ImproperlyConfigured(
                f"PGQUEUE['HEARTBEAT_SECONDS'] ({self.HEARTBEAT_SECONDS}) must be shorter than "
                f"PGQUEUE['WORKER_DEAD_AFTER'] ({self.WORKER_DEAD_AFTER})."
            )
        for queue in (self.QUEUES or ()) + (self.DEFAULT_QUEUE,):
            check_queue_name(queue, setting=True)
        for queue, limit in self.ENQUEUE_RATE_LIMITS.items():
            check_queue_name(queue, setting=True)
            if set(limit) != {"rate", "per"}:
                raise ImproperlyConfigured(
                    f"PGQUEUE['ENQUEUE_RATE_LIMITS'][{queue!r}] must be {{'rate': jobs, 'per': seconds}}, got "
                    f"{short_repr(limit)}."
                )
            _check_range(f"ENQUEUE_RATE_LIMITS']['{queue}']['rate", limit["rate"], 1, True, 1_000_000)
            _check_range(f"ENQUEUE_RATE_LIMITS']['{queue}']['per", limit["per"], RATE_WINDOW_MIN, True, SECONDS_MAX)
        if self.ARCHIVE_KEEP_SECONDS is not None:
            _check_range("ARCHIVE_KEEP_SECONDS", self.ARCHIVE_KEEP_SECONDS, 0, False, RETENTION_MAX)
        for queue, rules in self.RETENTION.items():
            check_queue_name(queue, setting=True)
            for state, seconds in rules.items():
                if state not in RETAINED_STATES:
                    raise ImproperlyConfigured(
                        f"PGQUEUE['RETENTION'][{queue!r}] names state {short_repr(state)}; finished states are "
                        f"{', '.join(RETAINED_STATES)}."
                    )
                _check_range(f"RETENTION']['{queue}']['{state}", seconds, 0, True, RETENTION_MAX)
        for queue, seconds in self.HEALTH_QUEUE_MAX_LAG_SECONDS.items():
            check_queue_name(queue, setting=True)
            _check_range(f"HEALTH_QUEUE_MAX_LAG_SECONDS']['{queue}", seconds, 0, False, SECONDS_MAX)
        for network in self.HTTP_ALLOWED_NETWORKS:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ImproperlyConfigured(f"PGQUEUE['HTTP_ALLOWED_NETWORKS'] has {short_repr(network)}: {exc}.") from None
        for host in self.HTTP_ALLOWED_HOSTS or ():
            if not host.strip(".") or text_problem(host) or any(c in host for c in "/:@ "):
                raise ImproperlyConfigured(
                    f"PGQUEUE['HTTP_ALLOWED_HOSTS'] has {short_repr(host)}: a host name (\"example.com\", or "
                    "\".example.com\" for it and its subdomains) without scheme, port or path."
                )
        if self.POOLER not in POOLERS:
            raise ImproperlyConfigured(
                f"PGQUEUE['POOLER'] must be one of {', '.join(map(repr, POOLERS))}, got {short_repr(self.POOLER)}."
            )
        if self.LISTEN_DATABASE is not None and not self.LISTEN_DATABASE:
            raise ImproperlyConfigured("PGQUEUE['LISTEN_DATABASE'] must name a database alias or be None, got ''.")
        if self.LEADER_SECONDS is not None:
            _check_range("LEADER_SECONDS", self.LEADER_SECONDS, 0, False, SECONDS_MAX)
            if self.LEADER_SECONDS <= 2 * self.MAINTENANCE_SECONDS:
                raise ImproperlyConfigured(
                    f"PGQUEUE['LEADER_SECONDS'] ({self.LEADER_SECONDS:g}) must be more than twice "
                    f"PGQUEUE['MAINTENANCE_SECONDS'] ({self.MAINTENANCE_SECONDS:g}): the leader renews its lead "
                    "between rounds, and a lead that runs out between them passes to another process."
                )
        if self.QUEUES is not None and self.DEFAULT_QUEUE not in self.QUEUES:
            raise ImproperlyConfigured(
                f"PGQUEUE['DEFAULT_QUEUE'] {self.DEFAULT_QUEUE!r} is not in PGQUEUE['QUEUES'] {list(self.QUEUES)!r}."
            )

    @property
    def lead_seconds(self) -> float:
        """How long the maintenance leader's lead lasts unless renewed (LEADER_SECONDS or its default)."""
        if self.LEADER_SECONDS is not None:
            return self.LEADER_SECONDS
        return max(5.0, 4 * self.MAINTENANCE_SECONDS)

    @property
    def transaction_pooled(self) -> bool:
        """Whether connections go through a transaction pooler: no session state may be kept on them."""
        return self.POOLER == "transaction"

    @property
    def prepare(self) -> bool:
        """Whether hot statements run as server-side prepared statements (PREPARE_STATEMENTS or its default)."""
        if self.PREPARE_STATEMENTS is not None:
            return self.PREPARE_STATEMENTS
        return not self.transaction_pooled


# Numeric options: (lowest, whether the lowest itself is allowed, highest).
_RANGES: dict[str, tuple[float, bool, float]] = {
    "MAX_PAYLOAD_BYTES": (0, False, BYTES_MAX),
    "MAX_RESULT_BYTES": (0, False, BYTES_MAX),
    "DEFAULT_MAX_ATTEMPTS": (1, True, MAX_ATTEMPTS_MAX),
    "RETRY_BACKOFF": (0, True, SECONDS_MAX),
    "RETRY_BACKOFF_MAX": (0, False, SECONDS_MAX),
    "RETRY_JITTER": (0, True, JITTER_MAX),
    "LEASE_SECONDS": (0, False, SECONDS_MAX),
    "HEARTBEAT_SECONDS": (0, False, SECONDS_MAX),
    "WORKER_DEAD_AFTER": (0, False, SECONDS_MAX),
    "POLL_SECONDS": (0, False, SECONDS_MAX),
    "MAINTENANCE_SECONDS": (0, False, SECONDS_MAX),
    "COMPLETION_BATCH": (0, False, 1_000_000),
    "COMPLETION_FLUSH_MS": (0, False, FLUSH_MS_MAX),
    "KEEP_SUCCEEDED_SECONDS": (0, True, RETENTION_MAX),
    "KEEP_FAILED_SECONDS": (0, True, RETENTION_MAX),
    "OUTBOX_KEEP_SECONDS": (0, True, RETENTION_MAX),
    "IDEMPOTENCY_SECONDS": (0, False, RETENTION_MAX),
    "RESTART_LIMIT": (0, False, 1_000_000),
    "RESTART_WINDOW": (0, False, SECONDS_MAX),
    "HEALTH_MAX_LAG_SECONDS": (0, False, SECONDS_MAX),
    "HTTP_TIMEOUT": (0, False, SECONDS_MAX),
}


def _check_range(name: str, value: float, low: float, low_allowed: bool, high: float) -> None:
    # Settings() may be built directly, so its own checks do not rely on _cast having run.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImproperlyConfigured(f"PGQUEUE['{name}'] must be a number, got {short_repr(value)}.")
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"PGQUEUE['{name}'] must be a finite number, got {value!r}.")
    if value < low or (value == low and not low_allowed):
        if low_allowed:
            limit = "must not be negative" if low == 0 else f"must be at least {low:g}"
        else:
            limit = f"must be greater than {low:g}"
        raise ImproperlyConfigured(f"PGQUEUE['{name}'] {limit}, got {value!r}.")
    if value > high:
        raise ImproperlyConfigured(f"PGQUEUE['{name}'] must be at most {_describe_limit(name, high)}, got {value!r}.")


def _describe_limit(name: str, high: float) -> str:
    if high in (SECONDS_MAX, RETENTION_MAX):
        return f"{high:.0f} seconds ({high / (365 * DAY):.0f} year{'s' if high > 365 * DAY else ''})"
    if high == BYTES_MAX:
        return f"{high} bytes (64 MiB)"
    return f"{high:g}"


def check_queue_name(name: object, *, setting: bool = False) -> str:
    """Return name if it is a usable queue name, else raise a precise error (InvalidJob, or
    ImproperlyConfigured for a setting)."""
    problem = _queue_name_problem(name)
    if problem is None and isinstance(name, str):
        return name
    message = f"Invalid queue name {short_repr(name)}: {problem}."
    if setting:
        raise ImproperlyConfigured(message)
    raise InvalidJob(message)


def _queue_name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"a queue name must be a string, got {type(name).__name__}"
    if not name:
        return "it is empty"
    if len(name) > QUEUE_NAME_MAX:
        return f"it is {len(name)} characters long, over {QUEUE_NAME_MAX}"
    problem = text_problem(name)
    if problem is not None:
        return f"it {problem}"
    if "," in name:
        return "it contains a comma, which separates queue names in --queues and PGQUEUE_QUEUES"
    if name != name.strip():
        return "it has spaces around it"
    return None


_FIELDS = {f.name: f for f in fields(Settings)}


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, not a boolean")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
    elif isinstance(value, numbers.Real | decimal.Decimal):
        number = float(value)
    else:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not math.isfinite(number) or not number.is_integer():
        raise ValueError("expected a whole number")
    return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number, not a boolean")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    elif isinstance(value, numbers.Real | decimal.Decimal):
        number = float(value)
    else:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _to_queues(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
        if items == [""]:
            raise ValueError("it lists no queue; name them separated by commas, or leave it unset to allow any queue")
        if "" in items:
            raise ValueError(f"queue name {items.index('') + 1} of {len(items)} is empty")
        return tuple(items)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("it lists no queue; name at least DEFAULT_QUEUE, or use None to allow any queue")
        return tuple(value)
    raise TypeError(f"expected a list of queue names, got {type(value).__name__}")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


SCHEDULE_KEYS = ("task", "cron", "timezone", "args", "kwargs", "catch_up")


def _from_json(value: Any) -> Any:
    """A dict setting given as JSON text (from the environment) parsed; any other value as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"expected a JSON object ({exc})") from None


def _to_schedules(value: Any) -> dict[str, dict[str, Any]]:
    """The SCHEDULES dict (or its JSON, from the environment): each entry a dict of SCHEDULE_KEYS with a
    task and a cron; their values are checked by pgqueue.schedules (system check pgqueue.E005)."""
    value = _from_json(value)
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict of schedule name -> {{'task': ..., 'cron': ...}}, got {type(value).__name__}")
    schedules: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"a schedule name must be a non-empty string, got {short_repr(name)}")
        if not isinstance(entry, dict):
            raise TypeError(f"schedule {name!r} must be a dict with 'task' and 'cron', got {type(entry).__name__}")
        unknown = sorted(str(k) for k in entry if k not in SCHEDULE_KEYS)
        if unknown:
            raise TypeError(f"schedule {name!r} has unknown key(s) {', '.join(unknown)}; known: {', '.join(SCHEDULE_KEYS)}")
        missing = [k for k in ("task", "cron") if k not in entry]
        if missing:
            raise TypeError(f"schedule {name!r} needs {' and '.join(missing)}")
        schedules[name] = dict(entry)
    return schedules


def _to_names(value: Any) -> tuple[str, ...]:
    """A list of names, or comma-separated names (from the environment)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str):
                raise TypeError(f"expected a list of strings, got an item {short_repr(item)}")
        return tuple(value)
    raise TypeError(f"expected a list of strings, got {type(value).__name__}")


def _to_seconds_by_queue(value: Any) -> dict[str, float]:
    """{queue: seconds}, or its JSON (from the environment)."""
    value = _from_json(value)
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict of queue name -> seconds, got {type(value).__name__}")
    return {queue: _to_float(seconds) for queue, seconds in value.items()}


def _to_retention(value: Any, inner: str = "{state: seconds}") -> dict[str, dict[str, float]]:
    """{queue: {name: number}} (RETENTION, ENQUEUE_RATE_LIMITS), or its JSON (from the environment)."""
    value = _from_json(value)
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict of queue name -> {inner}, got {type(value).__name__}")
    rules: dict[str, dict[str, float]] = {}
    for queue, states in value.items():
        if not isinstance(states, dict):
            raise TypeError(f"queue {short_repr(queue)} must map to a dict {inner}, got {type(states).__name__}")
        rules[queue] = {state: _to_float(seconds) for state, seconds in states.items()}
    return rules


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError(f"expected True or False (or one of {', '.join(_TRUE + _FALSE)} in the environment)")


def _cast(name: str, value: Any, source: str) -> Any:
    """Coerce one raw value (from settings or the environment) to the field's type."""
    kind = str(_FIELDS[name].type)
    try:
        if value is None:
            if "None" in kind:
                return None
            raise TypeError("None is not allowed")
        if name == "QUEUES":
            return _to_queues(value)
        if name == "SCHEDULES":
            return _to_schedules(value)
        if name in ("HTTP_ALLOWED_HOSTS", "HTTP_ALLOWED_NETWORKS"):
            return _to_names(value)
        if name == "HEALTH_QUEUE_MAX_LAG_SECONDS":
            return _to_seconds_by_queue(value)
        if name == "RETENTION":
            return _to_retention(value)
        if name == "ENQUEUE_RATE_LIMITS":
            return _to_retention(value, inner="{'rate': jobs, 'per': seconds}")
        if kind.startswith("int"):
            return _to_int(value)
        if kind.startswith("float"):
            if isinstance(value, str) and value.strip().lower() in ("", "none", "null") and "None" in kind:
                return None
            return _to_float(value)
        if kind.startswith(("bool", "str")) and "None" in kind and source.startswith("environment") \
                and value.strip().lower() in ("", "none", "null"):
            return None  # an optional setting left unset from the environment
        if kind.startswith("bool"):
            return _to_bool(value)
        if kind.startswith("str"):
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {type(value).__name__}")
            return value
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImproperlyConfigured(f"{source} has an invalid value {short_repr(value)}: {exc}.") from None
    raise ImproperlyConfigured(f"{source}: unsupported setting type {kind}.")  # pragma: no cover


def load(user_settings: Any, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from a PGQUEUE dict and PGQUEUE_* environment variables (environment wins).

    `environ` defaults to os.environ; either way the variables are read through django-environ (so
    "$OTHER" names another variable) and parsed by pgqueue's own rules below.
    """
    import environ as django_environ

    if user_settings is None:
        user_settings = {}
    if not isinstance(user_settings, dict):
        raise ImproperlyConfigured(f"settings.PGQUEUE must be a dict, got {type(user_settings).__name__}.")
    unknown = sorted(str(key) for key in user_settings if key not in _FIELDS)
    if unknown:
        raise ImproperlyConfigured(
            f"settings.PGQUEUE has unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(_FIELDS))}."
        )
    values = {name: _cast(name, raw, f"settings.PGQUEUE['{name}']") for name, raw in user_settings.items()}
    env = django_environ.Env()
    env.ENVIRON = os.environ if environ is None else environ
    from_environment = []
    for name in _FIELDS:
        key = f"PGQUEUE_{name}"
        if key in env.ENVIRON:
            try:
                raw = env.str(key)
            except ImproperlyConfigured as exc:  # "$OTHER" naming a variable that is not set
                raise ImproperlyConfigured(f"environment variable {key}: {exc}.") from None
            except RecursionError:  # "$A" in A, or A and B naming each other
                raise ImproperlyConfigured(
                    f"environment variable {key}: its '$' reference leads back to itself."
                ) from None
            values[name] = _cast(name, raw, f"environment variable {key}")
            from_environment.append(name)
    try:
        return Settings(**values)
    except ImproperlyConfigured as exc:
        named = [f"PGQUEUE_{name}" for name in from_environment if f"PGQUEUE['{name}']" in str(exc)]
        if named:
            message = str(exc).removesuffix(".")
            raise ImproperlyConfigured(f"{message} (set by environment variable {', '.join(named)}).") from None
        raise


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import time)."""
    from django.conf import settings

    return load(getattr(settings, "PGQUEUE", None))


def reset() -> None:
    """Forget the cached settings (after override_settings, for example)."""
    get_settings.cache_clear()
