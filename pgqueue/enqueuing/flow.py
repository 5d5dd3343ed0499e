"""Flow control a job asks for: its uniqueness policy (Unique), and the keys of its lock, semaphore,
ordering or rate limit, derived from a call's arguments and checked before anything is written
(docs/concurrency.md)."""

from __future__ import annotations

import hashlib
import inspect
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pgqueue.conf import RATE_WINDOW_MIN, SECONDS_MAX
from pgqueue.exceptions import InvalidJob
from pgqueue.text import short_repr, text_problem

KEY_MAX = 255  # the key columns' length
CONCURRENCY_LIMIT_MAX = 10_000  # slots are rows: a semaphore of more is not a limit worth a row each
RATE_LIMIT_MAX = 1_000_000  # starts per window (an int column)
RATE_WINDOW_DEFAULT = 1.0  # seconds: rate_limit=10 alone means 10 starts per second

# A key: literal text, a template of the job's parameters ("account:{account_id}"), or a function
# called with the job's arguments that returns the key.
KeySpec = str | Callable[..., Any]


class Until(StrEnum):
    """While a uniqueness key is held by its job."""

    STARTED = "started"  # while it waits (scheduled, ready, blocked): at most one waiting copy
    FINISHED = "finished"  # until it succeeds, dies or is cancelled: at most one copy in flight
    RUNNING = "running"  # only while it runs: copies queue up and run one at a time (a semaphore of 1)


class OnConflict(StrEnum):
    """What enqueueing a job whose key is held does."""

    REJECT = "reject"  # raise JobNotUnique; nothing is written
    DISCARD = "discard"  # write nothing; return the holder's handle
    REPLACE = "replace"  # give the waiting holder this call's arguments and run_at; return its handle


class RetryOrder(StrEnum):
    """What a failed job of an ordering key does while it waits to retry."""

    BLOCK = "block"  # it keeps its place: later jobs of the key wait for it
    SKIP = "skip"  # it steps aside: later jobs run; it runs again when its delay is over and it is next


@dataclass(frozen=True, kw_only=True)
class Unique:
    """@job(unique=Unique(...)): at most one job per key.

    key: None (the job's name and its arguments, or only those named in `args`), a template of the job's
    parameters ("digest:{user_id}"), or a function of the job's arguments returning the key.
    until: "finished" (default), "started" or "running". window: seconds the key stays held after
    enqueue even when its job is done (None: only while the job holds it).
    on_conflict: "reject" (default: raise JobNotUnique), "discard" or "replace"."""

    key: KeySpec | None = None
    args: tuple[str, ...] | None = None
    until: Until | str = Until.FINISHED
    window: float | None = None
    on_conflict: OnConflict | str = OnConflict.REJECT

    def __post_init__(self) -> None:
        label = "Unique:"
        object.__setattr__(self, "until", choice(f"{label} until", self.until, Until))
        object.__setattr__(self, "on_conflict", choice(f"{label} on_conflict", self.on_conflict, OnConflict))
        if self.key is not None:
            check_key_spec(f"{label} key", self.key)
        if self.args is not None:
            if isinstance(self.args, str) or not isinstance(self.args, tuple | list):
                raise InvalidJob(f"{label} args must be a tuple of parameter names, got {short_repr(self.args)}.")
            if not all(isinstance(a, str) and a for a in self.args):
                raise InvalidJob(f"{label} args must be a tuple of parameter names, got {short_repr(self.args)}.")
            if self.key is not None:
                raise InvalidJob(f"{label} give key or args, not both.")
            object.__setattr__(self, "args", tuple(self.args))
        if self.window is not None:
            _check_window(f"{label} window", self.window)
        if self.until is Until.RUNNING and (self.window is not None or self.on_conflict is not OnConflict.REJECT):
            raise InvalidJob(
                f"{label} until='running' takes no window or on_conflict: enqueueing never conflicts, copies "
                "wait and run one at a time."
            )


