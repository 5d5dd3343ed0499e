"""pgqueue as a django.tasks backend (Django 6.0 and later): code written with @task runs on pgqueue unchanged.

    TASKS = {"default": {"BACKEND": "pgqueue.tasks.PgQueueBackend", "QUEUES": ["default", "emails"],
                         "OPTIONS": {"max_attempts": 5, "timeout": 60}}}

A task is a pgqueue job named by the task's module_path: enqueue writes it in the caller's transaction by
pgqueue's own rule, `pgqueue_worker` runs it beside @job jobs (leases, retries, timeouts, rescue, the
admin), and get_result reads the job row and its attempts back as a TaskResult. docs/django-tasks.md
has the status and field table and the options a task may carry."""

from __future__ import annotations

import django
from django.core.exceptions import ImproperlyConfigured

if django.VERSION < (6, 0):
    raise ImproperlyConfigured(
        f"pgqueue.tasks (the django.tasks backend) needs Django 6.0 or later; this is Django {django.get_version()}. "
        "The rest of pgqueue works on Django 5.2: declare jobs with @pgqueue.job there."
    )

import dataclasses
import datetime as dt
import inspect
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import sync_to_async
from django.apps import apps
from django.core import checks
from django.db import connections
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from pgqueue.conf import get_settings
from pgqueue.context import JobContext
from pgqueue.enqueuing import registry
from pgqueue.enqueuing.decorator import JobFunction, _plain_arity, _signature, make_job
from pgqueue.enqueuing.insert import enqueue_calls
from pgqueue.enqueuing.options import JOB_ID_MAX, NO_OPTIONS, JobCall, JobOptions
from pgqueue.exceptions import InvalidJob

if TYPE_CHECKING:  # django-stubs makes them generic; Django's classes are not
    AnyTask = Task[Any, Any]
    AnyResult = TaskResult[Any, Any]
else:
    AnyTask = Task
    AnyResult = TaskResult

__all__ = ["PgQueueBackend", "PgQueueInvalidTask", "PgQueueTask", "STATUS", "task"]

# pgqueue's options a task may carry (@task(...) on Django 6.1, pgqueue.tasks.task(...) on 6.0 and later, or
# the backend's OPTIONS for all its tasks); what each does: pgqueue.job's documentation.
TASK_OPTIONS = ("max_attempts", "timeout", "retry_backoff", "retry_backoff_max", "retry_jitter", "non_retryable",
                "unique", "concurrency_key", "concurrency_limit", "ordering_key", "ordering_retry", "rate_key",
                "rate_limit", "rate_window")

