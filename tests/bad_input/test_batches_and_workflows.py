"""Bad batch, dependency and workflow input: refused with InvalidJob and a precise message, and nothing
written (no job, no batch, no dependency, no job marked as having dependents)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from pgqueue import job
from pgqueue.exceptions import InvalidJob
from pgqueue.models import Batch, Dependency, Job
from tests.bad_input.conftest import Refused
from tests.testapp import jobs

MARK = "Job tests.testapp.jobs.mark:"


def target(x: int) -> None: ...


def enqueue_in(batch_id: int) -> Callable[[], Any]:
    def action() -> Any:
        with pgqueue.Batch(batch_id):
            return jobs.mark.enqueue("x")
    return action


CASES: list[tuple[str, str, Callable[[], Any]]] = [
    ("callback not a call", "Batch on_success must be a call built with fn.call(...), got a JobFunction.",
     lambda: pgqueue.Batch.open(on_success=jobs.batch_callback)),
    ("callback with a delay", "Batch on_finish (tests.testapp.jobs.batch_callback): a callback is enqueued when its "
     "moment comes; it takes no run_at or delay, uniqueness, idempotency, concurrency or rate keys, or dependencies.",
     lambda: pgqueue.Batch.open(on_finish=jobs.batch_callback.options(delay=5).call("x"))),
    ("callback with a uniqueness key", "Batch on_failure (tests.testapp.jobs.unique_note): a callback is enqueued",
     lambda: pgqueue.batch(on_failure=jobs.unique_note.call("x")).__enter__()),
    ("callback arguments that do not fit", "Job tests.testapp.jobs.batch_callback: the arguments do not fit",
     lambda: pgqueue.Batch.open(on_success=jobs.batch_callback.call(1, 2, 3))),
    ("description not text", "A batch description must be a string, got 5.",
     lambda: pgqueue.Batch.open(description=5)),  # type: ignore[arg-type]
    ("description too long", "A batch description is at most 255 characters, got 256.",
     lambda: pgqueue.Batch.open(description="x" * 256)),
    ("description with NUL", "A batch description contains the control character U+0000.",
     lambda: pgqueue.Batch.open(description="a\x00b")),
    ("batch id as text", "A batch id must be an integer from 1 to 9223372036854775807, got '1'.",
     lambda: pgqueue.Batch("1")),  # type: ignore[arg-type]
    ("batch id zero", "A batch id must be an integer from 1 to 9223372036854775807, got 0.", lambda: pgqueue.Batch(0)),
    ("batch id a bool", "A batch id must be an integer", lambda: pgqueue.Batch(True)),
    ("enqueue into an unknown batch", "Batch 424242 does not exist (not committed yet, or rolled back).",
     enqueue_in(424242)),
    ("close an unknown batch", "Batch 424242 does not exist", lambda: pgqueue.Batch(424242).close()),
    ("cancel an unknown batch", "Batch 424242 does not exist.", lambda: pgqueue.Batch(424242).cancel()),
    ("progress of an unknown batch", "Batch 424242 does not exist.", lambda: pgqueue.Batch(424242).progress()),
    ("get an unknown batch", "Batch 424242 does not exist.", lambda: pgqueue.Batch.get(424242)),
    ("depends_on an int", f"{MARK} depends_on must be a list of job handles, job ids or workflow step names, got 5.",
     lambda: jobs.mark.options(depends_on=5)),
    ("depends_on a string", f"{MARK} depends_on must be a list of job handles, job ids or workflow step names, "
     "got 'fetch'.", lambda: jobs.mark.options(depends_on="fetch")),
    ("depends_on a dict", f"{MARK} depends_on must be a list", lambda: jobs.mark.options(depends_on={1: 2})),
    ("depends_on a bool", f"{MARK} depends_on items must be job handles, job ids or workflow step names, got True.",
     lambda: jobs.mark.options(depends_on=[True])),
    ("depends_on None", f"{MARK} depends_on items must be job handles, job ids or workflow step names, got None.",
     lambda: jobs.mark.options(depends_on=[None])),
    ("depends_on a float", f"{MARK} depends_on items must be", lambda: jobs.mark.options(depends_on=[1.5])),
    ("depends_on id 0", f"{MARK} depends_on: job id 0 is out of range (1 to 9223372036854775807).",
     lambda: jobs.mark.options(depends_on=[0])),
    ("depends_on id beyond bigint", f"{MARK} depends_on: job id 9223372036854775808 is out of range",
     lambda: jobs.mark.options(depends_on=[2**63])),
    ("depends_on an empty name", f"{MARK} depends_on: a workflow step name must not be empty.",
     lambda: jobs.mark.options(depends_on=[""])),
    ("too many dependencies", f"{MARK} depends_on lists 1001 jobs, over the limit of 1000.",
     lambda: jobs.mark.options(depends_on=list(range(1, 1002)))),
    ("60,000 dependencies, each twice (counted once each, in one pass)",
     f"{MARK} depends_on lists 60000 jobs, over the limit of 1000.",
     lambda: jobs.mark.options(depends_on=[*range(1, 60_001), *range(60_000, 0, -1)])),
    ("on_dependency_failure unknown", f"{MARK} on_dependency_failure must be 'cancel' or 'run', got 'skip'.",
     lambda: jobs.mark.options(on_dependency_failure="skip")),
    ("on_dependency_failure at declaration", "@job tests.bad_input.test_batches_and_workflows.target: "
     "on_dependency_failure must be 'cancel' or 'run', got 'ignore'.",
     lambda: job(on_dependency_failure="ignore")(target)),
    ("an unknown job", "Job tests.testapp.jobs.mark: depends on job 987654, which does not exist (not committed yet, "
     "rolled back, or pruned).", lambda: jobs.mark.options(depends_on=[987654]).enqueue("x")),
    ("an unknown job among good calls", "Job tests.testapp.jobs.mark: depends on job 987654",
     lambda: pgqueue.enqueue_many([jobs.mark.call("a"), jobs.mark.options(depends_on=[987654]).call("b")])),
    ("a step name outside a workflow", "Job tests.testapp.jobs.mark: depends_on names 'fetch', a workflow step, "
     "outside pgqueue.enqueue_workflow(); give job handles or ids.",
     lambda: jobs.mark.options(depends_on=["fetch"]).enqueue("x")),
    ("workflow not a dict", "pgqueue.enqueue_workflow() takes a dict of step name -> call, got a list.",
     lambda: pgqueue.enqueue_workflow([jobs.mark.call("a")])),  # type: ignore[arg-type]
    ("workflow step name not text", "A workflow step name must be a non-empty string, got 1.",
     lambda: pgqueue.enqueue_workflow({1: jobs.mark.call("a")})),  # type: ignore[dict-item]
    ("workflow step name with NUL", "Workflow step name 'a\\x00' contains the control character U+0000.",
     lambda: pgqueue.enqueue_workflow({"a\x00": jobs.mark.call("a")})),
    ("workflow step name too long", "A workflow step name is at most 200 characters, got 201.",
     lambda: pgqueue.enqueue_workflow({"s" * 201: jobs.mark.call("a")})),
    ("workflow step not a call", "Workflow step 'a' is a JobFunction; build steps with fn.call(...)",
     lambda: pgqueue.enqueue_workflow({"a": jobs.mark})),  # type: ignore[dict-item]
    ("workflow unknown step", "Workflow step 'b' depends on 'c', which is not a step of this workflow (steps: 'a', 'b').",
     lambda: pgqueue.enqueue_workflow({"a": jobs.mark.call("a"), "b": jobs.mark.options(depends_on=["c"]).call("b")})),
    ("workflow cycle", "Workflow steps depend on each other in a cycle: 'a' -> 'b' -> 'a'.",
     lambda: pgqueue.enqueue_workflow({"a": jobs.mark.options(depends_on=["b"]).call("a"),
                                       "b": jobs.mark.options(depends_on=["a"]).call("b")})),
    ("workflow step depending on itself", "Workflow steps depend on each other in a cycle: 'a' -> 'a'.",
     lambda: pgqueue.enqueue_workflow({"a": jobs.mark.options(depends_on=["a"]).call("a")})),
    ("workflow step with a uniqueness key", "A workflow step cannot take a uniqueness or idempotency key",
     lambda: pgqueue.enqueue_workflow({"a": jobs.unique_note.call("a")})),
    ("workflow step depending on an unknown job", "Job tests.testapp.jobs.mark: depends on job 987654",
     lambda: pgqueue.enqueue_workflow({"a": jobs.mark.call("a"), "b": jobs.mark.options(depends_on=[987654, "a"]).call("b")})),
]


@pytest.mark.parametrize(("message", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_and_nothing_written(refused: Refused, message: str, action: Callable[[], Any]) -> None:
    refused(InvalidJob, message, action)
    assert not Batch.objects.exists() and not Dependency.objects.exists()


def test_adding_to_a_closed_or_cancelled_batch_writes_nothing(refused: Refused) -> None:
    closed = pgqueue.Batch.open()
    closed.close()
    refused(InvalidJob, f"Batch {closed.id} is closed: it cannot be given jobs (its callbacks may have fired).",
            enqueue_in(closed.id))
    cancelled = pgqueue.Batch.open()
    cancelled.cancel()
    refused(InvalidJob, f"Batch {cancelled.id} is cancelled: it cannot be given jobs.", enqueue_in(cancelled.id))
    refused(InvalidJob, f"Batch {closed.id} is closed: it cannot be closed", closed.close)


def test_a_refused_dependent_leaves_its_parent_unmarked(refused: Refused) -> None:
    parent = jobs.mark.enqueue("parent")
    with pytest.raises(InvalidJob, match="depends on job 987654"):
        pgqueue.enqueue_many([jobs.mark.options(depends_on=[parent]).call("a"),
                              jobs.mark.options(depends_on=[parent, 987654]).call("b")])
    assert list(Job.objects.values_list("id", "has_dependents")) == [(parent.id, False)]
    assert not Dependency.objects.exists()


def test_a_handle_from_another_database_is_not_taken_for_a_job_of_this_one(refused: Refused) -> None:
    """Issue #18, class 6: a handle's id named an unrelated job with the same id on pgqueue's database."""
    here = jobs.mark.enqueue("here")
    assert here.database == "default"
    elsewhere = pgqueue.JobHandle(id=here.id, task="tests.testapp.jobs.mark", queue="marks", database="other")
    Job.objects.all().delete()
    refused(InvalidJob, f"{MARK} depends_on: job {here.id} was enqueued on database 'other', and this job goes to "
            "'default', where that id names another job or none.",
            lambda: jobs.mark.options(depends_on=[elsewhere]).enqueue("child"))
    assert not Dependency.objects.exists()