class FlowJob(Protocol):
    """What flow control reads of a job (pgqueue.enqueuing.decorator.JobFunction is one)."""

    name: str
    signature: inspect.Signature | None
    takes_context: bool  # the signature's first parameter is the worker's, not the caller's
    unique: Unique | None
    concurrency_key: KeySpec | None
    concurrency_limit: int | None
    ordering_key: KeySpec | None
    ordering_retry: RetryOrder
    rate_key: KeySpec | None
    rate_limit: int | None
    rate_window: float | None

    def parameters(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """What one call asks for, resolved and checked: the values its row and its lock get."""

    lock_key: str | None = None
    until: Until = Until.FINISHED
    window: float | None = None
    on_conflict: OnConflict = OnConflict.REJECT
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_hold: bool = False  # keeps its slot while waiting to retry
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_window: float | None = None


NO_FLOW = Flow()


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowPolicy:
    """A job's flow settings merged with a call's options (checked, not yet applied to arguments)."""

    unique: Unique | None = None
    unique_key: str | None = None  # an explicit key for this call
    idempotency_key: str | None = None
    concurrency_key: KeySpec | None = None
    concurrency_limit: int | None = None
    ordering_key: KeySpec | None = None
    ordering_retry: RetryOrder = RetryOrder.BLOCK
    rate_key: KeySpec | None = None
    rate_limit: int | None = None
    rate_window: float = RATE_WINDOW_DEFAULT

    @property
    def empty(self) -> bool:
        return (self.unique is None and self.idempotency_key is None and self.concurrency_key is None
                and self.concurrency_limit is None and self.ordering_key is None and self.rate_limit is None)

    def flow(self, job: FlowJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Flow:
        """The keys of this call (InvalidJob if a key function fails or returns something unusable)."""
        if self.empty:
            return NO_FLOW
        name = job.name
        lock_key: str | None = None
        unique = self.unique
        if unique is not None:
            if self.unique_key is not None:
                lock_key = self.unique_key
            elif unique.key is not None:
                lock_key = derive_key(f"Job {name}: unique key", unique.key, job, args, kwargs)
            else:
                lock_key = default_unique_key(job, args, kwargs, unique.args)
        concurrency_key: str | None = None
        limit = self.concurrency_limit
        hold = False
        if self.ordering_key is not None:
            concurrency_key = own_key(f"Job {name}: ordering key",
                                      derive_key(f"Job {name}: ordering key", self.ordering_key, job, args, kwargs))
            limit, hold = 1, self.ordering_retry is RetryOrder.BLOCK
        elif self.concurrency_key is not None or limit is not None:
            spec = self.concurrency_key if self.concurrency_key is not None else name
            concurrency_key = own_key(f"Job {name}: concurrency key",
                                      derive_key(f"Job {name}: concurrency key", spec, job, args, kwargs))
        if unique is not None and unique.until is Until.RUNNING and lock_key is not None:  # a semaphore of one
            concurrency_key, limit, lock_key = internal_key("unique", lock_key), 1, None
        rate_key: str | None = None
        if self.rate_limit is not None:
            spec = self.rate_key if self.rate_key is not None else name
            rate_key = own_key(f"Job {name}: rate key", derive_key(f"Job {name}: rate key", spec, job, args, kwargs))
        return Flow(
            lock_key=lock_key,
            until=Until(unique.until) if unique is not None else Until.FINISHED,
            window=unique.window if unique is not None else None,
            on_conflict=OnConflict(unique.on_conflict) if unique is not None else OnConflict.REJECT,
            idempotency_key=self.idempotency_key,
            concurrency_key=concurrency_key,
            concurrency_limit=limit if concurrency_key is not None else None,
            concurrency_hold=hold,
            rate_key=rate_key,
            rate_limit=self.rate_limit if rate_key is not None else None,
            rate_window=self.rate_window if rate_key is not None else None,
        )


def policy(job: FlowJob, *, unique: Unique | bool | None, unique_key: str | None,
           idempotency_key: str | None, concurrency_key: KeySpec | None, concurrency_limit: int | None,
           ordering_key: KeySpec | None, rate_key: KeySpec | None = None, rate_limit: int | None = None,
           rate_window: float | None = None) -> FlowPolicy:
    """A call's flow options over its job's (None: the job's), checked together."""
    label = f"Job {job.name}:"
    if unique is False and unique_key is not None:
        raise InvalidJob(f"{label} unique=False turns uniqueness off; it takes no unique_key.")
    if unique is None:
        unique = job.unique
    unique = as_unique(label, unique)
    if unique_key is not None:
        unique_key = check_key(f"{label} unique_key", unique_key)
        unique = unique or UNIQUE_DEFAULT
    if idempotency_key is not None:
        idempotency_key = check_key(f"{label} idempotency_key", idempotency_key)
    ordering = ordering_key if ordering_key is not None else job.ordering_key
    concurrency = concurrency_key if concurrency_key is not None else job.concurrency_key
    limit = concurrency_limit if concurrency_limit is not None else job.concurrency_limit
    # A call's own choice of one kind of semaphore replaces the job's other kind; a call that asks for both
    # keeps both, and check_semaphore refuses it (never drops one).
    call_concurrency = concurrency_key is not None or concurrency_limit is not None
    if ordering_key is not None and not call_concurrency:
        concurrency, limit = None, None
    elif call_concurrency and ordering_key is None:
        ordering = None
    check_semaphore(label, concurrency, limit, ordering, unique)
    rate_key = rate_key if rate_key is not None else job.rate_key
    rate_limit = rate_limit if rate_limit is not None else job.rate_limit
    rate_window = rate_window if rate_window is not None else job.rate_window
    check_rate(label, rate_key, rate_limit, rate_window)
    return FlowPolicy(unique=unique, unique_key=unique_key, idempotency_key=idempotency_key,
                      concurrency_key=concurrency, concurrency_limit=limit, ordering_key=ordering,
                      ordering_retry=job.ordering_retry, rate_key=rate_key, rate_limit=rate_limit,
                      rate_window=float(rate_window) if rate_window is not None else RATE_WINDOW_DEFAULT)


def check_semaphore(label: str, concurrency_key: Any, limit: Any, ordering_key: Any, unique: Unique | None) -> None:
    """A job takes at most one semaphore: a concurrency key with a limit, an ordering key, or unique
    until='running'."""
    if concurrency_key is not None:
        check_key_spec(f"{label} concurrency_key", concurrency_key)
        if limit is None:
            raise InvalidJob(f"{label} concurrency_key needs concurrency_limit=N (jobs of a key that may run at once).")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= CONCURRENCY_LIMIT_MAX):
        raise InvalidJob(
            f"{label} concurrency_limit must be an integer from 1 to {CONCURRENCY_LIMIT_MAX}, got {short_repr(limit)}."
        )
    if ordering_key is not None:
        check_key_spec(f"{label} ordering_key", ordering_key)
    semaphores = [name for name, given in (
        ("concurrency_limit", limit is not None), ("ordering_key", ordering_key is not None),
        ("unique until='running'", unique is not None and unique.until is Until.RUNNING)) if given]
    if len(semaphores) > 1:
        raise InvalidJob(f"{label} {' and '.join(semaphores)} each make a semaphore; a job takes one.")


def check_rate(label: str, rate_key: Any, rate_limit: Any, rate_window: Any) -> None:
    """A rate limit: rate_limit=N starts per rate_window seconds (default 1), per rate_key (default: the
    job's name)."""
    if rate_limit is None:
        for name, given in (("rate_key", rate_key), ("rate_window", rate_window)):
            if given is not None:
                raise InvalidJob(f"{label} {name} needs rate_limit=N (starts allowed per rate_window seconds).")
        return
    if isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or not 1 <= rate_limit <= RATE_LIMIT_MAX:
        raise InvalidJob(f"{label} rate_limit must be an integer from 1 to {RATE_LIMIT_MAX}, got "
                         f"{short_repr(rate_limit)}.")
    if rate_window is not None:
        check_rate_window(f"{label} rate_window", rate_window)
    if rate_key is not None:
        check_key_spec(f"{label} rate_key", rate_key)


def as_unique(label: str, value: Any) -> Unique | None:
    """Unique from what @job(unique=...) or options(unique=...) accept: True, False/None or a Unique."""
    if value is None or value is False:
        return None
    if value is True:
        return UNIQUE_DEFAULT
    if isinstance(value, Unique):
        return value
    raise InvalidJob(f"{label} unique must be True, False or a pgqueue.Unique(...), got {short_repr(value)}.")


def check_key_spec(label: str, spec: Any) -> None:
    """A key given to @job: literal text, a template, or a function."""
    if callable(spec):
        return
    if not isinstance(spec, str):
        raise InvalidJob(f"{label} must be a string, a template like 'account:{{account_id}}' or a function, "
                         f"got {short_repr(spec)}.")
    check_key(label, spec)
    try:
        list(string.Formatter().parse(spec))
    except ValueError as exc:
        raise InvalidJob(f"{label} {short_repr(spec)} is not a valid template: {exc}.") from None


def check_template(label: str, spec: KeySpec, job: FlowJob) -> None:
    """A template's fields must name the job's parameters (checked when @job is applied)."""
    if not isinstance(spec, str) or job.signature is None:
        return
    names = set(job.signature.parameters)
    for _text, field, _format, _conversion in string.Formatter().parse(spec):
        if field is None:
            continue
        base = field.split(".")[0].split("[")[0]
        if not base or base.isdigit():
            raise InvalidJob(f"{label} {short_repr(spec)}: name the parameter in {{...}}, e.g. {{account_id}}.")
        if base not in names:
            raise InvalidJob(f"{label} {short_repr(spec)} names {{{base}}}, which is not a parameter of "
                             f"{job.parameters()}.")


def check_unique_args(label: str, unique: Unique | None, job: FlowJob) -> None:
    if unique is None:
        return
    if unique.key is not None:
        check_template(f"{label} unique key", unique.key, job)
    if unique.args is not None and job.signature is not None:
        missing = [a for a in unique.args if a not in job.signature.parameters]
        if missing:
            raise InvalidJob(f"{label} Unique(args=...) names {', '.join(missing)}, not parameters of "
                             f"{job.parameters()}.")


def check_key(label: str, key: Any) -> str:
    """A key as stored: a non-empty string of at most KEY_MAX characters without control characters."""
    if not isinstance(key, str) or not key:
        raise InvalidJob(f"{label} must be a non-empty string, got {short_repr(key)}.")
    if len(key) > KEY_MAX:
        raise InvalidJob(f"{label} is {len(key)} characters long, over {KEY_MAX}: {short_repr(key)}.")
    problem = text_problem(key)
    if problem is not None:
        raise InvalidJob(f"{label} {short_repr(key)} {problem}.")
    return key


def derive_key(label: str, spec: KeySpec, job: FlowJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The key of one call from a literal, a template or a function."""
    if callable(spec):
        try:
            value = spec(*args, **kwargs)
        except Exception as exc:
            raise InvalidJob(f"{label} function {_name(spec)} failed: {type(exc).__name__}: {exc}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return check_key(f"{label} (from {_name(spec)})", value)
    if "{" not in spec:
        return spec
    try:
        value = spec.format(**arguments(job, args, kwargs))
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        raise InvalidJob(f"{label} template {short_repr(spec)} cannot be filled: {type(exc).__name__}: {exc}") from None
    return check_key(f"{label} (from {short_repr(spec)})", value)


def default_unique_key(job: FlowJob, args: tuple[Any, ...], kwargs: dict[str, Any],
                       names: tuple[str, ...] | None) -> str:
    """The job's name and its arguments (all, or those named) as canonical JSON; hashed when long."""
    if names is None and not kwargs:
        values: Any = list(args)
    else:
        bound = arguments(job, args, kwargs)
        values = {n: bound.get(n) for n in (names if names is not None else sorted(bound))}
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = f"{job.name}:{text}"
    if len(key) <= KEY_MAX and text_problem(key) is None:
        return key
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{job.name[:KEY_MAX - 72]}:sha256:{digest}"


def own_key(label: str, key: str) -> str:
    """A semaphore or rate key a job gives: not one of pgqueue's own ("pgqueue:queue:...",
    "pgqueue:unique:...", "pgqueue:enqueue:...")."""
    if key.startswith("pgqueue:"):
        raise InvalidJob(f"{label} {short_repr(key)} starts with 'pgqueue:', which pgqueue keeps for its own "
                         "semaphores and token buckets (queue limits, unique until='running', the enqueue rate "
                         "limit per queue).")
    return key


def internal_key(kind: str, key: str) -> str:
    """A semaphore key pgqueue makes for itself ("pgqueue:unique:<key>", "pgqueue:queue:<name>"), hashed
    when it would be over KEY_MAX."""
    full = f"pgqueue:{kind}:{key}"
    if len(full) <= KEY_MAX:
        return full
    return f"pgqueue:{kind}:sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def arguments(job: FlowJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults applied (the context parameter left out)."""
    if job.signature is None:
        return {str(i): v for i, v in enumerate(args)} | kwargs
    bound = job.signature.bind(*((None, *args) if job.takes_context else args), **kwargs)
    bound.apply_defaults()
    values = dict(bound.arguments)
    if job.takes_context:
        values.pop(next(iter(job.signature.parameters)), None)
    for name, parameter in job.signature.parameters.items():  # **kwargs parameters: their keys by name
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in values:
            values.update(values.pop(name))
    return values


def choice(label: str, value: Any, enum: type[StrEnum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise InvalidJob(f"{label} must be one of {allowed}, got {short_repr(value)}.") from None


def check_rate_window(label: str, value: Any) -> None:
    """A rate's window: seconds from RATE_WINDOW_MIN to SECONDS_MAX (the SQL refills its bucket at
    limit / window tokens a second, and defers jobs by window / limit seconds each)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not RATE_WINDOW_MIN <= value <= SECONDS_MAX:
        raise InvalidJob(f"{label} must be a number of seconds from {RATE_WINDOW_MIN:g} to {SECONDS_MAX:.0f} "
                         f"(a year), got {short_repr(value)}.")  # NaN and inf fail the comparison too


def _check_window(label: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= SECONDS_MAX:
        raise InvalidJob(f"{label} must be a number of seconds from 0 (excluded) to {SECONDS_MAX:.0f}, "
                         f"got {short_repr(value)}.")  # NaN and inf fail the comparison too


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


UNIQUE_DEFAULT = Unique()  # @job(unique=True): the job's name and all its arguments, until finished, reject
