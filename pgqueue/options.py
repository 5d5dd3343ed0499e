"""The import path the 0.1 docs gave for JobCall, JobOptions and the option limits; they live in
pgqueue.enqueuing.options."""

from pgqueue.enqueuing.options import DEPENDENCIES_MAX, JobCall, JobOptions

__all__ = ["DEPENDENCIES_MAX", "JobCall", "JobOptions"]
