"""@job and the registry: dotted path <-> job function, with each job's options and retry policy."""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgqueue.exceptions import InvalidJob, NonRetryable, UnknownJob

if TYPE_CHECKING:
    from pgqueue.enqueueing import JobHandle

PRIORITY_MIN, PRIORITY_MAX = -100, 100

_registry: dict[str, JobFunction] = {}
_lock = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """Per-call options; None means "use the job's (or the settings') default"."""

    queue: str | None = None
    priority: int | None = None
    run_at: dt.datetime | None = None
    delay: float | dt.timedelta | None = None
    max_attempts: int | None = None
    timeout: float | None = None


@dataclass(frozen=True, kw_only=True)
class JobCall:
    """One call of a job function, ready to be enqueued (see enqueue_many)."""

    job: JobFunction
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: JobOptions = field(default_factory=JobOptions)


class JobFunction:
    """A function registered with @job: call it to run inline, .enqueue() to run it on a worker."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        queue: str | None,
        priority: int,
        max_attempts: int | None,
        timeout: float | None,
        retry_backoff: float | None,
        retry_backoff_max: float | None,
        retry_jitter: float | None,
        non_retryable: tuple[type[BaseException], ...],
        pass_context: bool,
    ) -> None:
        self.func = func
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.retry_jitter = retry_jitter
        self.non_retryable: tuple[type[BaseException], ...] = (NonRetryable, *non_retryable)
        self.pass_context = pass_context
        self.is_async = inspect.iscoroutinefunction(func)
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", name)
        self.__module__ = func.__module__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<job {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def call(self, *args: Any, **kwargs: Any) -> JobCall:
        """A call to pass to pgqueue.enqueue_many() for bulk enqueueing."""
        return JobCall(job=self, args=args, kwargs=kwargs)

    def options(self, **options: Any) -> BoundJob:
        """Per-call options: queue, priority, run_at, delay (seconds or timedelta), max_attempts, timeout."""
        unknown = set(options) - set(JobOptions.__dataclass_fields__)
        if unknown:
            raise InvalidJob(
                f"Unknown job option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(JobOptions.__dataclass_fields__))}."
            )
        return BoundJob(self, JobOptions(**options))

    def enqueue(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueue one call in the caller's transaction and return its handle."""
        return BoundJob(self, JobOptions()).enqueue(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[tuple[Any, ...] | JobCall]) -> list[JobHandle]:
        """Enqueue many calls of this job in one INSERT: an iterable of argument tuples."""
        return BoundJob(self, JobOptions()).enqueue_many(calls)

    def retry_delay(self, attempt: int, base: float, cap: float, jitter: float) -> float:
        """Seconds to wait before the attempt after `attempt` (exponential, capped, jittered)."""
        base = self.retry_backoff if self.retry_backoff is not None else base
        cap = self.retry_backoff_max if self.retry_backoff_max is not None else cap
        jitter = self.retry_jitter if self.retry_jitter is not None else jitter
        delay = base * (2 ** min(max(0, attempt - 1), 60))
        return min(cap, delay * (1 + random.uniform(0, jitter)))

    def is_retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, self.non_retryable)


class BoundJob:
    """A job function with per-call options attached: fn.options(...).enqueue(...)."""

    def __init__(self, job: JobFunction, options: JobOptions) -> None:
        self.job = job
        self.opts = options

    def call(self, *args: Any, **kwargs: Any) -> JobCall:
        return JobCall(job=self.job, args=args, kwargs=kwargs, options=self.opts)

    def enqueue(self, *args: Any, **kwargs: Any) -> JobHandle:
        from pgqueue.enqueueing import enqueue_calls

        return enqueue_calls([self.call(*args, **kwargs)])[0]

    def enqueue_many(self, calls: Iterable[tuple[Any, ...] | JobCall]) -> list[JobHandle]:
        from pgqueue.enqueueing import enqueue_calls

        prepared = [c if isinstance(c, JobCall) else self.call(*c) for c in calls]
        return enqueue_calls(prepared)


def job(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    timeout: float | None = None,
    retry_backoff: float | None = None,
    retry_backoff_max: float | None = None,
    retry_jitter: float | None = None,
    non_retryable: Iterable[type[BaseException]] = (),
    pass_context: bool = False,
) -> Any:
    """Register a function (sync or async) as a job. Use as @job or @job(queue=..., ...)."""

    def register(fn: Callable[..., Any]) -> JobFunction:
        if not callable(fn):
            raise TypeError(f"@job needs a function, got {fn!r}")
        _check_int("priority", priority, PRIORITY_MIN, PRIORITY_MAX)
        if max_attempts is not None:
            _check_int("max_attempts", max_attempts, 1, 10_000)
        _check_seconds("timeout", timeout)
        for label, value in (("retry_backoff", retry_backoff), ("retry_backoff_max", retry_backoff_max),
                             ("retry_jitter", retry_jitter)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise InvalidJob(f"@job {label} must be a number >= 0, got {value!r}.")
        classes = tuple(non_retryable)
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise InvalidJob(f"@job non_retryable must list exception classes, got {cls!r}.")
        path = name or f"{fn.__module__}.{fn.__qualname__}"
        if "<locals>" in path:
            raise InvalidJob(f"@job cannot register {path}: a job must be importable by its dotted path.")
        wrapped = JobFunction(
            fn, name=path, queue=queue, priority=priority, max_attempts=max_attempts, timeout=timeout,
            retry_backoff=retry_backoff, retry_backoff_max=retry_backoff_max, retry_jitter=retry_jitter,
            non_retryable=classes, pass_context=pass_context,
        )
        with _lock:
            existing = _registry.get(path)
            if existing is not None and existing.func.__code__ is not fn.__code__:
                raise InvalidJob(f"Two different functions are registered as job {path!r}.")
            _registry[path] = wrapped
        return wrapped

    if func is not None:
        return register(func)
    return register


def _check_int(label: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidJob(f"{label} must be an integer from {low} to {high}, got {value!r}.")


def _check_seconds(label: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
        raise InvalidJob(f"{label} must be a number of seconds greater than 0, got {value!r}.")


def get(path: str) -> JobFunction:
    """The job registered under `path`, importing its module if needed."""
    found = _registry.get(path)
    if found is not None:
        return found
    module_name, _, attr = path.rpartition(".")
    while module_name:
        try:
            importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, _ = module_name.rpartition(".")
        except Exception as exc:  # the module exists but is broken
            raise UnknownJob(f"Job {path!r}: importing {module_name!r} failed: {exc!r}.") from exc
    found = _registry.get(path)
    if found is None:
        raise UnknownJob(
            f"No job is registered as {path!r}. Decorate the function with @pgqueue.job and make sure "
            "its module is importable (pgqueue_worker imports every installed app's jobs module)."
        )
    return found


def registered() -> dict[str, JobFunction]:
    """A copy of the registry."""
    return dict(_registry)
