"""@job: registers a function as a job and wraps it in a JobFunction with .enqueue(), .options(), .call()."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterable
from typing import Any

from pgqueue.conf import JITTER_MAX, MAX_ATTEMPTS_MAX
from pgqueue.enqueuing import flow, registry
from pgqueue.enqueuing.api import items_of
from pgqueue.enqueuing.flow import KeySpec, RetryOrder, Unique
from pgqueue.enqueuing.handle import JobHandle
from pgqueue.enqueuing.insert import enqueue_calls
from pgqueue.enqueuing.options import (
    NO_OPTIONS,
    OPTION_NAMES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    JobCall,
    JobOptions,
    check_fraction,
    check_int,
    check_job_name,
    check_on_dependency_failure,
    check_options,
    check_queue,
    check_seconds,
)
from pgqueue.enqueuing.rows import flow_policy
from pgqueue.exceptions import InvalidJob, NonRetryable
from pgqueue.lifecycle import RetryPolicy
from pgqueue.text import a_type


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
        unique: Unique | None = None,
        concurrency_key: KeySpec | None = None,
        concurrency_limit: int | None = None,
        ordering_key: KeySpec | None = None,
        ordering_retry: RetryOrder = RetryOrder.BLOCK,
        rate_key: KeySpec | None = None,
        rate_limit: int | None = None,
        rate_window: float | None = None,
        on_dependency_failure: str = "cancel",
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
        self.unique = unique
        self.concurrency_key = concurrency_key
        self.concurrency_limit = concurrency_limit
        self.ordering_key = ordering_key
        self.ordering_retry = ordering_retry
        self.rate_key = rate_key
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.on_dependency_failure = on_dependency_failure
        self.is_async = inspect.iscoroutinefunction(func)
        self.takes_context = pass_context  # its signature's first parameter is given by the worker, not the caller
        self.signature = _signature(func)
        self._arity = _plain_arity(self.signature, pass_context)
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", name)
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__module__ = getattr(func, "__module__", None) or __name__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<job {self.name}>"

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def call(self, /, *args: Any, **kwargs: Any) -> JobCall:
        """A call to pass to pgqueue.enqueue_many() for bulk enqueueing."""
        return JobCall(job=self, args=args, kwargs=kwargs)

    def options(self, **options: Any) -> BoundJob:
        """Per-call options: queue, priority, run_at, delay (seconds or timedelta), max_attempts, timeout,
        flow control: unique, unique_key, idempotency_key, concurrency_key, concurrency_limit, ordering_key,
        rate_key, rate_limit, rate_window; and dependencies: depends_on, on_dependency_failure."""
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise InvalidJob(
                f"Unknown job option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(OPTION_NAMES))}."
            )
        opts = JobOptions(**options)
        check_options(opts, self.name)
        self.flow_policy(opts)  # checked now, so a bad key fails here rather than at enqueue
        if isinstance(opts.concurrency_key, str):
            flow.check_template(f"Job {self.name}: concurrency_key", opts.concurrency_key, self)
        if isinstance(opts.ordering_key, str):
            flow.check_template(f"Job {self.name}: ordering_key", opts.ordering_key, self)
        if isinstance(opts.rate_key, str):
            flow.check_template(f"Job {self.name}: rate_key", opts.rate_key, self)
        flow.check_unique_args(f"Job {self.name}:", flow.as_unique(f"Job {self.name}:", opts.unique), self)
        return BoundJob(self, opts)

    def flow_policy(self, options: JobOptions) -> flow.FlowPolicy:
        """This job's flow control merged with a call's options."""
        return flow_policy(self, options)

    def enqueue(self, /, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueue one call in the caller's transaction and return its handle."""
        return enqueue_calls([JobCall(job=self, args=args, kwargs=kwargs)])[0]

    def enqueue_many(self, calls: Iterable[tuple[Any, ...] | list[Any] | JobCall]) -> list[JobHandle]:
        """Enqueue many calls of this job in one INSERT: tuples (or lists) of positional arguments, or calls."""
        return BoundJob(self, NO_OPTIONS).enqueue_many(calls)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """InvalidJob if the function cannot take these arguments (the worker would fail every attempt)."""
        if self.signature is None or (not kwargs and len(args) == self._arity):
            return
        try:
            self.signature.bind(*((None, *args) if self.takes_context else args), **kwargs)
        except TypeError as exc:
            hint = ""
            options = sorted(set(kwargs) & set(OPTION_NAMES))
            if options and "unexpected keyword" in str(exc):
                what = "is a job option" if len(options) == 1 else "are job options"
                hint = f" {', '.join(options)} {what}: use {self.__name__}.options({options[0]}=...).enqueue(...)."
            raise InvalidJob(f"Job {self.name}: the arguments do not fit {self.parameters()}: {exc}.{hint}") from None

    def parameters(self) -> str:
        """The function's name and parameters, for messages: "add(a: int, b: int)"."""
        if self.signature is None:
            return f"{self.__name__}(...)"
        return f"{self.__name__}{self.signature.replace(return_annotation=inspect.Signature.empty)}"

    def retry_policy(self, base: float, cap: float, jitter: float) -> RetryPolicy:
        """This job's retry_backoff, retry_backoff_max and retry_jitter, each or else the given default."""
        return RetryPolicy(
            backoff=base if self.retry_backoff is None else self.retry_backoff,
            backoff_max=cap if self.retry_backoff_max is None else self.retry_backoff_max,
            jitter=jitter if self.retry_jitter is None else self.retry_jitter,
        )

    def retry_delay(self, attempt: int, base: float, cap: float, jitter: float) -> float:
        """Seconds to wait before the attempt after `attempt` (exponential, capped, jittered)."""
        return self.retry_policy(base, cap, jitter).delay(attempt, random.random())

    def is_retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, self.non_retryable)


