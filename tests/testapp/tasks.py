"""django.tasks tasks (Django 6.0+) that the tests enqueue on pgqueue's backend; they record what ran in Mark."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from django.tasks import task
from django.tasks.signals import task_finished, task_started

from pgqueue.tasks import task as pgqueue_task
from tests.testapp.models import Mark


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(takes_context=True)
def with_context(context, label: str) -> dict:
    result = context.task_result
    Mark.objects.create(label=label, job_id=int(result.id), attempt=context.attempt, pid=os.getpid())
    if label.startswith("fail-first") and context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": context.attempt, "id": result.id, "workers": result.worker_ids,
            "errors": [e.exception_class_path for e in result.errors], "status": result.status}


@task
def fails(message: str) -> None:
    raise ValueError(message)


@task
def complex_value() -> dict:
    return {"tuple": (1, 2), "nested": [{"a": (3,)}], "none": None, "text": "é"}


@task
def mark(label: str, sleep: float = 0.0) -> int:
    Mark.objects.create(label=label, pid=os.getpid())
    if sleep:
        time.sleep(sleep)
    Mark.objects.create(label=f"{label}:done", pid=os.getpid())
    return os.getpid()


@task
def escapes(kind: str) -> None:
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


@task(priority=10, queue_name="tasks-b")
def urgent(label: str) -> str:
    Mark.objects.create(label=label, pid=os.getpid())
    return label


@pgqueue_task(max_attempts=2, retry_backoff=0)
def retried(label: str) -> int:
    from pgqueue import current_job

    ctx = current_job()
    Mark.objects.create(label=label, attempt=ctx.attempt if ctx else None)
    if ctx is not None and ctx.attempt == 1:
        raise RuntimeError("try again")
    return ctx.attempt if ctx else 0


def _record(signal_name: str):
    def receiver(sender, task_result, **kwargs):
        if task_result.task.name == "signalled":
            Mark.objects.create(label=f"{signal_name}:{task_result.status}", job_id=int(task_result.id))
    return receiver


def _raising(sender, task_result, **kwargs):
    if task_result.task.name == "signalled":
        raise RuntimeError("a receiver that raises")


record_started = _record("started")
record_finished = _record("finished")
task_started.connect(record_started)
task_finished.connect(record_finished)
task_started.connect(_raising)
task_finished.connect(_raising)


@task
def signalled(ok: bool) -> str:
    if not ok:
        raise ValueError("signalled failure")
    return "ok"


@task(backend="immediate")
def elsewhere(x: int) -> int:
    """A task of Django's immediate backend, moved onto pgqueue's with .using(backend=...)."""
    return x * 2


@task(takes_context=True)
async def async_context(context, fail: bool) -> list:
    """An async task that says which errors its context carries (none on a first attempt)."""
    if fail:
        raise ValueError("async failure")
    return [e.exception_class_path for e in context.task_result.errors]
