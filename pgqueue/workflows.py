"""The import path the 0.1 docs gave for workflows; they live in pgqueue.enqueuing.workflows."""

from pgqueue.enqueuing.workflows import STEPS_MAX, enqueue_workflow

__all__ = ["STEPS_MAX", "enqueue_workflow"]