class BoundJob:
    """A job function with per-call options attached: fn.options(...).enqueue(...)."""

    def __init__(self, job: JobFunction, options: JobOptions) -> None:
        self.job = job
        self.opts = options

    def call(self, /, *args: Any, **kwargs: Any) -> JobCall:
        return JobCall(job=self.job, args=args, kwargs=kwargs, options=self.opts)

    def enqueue(self, /, *args: Any, **kwargs: Any) -> JobHandle:
        return enqueue_calls([self.call(*args, **kwargs)])[0]

    def enqueue_many(self, calls: Iterable[tuple[Any, ...] | list[Any] | JobCall]) -> list[JobHandle]:
        items = items_of(calls, f"{self.job.__name__}.enqueue_many()")
        return enqueue_calls([self._as_call(item, i) for i, item in enumerate(items)])

    def _as_call(self, item: Any, index: int) -> JobCall:
        where = f"Job {self.job.name}: enqueue_many() item {index}"
        if isinstance(item, JobCall):
            if item.job is not self.job:
                raise InvalidJob(
                    f"{where} is a call of job {getattr(item.job, 'name', item.job)}; enqueue calls of "
                    "several jobs with pgqueue.enqueue_many()."
                )
            return item
        if isinstance(item, tuple | list):
            return self.call(*item)
        if isinstance(item, dict):
            raise InvalidJob(
                f"{where} is a dict, which would arrive as one positional argument; for keyword arguments "
                f"use {self.job.__name__}.call(**kwargs)."
            )
        if isinstance(item, str | bytes):
            raise InvalidJob(
                f"{where} is {a_type(item)}, which would be split into one argument per character; "
                "wrap it in a tuple: (value,)."
            )
        raise InvalidJob(
            f"{where} is {a_type(item)}; give a tuple or list of positional arguments, or "
            f"{self.job.__name__}.call(...)."
        )


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
    non_retryable: type[BaseException] | Iterable[type[BaseException]] = (),
    pass_context: bool = False,
    unique: Unique | bool | None = None,
    concurrency_key: KeySpec | None = None,
    concurrency_limit: int | None = None,
    ordering_key: KeySpec | None = None,
    ordering_retry: RetryOrder | str = RetryOrder.BLOCK,
    rate_limit: int | None = None,
    rate_window: float | None = None,
    rate_key: KeySpec | None = None,
    on_dependency_failure: str = "cancel",
) -> Any:
    """Register a function (sync or async) as a job. Use as @job or @job(queue=..., ...).

    Flow control (docs/concurrency.md): unique=True or Unique(...); concurrency_limit=N, with
    concurrency_key=... (default: the job's name); ordering_key=... with ordering_retry "block" or "skip";
    rate_limit=N starts per rate_window seconds (default 1), per rate_key=... (default: the job's name).
    on_dependency_failure: what a call enqueued with depends_on=[...] does when one of them is dead or
    cancelled, "cancel" (default) or "run" (docs/workflows.md)."""
    options: dict[str, Any] = dict(
        queue=queue, priority=priority, max_attempts=max_attempts, timeout=timeout, retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max, retry_jitter=retry_jitter, non_retryable=non_retryable,
        pass_context=pass_context, unique=unique, concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit, ordering_key=ordering_key, ordering_retry=ordering_retry,
        rate_limit=rate_limit, rate_window=rate_window, rate_key=rate_key,
        on_dependency_failure=on_dependency_failure,
    )

    def register(fn: Callable[..., Any]) -> JobFunction:
        return registry.register(make_job(fn, _job_name(fn, name), **options))

    if func is not None:
        return register(func)
    return register


