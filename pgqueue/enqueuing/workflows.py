"""Workflows: named steps enqueued together, each waiting for the steps (and existing jobs) it names in
depends_on; the graph is checked first (unknown names, cycles), then written in one transaction
(docs/workflows.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgqueue.enqueuing.handle import JobHandle
from pgqueue.enqueuing.insert import enqueue_calls
from pgqueue.enqueuing.options import JobCall, check_depends_on
from pgqueue.exceptions import InvalidJob
from pgqueue.text import a_type, short_repr, text_problem

STEPS_MAX = 100_000
STEP_NAME_MAX = 200


def enqueue_workflow(steps: Mapping[str, JobCall]) -> dict[str, JobHandle]:
    """Enqueue the steps of a workflow, {name: fn.options(depends_on=[...]).call(...)}, in the caller's
    transaction: a step's depends_on may name other steps as well as existing jobs (handles or ids). A step
    waits until all it depends on have succeeded; returns {name: handle}."""
    if not isinstance(steps, Mapping):
        raise InvalidJob(f"pgqueue.enqueue_workflow() takes a dict of step name -> call, got {a_type(steps)}.")
    if not steps:
        return {}
    if len(steps) > STEPS_MAX:
        raise InvalidJob(f"A workflow has at most {STEPS_MAX} steps, got {len(steps)}.")
    graph: dict[str, list[str]] = {}
    for name, call in steps.items():
        _check_name(name)
        if not isinstance(call, JobCall):
            raise InvalidJob(f"Workflow step {name!r} is {a_type(call)}; build steps with fn.call(...) or "
                             "fn.options(depends_on=[...]).call(...).")
        depends_on = call.options.depends_on
        named = check_depends_on(f"Workflow step {name!r}:", depends_on) if depends_on is not None else ()
        graph[name] = [d for d in named if isinstance(d, str)]
        for other in graph[name]:
            if other not in steps:
                raise InvalidJob(f"Workflow step {name!r} depends on {other!r}, which is not a step of this "
                                 f"workflow (steps: {', '.join(map(repr, list(steps)[:10]))}).")
    cycle = find_cycle(graph)
    if cycle:
        raise InvalidJob(f"Workflow steps depend on each other in a cycle: {' -> '.join(map(repr, cycle))}.")
    names = list(steps)
    handles = enqueue_calls([steps[n] for n in names], steps=names)
    return dict(zip(names, handles, strict=True))


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """A cycle of the graph {node: nodes it depends on} as [a, b, ..., a], or [] if it has none."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path: list[str] = []
        on_path: dict[str, int] = {}
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                if node in on_path:
                    return path[on_path[node]:] + [node]
                if node in done:
                    continue
                on_path[node] = len(path)
                path.append(node)
            edges = graph.get(node, [])
            if index < len(edges):
                stack.append((node, index + 1))
                stack.append((edges[index], 0))
            else:
                done.add(node)
                path.pop()
                del on_path[node]
    return []


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidJob(f"A workflow step name must be a non-empty string, got {short_repr(name)}.")
    if len(name) > STEP_NAME_MAX:
        raise InvalidJob(f"A workflow step name is at most {STEP_NAME_MAX} characters, got {len(name)}.")
    problem = text_problem(name)
    if problem is not None:
        raise InvalidJob(f"Workflow step name {short_repr(name)} {problem}.")