# A job's state as a task's status: everything that may still run is READY, dead and cancelled are FAILED.
STATUS = {
    "waiting": TaskResultStatus.READY,
    "blocked": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "ready": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "dead": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


class PgQueueInvalidTask(InvalidTask, InvalidJob):
    """A task, its options or a call of it refused by pgqueue (nothing was written): both django.tasks'
    InvalidTask and pgqueue's InvalidJob, with pgqueue's message."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PgQueueTask(Task):  # type: ignore[type-arg]
    """The backend's task_class: a Task with pgqueue's options (None: the backend's OPTIONS, then pgqueue's
    settings). On Django 6.1 @task(max_attempts=5, ...) fills them; pgqueue.tasks.task(...) on any 6.x."""

    max_attempts: int | None = None
    timeout: float | None = None
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    retry_jitter: float | None = None
    non_retryable: Any = None
    unique: Any = None
    concurrency_key: Any = None
    concurrency_limit: int | None = None
    ordering_key: Any = None
    ordering_retry: Any = None
    rate_key: Any = None
    rate_limit: int | None = None
    rate_window: float | None = None


def task(function: Callable[..., Any] | None = None, *, priority: int = 0, queue_name: str = "default",
         backend: str = "default", takes_context: bool = False, **options: Any) -> Any:
    """django.tasks' @task with pgqueue's options on every Django 6.x (Django 6.0's @task takes none):
    @pgqueue.tasks.task(max_attempts=5, timeout=30). The backend must be pgqueue's."""
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise TypeError(f"pgqueue.tasks.task() got unknown option(s) {', '.join(unknown)}; pgqueue's task options "
                        f"are {', '.join(TASK_OPTIONS)}.")
    from django.tasks import task_backends

    def wrapper(func: Callable[..., Any]) -> AnyTask:
        task_class = task_backends[backend].task_class
        if not issubclass(task_class, PgQueueTask):
            raise PgQueueInvalidTask(f"pgqueue.tasks.task(): TASKS[{backend!r}] is not pgqueue's backend "
                                     "(pgqueue.tasks.PgQueueBackend), so it cannot take pgqueue's options.")
        made: AnyTask = task_class(func=func, priority=priority, queue_name=queue_name, backend=backend,
                                takes_context=takes_context, run_after=None, **options)
        return made

    return wrapper(function) if function is not None else wrapper


class TaskJob(JobFunction):
    """A Task as pgqueue's worker runs it: `func` is a runner that gives the task Django's semantics (a
    TaskContext, the task_started and task_finished signals, a JSON-normalised return value); the
    arguments are checked against the task's own function."""

    def __init__(self, func: Callable[..., Any], *, task: AnyTask, backend: str, settings_key: tuple[Any, ...],
                 **options: Any) -> None:
        super().__init__(func, **options)
        self.task = task
        self.backend_alias = backend
        self.settings_key = settings_key  # the pgqueue options it was made with
        self.takes_context = task.takes_context
        self.signature = _signature(task.func)
        self._arity = _plain_arity(self.signature, task.takes_context)
        self.__name__ = task.func.__name__
        self.__qualname__ = task.func.__qualname__
        self.__module__ = task.func.__module__
        self.__doc__ = task.func.__doc__

    def __repr__(self) -> str:
        return f"<task {self.name}>"


class PgQueueBackend(BaseTaskBackend):
    """TASKS = {"default": {"BACKEND": "pgqueue.tasks.PgQueueBackend", "QUEUES": [...], "OPTIONS": {...}}}.
    OPTIONS holds pgqueue's task options (TASK_OPTIONS) as defaults for every task of this backend."""

    task_class = PgQueueTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        where = f"TASKS[{alias!r}]['OPTIONS']"
        if not isinstance(self.options, dict):
            raise ImproperlyConfigured(f"{where} must be a dict of pgqueue's task options, got {self.options!r}.")
        unknown = sorted(set(self.options) - set(TASK_OPTIONS))
        if unknown:
            raise ImproperlyConfigured(f"{where} has unknown option(s) {', '.join(unknown)}; pgqueue's task options "
                                       f"are {', '.join(TASK_OPTIONS)}.")
        try:
            make_job(_nothing, "pgqueue.tasks.options", label=f"{where}:", **self.options)
        except InvalidJob as exc:
            raise ImproperlyConfigured(str(exc)) from None
        self._jobs: dict[int, tuple[AnyTask, TaskJob]] = {}  # id(task) -> (task, its job): tasks seen before
        self._lock = threading.Lock()

    # -- tasks ----------------------------------------------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        """Django's rules, then pgqueue's for the task's options (messages naming "@task <path>:")."""
        super().validate_task(task)
        self.job_for(task)

    def job_for(self, task: AnyTask) -> TaskJob:
        """The pgqueue job that runs `task` (made, checked and registered under its module_path once)."""
        seen = self._jobs.get(id(task))
        if seen is not None and seen[0] is task and registry.is_registered(seen[1]):
            return seen[1]  # (another backend with other OPTIONS may have registered its own job since)
        options = {**self.options, **_task_options(task)}
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        current = registry.registered().get(task.module_path)
        if isinstance(current, TaskJob) and current.task.func is task.func and current.settings_key == key:
            job = current
        else:
            label = f"@task {task.module_path}:"
            try:
                made = make_job(_runner(task, self.alias), task.module_path, label=label, job_class=TaskJob,
                                extra={"task": task, "backend": self.alias, "settings_key": key},
                                queue=task.queue_name, priority=task.priority, pass_context=True, **options)
                job = cast(TaskJob, made)
            except InvalidJob as exc:
                raise PgQueueInvalidTask(str(exc)) from None
            registry.register(job)
        with self._lock:
            if len(self._jobs) > 10_000:  # copies made by .using() come and go: keep the cache bounded
                self._jobs.clear()
            self._jobs[id(task)] = (task, job)
        return job

    # -- enqueue --------------------------------------------------------------------------------------

    def enqueue(self, task: AnyTask, args: Iterable[Any], kwargs: dict[str, Any]) -> AnyResult:
        """Write the job in the caller's transaction (pgqueue.enqueue's rule: pgqueue's database inside
        its open transaction; another database's open transaction: after it commits)."""
        job = self.job_for(task)  # validated when the Task was made; a new object is checked here
        args = tuple(args)
        try:  # what TaskResult will hold, checked before anything is written
            normalize_json(args)
            normalize_json(kwargs)
        except (TypeError, ValueError) as exc:
            raise PgQueueInvalidTask(f"@task {task.module_path}: its arguments cannot be stored as JSON ({exc}).") \
                from None
        if task.queue_name == job.queue and task.priority == job.priority and task.run_after is None:
            options = NO_OPTIONS
        else:
            options = JobOptions(queue=task.queue_name, priority=task.priority, run_at=task.run_after)
        try:
            handle = enqueue_calls([JobCall(job=job, args=args, kwargs=dict(kwargs), options=options)])[0]
        except InvalidJob as exc:
            raise PgQueueInvalidTask(str(exc)) from None
        result: AnyResult = TaskResult(task=task, id=str(handle.id), status=TaskResultStatus.READY, enqueued_at=timezone.now(),
                            started_at=None, finished_at=None, last_attempted_at=None, args=list(args),
                            kwargs=dict(kwargs), backend=self.alias, errors=[], worker_ids=[])
        task_enqueued.send_robust(type(self), task_result=result)  # a raising receiver does not undo the enqueue
        return result

    # -- results --------------------------------------------------------------------------------------

    def get_result(self, result_id: Any) -> AnyResult:
        """The task's result as pgqueue's history has it now; TaskResultDoesNotExist for an id that names no
        task of this backend (not a job id, no such job, or a @job's)."""
        job_id = _job_id(result_id)
        from pgqueue.models import Job

        alias = get_settings().DATABASE
        row = Job.objects.using(alias).filter(pk=job_id).values(
            "task", "queue", "priority", "state", "args", "kwargs", "result", "created_at", "started_at",
            "finished_at", "leased_by").first() if job_id is not None else None
        if row is None or job_id is None:
            raise TaskResultDoesNotExist(f"No task result with id {result_id!r:.100}.")
        task = self._task_at(row["task"], row["queue"], row["priority"])
        if task is None:
            raise TaskResultDoesNotExist(f"Job {job_id} is not a task of backend {self.alias!r} ({row['task']}).")
        errors, workers, first_started = history(alias, job_id)
        if row["state"] == "running" and row["leased_by"]:
            workers.append(row["leased_by"])  # the attempt under way: its row is written when it ends
        status = STATUS[row["state"]]
        result: AnyResult = TaskResult(task=task, id=str(job_id), status=status, enqueued_at=row["created_at"],
                            started_at=first_started or row["started_at"],
                            finished_at=row["finished_at"] if status in FINISHED else None,
                            last_attempted_at=row["started_at"], args=row["args"], kwargs=row["kwargs"],
                            backend=self.alias, errors=errors, worker_ids=workers)
        if status is TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", row["result"])
        return result

    def _task_at(self, path: str, queue: str, priority: int) -> AnyTask | None:
        """The Task object at `path` (the one the job was enqueued with, as its module defines it), bound to
        this backend and to the job's queue and priority."""
        try:
            found = import_string(path)
        except Exception:  # gone since it was enqueued, or its module fails to import now
            return None
        if not isinstance(found, Task):
            return None
        changes = {k: v for k, v in (("backend", self.alias), ("queue_name", queue), ("priority", priority))
                   if getattr(found, k) != v}
        if not changes:
            return found
        try:
            return dataclasses.replace(found, **changes)  # type: ignore[arg-type]
        except InvalidTask:  # e.g. a queue no longer declared: the module's own Task still names the function
            return found

    # -- checks ---------------------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = list(super().check(**kwargs))
        if not apps.is_installed("pgqueue"):
            messages.append(checks.Error(
                f"TASKS[{self.alias!r}] uses pgqueue.tasks.PgQueueBackend, but 'pgqueue' is not in INSTALLED_APPS.",
                hint="Add 'pgqueue' to INSTALLED_APPS and run manage.py migrate.", id="pgqueue.E010"))
            return messages
        try:
            alias = get_settings().DATABASE
        except ImproperlyConfigured:
            return messages  # pgqueue's own checks report settings that do not parse (pgqueue.E001)
        vendor = connections[alias].vendor if alias in connections.settings else None
        if vendor != "postgresql":
            messages.append(checks.Error(
                f"TASKS[{self.alias!r}] uses pgqueue.tasks.PgQueueBackend, whose jobs live in database {alias!r} "
                f"(PGQUEUE['DATABASE']), and that is {vendor or 'not configured'}, not PostgreSQL.",
                hint="Point PGQUEUE['DATABASE'] at a PostgreSQL database in DATABASES.", id="pgqueue.E011"))
        return messages


FINISHED = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)


def _nothing() -> None:
    """The function the backend's OPTIONS are checked with."""


def _task_options(task: AnyTask) -> dict[str, Any]:
    """The pgqueue options a PgQueueTask sets (None: not set); a plain Task sets none."""
    if not isinstance(task, PgQueueTask):
        return {}
    return {name: getattr(task, name) for name in TASK_OPTIONS if getattr(task, name) is not None}


def _job_id(result_id: Any) -> int | None:
    """A result id as a job id: the decimal digits of 1 to 2**63 - 1 (anything else names no job)."""
    if isinstance(result_id, bool):
        return None
    if isinstance(result_id, int):
        text = str(result_id)
    elif isinstance(result_id, str):
        text = result_id
    else:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= JOB_ID_MAX else None


def _resolve(path: str) -> TaskJob | None:
    """The registry's fallback for a job name no @job or PgQueueTask registered: a Task defined for another
    backend (or as a plain django.tasks Task) and enqueued on this one with .using(backend=...)."""
    if "." not in path or not all(part.isidentifier() for part in path.split(".")):
        return None  # no dotted path of names: nothing to import (".x", "a b")
    try:
        found = import_string(path)
    except Exception:  # no such attribute, or a module that fails: the registry reports the job unknown
        return None
    if not isinstance(found, Task):
        return None
    from django.tasks import task_backends

    for backend in task_backends.all():
        if isinstance(backend, PgQueueBackend):
            return backend.job_for(found)
    return None


# -- in the worker -------------------------------------------------------------------------------------

def history(alias: str, job_id: int) -> tuple[list[TaskError], list[str], dt.datetime | None]:
    """From the job's attempt rows (handed-back ones left out, as in its attempt count): a TaskError for
    each attempt that did not succeed, the worker of each, and when the first began."""
    from pgqueue.models import Attempt

    errors, workers, first = [], [], None
    rows = Attempt.objects.using(alias).filter(job_id=job_id).exclude(outcome="released").order_by("number", "id")
    for outcome, worker, started, error_class, message, trace in rows.values_list(
            "outcome", "worker", "started_at", "error_class", "message", "traceback"):
        first = first or started
        workers.append(worker)
        if outcome != "succeeded":
            errors.append(TaskError(exception_class_path=_class_path(error_class or "Exception"),
                                    traceback=trace or message))
    return errors, workers, first


def _class_path(error_class: str) -> str:
    """An attempt's error class as an importable path: builtins are stored by their bare name."""
    return error_class if "." in error_class else f"builtins.{error_class}"


def _running(task: AnyTask, alias: str, ctx: JobContext, args: tuple[Any, ...], kwargs: dict[str, Any],
             past: tuple[list[TaskError], list[str], dt.datetime | None]) -> AnyResult:
    """The TaskResult of the attempt starting now (its worker appended: TaskContext.attempt counts from 1)."""
    leased = ctx._job
    started = leased.started_at if leased is not None else dt.datetime.now(dt.UTC)
    created = leased.created_at if leased is not None else None
    errors, workers, first = past
    return _as_stored(task=task, id=str(ctx.job_id), status=TaskResultStatus.RUNNING,
                      enqueued_at=dt.datetime.fromisoformat(created) if created else None,
                      started_at=first or started, finished_at=None, last_attempted_at=started, args=list(args),
                      kwargs=kwargs, backend=alias, errors=errors, worker_ids=[*workers, ctx.worker])


_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(TaskResult))