def make_job(
    fn: Callable[..., Any],
    path: str,
    *,
    label: str = "",
    job_class: type[JobFunction] = JobFunction,
    extra: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    timeout: float | None = None,
    retry_backoff: float | None = None,
    retry_backoff_max: float | None = None,
    retry_jitter: float | None = None,
    non_retryable: type[BaseException] | Iterable[type[BaseException]] = (),
    pass_context: bool = False,
    unique: Unique | bool | None = None,
    concurrency_key: KeySpec | None = None,
    concurrency_limit: int | None = None,
    ordering_key: KeySpec | None = None,
    ordering_retry: RetryOrder | str = RetryOrder.BLOCK,
    rate_limit: int | None = None,
    rate_window: float | None = None,
    rate_key: KeySpec | None = None,
    on_dependency_failure: str = "cancel",
) -> JobFunction:
    """A job named `path` running `fn`, every option checked (InvalidJob naming `label`, "@job <path>:" by
    default), not registered. `job_class` (with `extra` arguments) builds it: @job's JobFunction, or the
    django.tasks backend's TaskJob, so a @task's options are checked with the same messages."""
    label = label or f"@job {path}:"
    if queue is not None:
        check_queue(label, queue)
    check_int(f"{label} priority", priority, PRIORITY_MIN, PRIORITY_MAX)
    if max_attempts is not None:
        check_int(f"{label} max_attempts", max_attempts, 1, MAX_ATTEMPTS_MAX)
    if timeout is not None:
        check_seconds(f"{label} timeout", timeout)
    if retry_backoff is not None:
        check_seconds(f"{label} retry_backoff", retry_backoff, zero=True)
    if retry_backoff_max is not None:
        check_seconds(f"{label} retry_backoff_max", retry_backoff_max, zero=True)
    if retry_jitter is not None:
        check_fraction(f"{label} retry_jitter", retry_jitter, JITTER_MAX)
    if not isinstance(pass_context, bool):
        raise InvalidJob(f"{label} pass_context must be True or False, got {pass_context!r}.")
    uniqueness = flow.as_unique(label, unique)
    flow.check_semaphore(label, concurrency_key, concurrency_limit, ordering_key, uniqueness)
    retry_order = flow.RetryOrder(flow.choice(f"{label} ordering_retry", ordering_retry, flow.RetryOrder))
    flow.check_rate(label, rate_key, rate_limit, rate_window)
    check_on_dependency_failure(label, on_dependency_failure)
    wrapped = job_class(
        fn, name=path, queue=queue, priority=priority, max_attempts=max_attempts, timeout=timeout,
        retry_backoff=retry_backoff, retry_backoff_max=retry_backoff_max, retry_jitter=retry_jitter,
        non_retryable=_exception_classes(label, non_retryable), pass_context=pass_context,
        unique=uniqueness, concurrency_key=concurrency_key, concurrency_limit=concurrency_limit,
        ordering_key=ordering_key, ordering_retry=retry_order, rate_key=rate_key, rate_limit=rate_limit,
        rate_window=rate_window, on_dependency_failure=on_dependency_failure, **(extra or {}),
    )
    flow.check_unique_args(label, uniqueness, wrapped)
    for what, spec in (("concurrency_key", concurrency_key), ("ordering_key", ordering_key), ("rate_key", rate_key)):
        if spec is not None:
            flow.check_template(f"{label} {what}", spec, wrapped)
    if wrapped.takes_context and wrapped.signature is not None:
        try:
            wrapped.signature.bind_partial(None)
        except TypeError:
            raise InvalidJob(
                f"{label} pass_context=True passes the JobContext as the first positional argument, "
                f"but {wrapped.parameters()} takes none."
            ) from None
    return wrapped


def _job_name(fn: Any, name: str | None) -> str:
    """The name a job is stored and looked up by: `name`, or the function's dotted path."""
    if isinstance(fn, JobFunction):
        raise InvalidJob(f"@job is applied twice to {fn.name}.")
    if not callable(fn):
        raise InvalidJob(
            f"@job needs a function, got {fn!r:.80}; its options are keyword arguments: @job(queue=...)."
        )
    module = getattr(fn, "__module__", None)
    if module == "__main__":
        raise InvalidJob(
            f"@job cannot register {getattr(fn, '__qualname__', fn)!r} from __main__: a worker imports jobs by "
            "module, and its __main__ is another program. Define the job in an importable module."
        )
    if name is not None:
        return check_job_name(name)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise InvalidJob(f"@job cannot name {fn!r:.80}: it has no module and qualified name; pass name=....")
    path = f"{module}.{qualname}"
    if not all(part.isidentifier() for part in path.split(".")):
        raise InvalidJob(
            f"@job cannot register {path}: a job must be importable by its dotted path (not a lambda or a "
            "function defined inside another function); define it at module level, or pass name=... and "
            "register it when its module is imported."
        )
    return check_job_name(path)


def _exception_classes(label: str, value: Any) -> tuple[type[BaseException], ...]:
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidJob(f"{label} non_retryable must list exception classes, got {value!r}.")
    classes = tuple(value)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise InvalidJob(f"{label} non_retryable must list exception classes, got {cls!r}.")
    return classes


def _plain_arity(signature: inspect.Signature | None, pass_context: bool) -> int | None:
    """For a function of plain required parameters only, how many positional arguments it takes (so
    a call with exactly that many needs no Signature.bind); else None."""
    if signature is None:
        return None
    parameters = list(signature.parameters.values())
    if any(p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is not p.empty for p in parameters):
        return None
    return len(parameters) - (1 if pass_context else 0)


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """The function's own signature (not a wrapped one's: a decorator may supply arguments), if it has one."""
    try:
        return inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None
