"""Batches and workflows with real worker processes: a DAG of 1,000 jobs over two processes runs in
dependency order; a batch's callbacks run once across two supervisors while a worker is SIGKILLed."""

from __future__ import annotations

import os
import signal

import pytest

import pgqueue
from pgqueue.models import Batch, Job
from tests.conftest import wait_for
from tests.testapp import jobs
from tests.testapp.models import Mark

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def dag() -> dict[str, list[str]]:
    """1,000 steps: a root fans out to 30 steps, each fanning out to 32 (960); 9 steps fan in, each
    waiting for 120 of those (and the last for all 30 of the middle row too)."""
    graph: dict[str, list[str]] = {"root": []}
    middle = [f"m{i}" for i in range(30)]
    for m in middle:
        graph[m] = ["root"]
    leaves = [f"{m}.{j}" for m in middle for j in range(32)]
    for leaf in leaves:
        graph[leaf] = [leaf.split(".")[0]]
    for k in range(8):
        graph[f"join{k}"] = leaves[k * 120:(k + 1) * 120]
    graph["end"] = [f"join{k}" for k in range(8)] + middle
    assert len(graph) == 1000
    return graph


def test_a_dag_of_1000_jobs_runs_in_dependency_order_over_two_processes(start_worker) -> None:
    graph = dag()
    handles = pgqueue.enqueue_workflow({
        name: jobs.mark.options(depends_on=parents).call(name) if parents else jobs.mark.call(name)
        for name, parents in graph.items()
    })
    assert Job.objects.filter(state="waiting").count() == 999
    start_worker("--queues", "marks", "--processes", "2", "--concurrency", "8")
    wait_for(lambda: Job.objects.filter(state="succeeded").count() == 1000, timeout=180, what="the DAG")
    marks = {m.label: m for m in Mark.objects.all()}
    assert len(marks) == 1000 and Mark.objects.count() == 1000  # each step ran once
    finished = dict(Job.objects.values_list("id", "finished_at"))
    for name, parents in graph.items():
        for parent in parents:  # every step started after each step it depends on had finished
            assert marks[name].created_at > finished[handles[parent].id], (name, parent)
    assert len({m.pid for m in marks.values()}) == 2  # both processes took part


def test_a_batch_calls_back_once_across_two_supervisors_and_a_sigkilled_worker(start_worker) -> None:
    with pgqueue.batch(on_success=jobs.batch_callback.call("success"), on_finish=jobs.batch_callback.call("finish"),
                       description="killed halfway") as batch:
        jobs.mark.enqueue_many([(f"b{i}", 0.02) for i in range(300)])
    start_worker("--queues", "marks", "--concurrency", "4")
    start_worker("--queues", "marks", "--concurrency", "4")
    victim = wait_for(lambda: Mark.objects.filter(label__startswith="b").count() >= 100 and Mark.objects.first(),
                      timeout=60, what="a third of the batch")
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: Job.objects.filter(callback_of_id=batch.id, state="succeeded").count() >= 2, timeout=120,
             what="the callbacks")
    assert Job.objects.filter(batch_id=batch.id, state="succeeded").count() == 300
    row = Batch.objects.get(pk=batch.id)
    assert row.succeeded_at and row.finished_at and row.failed_at is None
    callbacks = list(Job.objects.filter(callback_of_id=batch.id).values_list("args", "state"))
    assert sorted(callbacks) == [(["finish"], "succeeded"), (["success"], "succeeded")]
    assert sorted(Mark.objects.filter(label__in=["success", "finish"]).values_list("label", "job_id")) == [
        ("finish", batch.id), ("success", batch.id)]
    assert Job.objects.filter(batch_id=batch.id, attempts__gt=1).exists()  # the kill cost some jobs an attempt


def test_a_workflow_survives_a_sigkilled_worker_across_two_supervisors(start_worker) -> None:
    """Steps of a chain run on two supervisors; one worker is SIGKILLed while a step runs: the step runs
    again (at least once) and every step still starts after the step before it finished."""
    names = [f"s{i}" for i in range(12)]
    handles = pgqueue.enqueue_workflow({
        name: (jobs.mark.options(depends_on=[names[i - 1]]) if i else jobs.mark).call(name, 0.3)
        for i, name in enumerate(names)
    })
    start_worker("--queues", "marks", "--concurrency", "2")
    start_worker("--queues", "marks", "--concurrency", "2", "--no-maintenance")
    victim = wait_for(lambda: Mark.objects.filter(label="s3").first(), timeout=60, what="step s3 to start")
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: Job.objects.filter(id=handles["s11"].id, state="succeeded").exists(), timeout=120,
             what="the last step")
    assert set(Job.objects.filter(id__in=[h.id for h in handles.values()]).values_list("state", flat=True)) == {
        "succeeded"}
    assert Job.objects.get(pk=handles["s3"].id).attempts == 2  # the killed attempt, and its rerun
    finished = dict(Job.objects.values_list("id", "finished_at"))
    for before, after in zip(names, names[1:], strict=False):
        first_start = Mark.objects.filter(label=after).order_by("created_at").first()
        assert first_start.created_at > finished[handles[before].id], (before, after)