def _as_stored(**values: Any) -> AnyResult:
    """A TaskResult of arguments read back from the job's JSON, built without TaskResult.__post_init__: they
    already are what its normalize_json would make of them, and normalising them again was a quarter of
    what running a task cost the worker beyond a plain job (W1 through django.tasks)."""
    result: AnyResult = object.__new__(TaskResult)
    for name in _RESULT_FIELDS:
        object.__setattr__(result, name, values.get(name))
    return result


def _past(ctx: JobContext) -> tuple[list[TaskError], list[str], dt.datetime | None]:
    """Earlier attempts (read only for a retry: a first attempt has none)."""
    if ctx.attempt <= 1:
        return [], [], None
    return history(get_settings().DATABASE, ctx.job_id)


def _failed(result: AnyResult, exc: BaseException) -> None:
    kind = type(exc)
    result.errors.append(TaskError(exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                                   traceback="".join(traceback.format_exception(exc))))
    object.__setattr__(result, "status", TaskResultStatus.FAILED)
    object.__setattr__(result, "finished_at", dt.datetime.now(dt.UTC))


def _succeeded(result: AnyResult, value: Any) -> None:
    object.__setattr__(result, "_return_value", value)
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", dt.datetime.now(dt.UTC))


def _runner(task: AnyTask, alias: str) -> Callable[..., Any]:
    """The job function pgqueue's worker calls for `task` (with its JobContext first). task_finished is sent
    from inside the except block on failure (Django's log receiver records the traceback); receivers are
    called robustly: one that raises changes neither the outcome nor the job."""
    sender = PgQueueBackend
    if inspect.iscoroutinefunction(task.func):
        async def run_async(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
            # (fresh lists each time: the attempt's own error is appended to them)
            past = _past(ctx) if ctx.attempt <= 1 else await sync_to_async(_past)(ctx)
            result = _running(task, alias, ctx, args, kwargs, past)
            await task_started.asend_robust(sender, task_result=result)
            try:
                if task.takes_context:
                    raw = await task.func(TaskContext(task_result=result), *args, **kwargs)
                else:
                    raw = await task.func(*args, **kwargs)
                value = normalize_json(raw)
            except BaseException as exc:
                _failed(result, exc)
                await task_finished.asend_robust(sender, task_result=result)
                raise
            _succeeded(result, value)
            await task_finished.asend_robust(sender, task_result=result)
            return value

        return run_async

    def run(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
        result = _running(task, alias, ctx, args, kwargs, _past(ctx))
        task_started.send_robust(sender, task_result=result)
        try:
            if task.takes_context:
                raw = task.func(TaskContext(task_result=result), *args, **kwargs)
            else:
                raw = task.func(*args, **kwargs)
            value = normalize_json(raw)
        except BaseException as exc:
            _failed(result, exc)
            task_finished.send_robust(sender, task_result=result)
            raise
        _succeeded(result, value)
        task_finished.send_robust(sender, task_result=result)
        return value

    return run


registry.add_resolver(_resolve)  # a worker finds Tasks at their module_path, whichever backend made them
