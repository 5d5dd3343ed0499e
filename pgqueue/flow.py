"""The import path the 0.1 docs gave for flow control's public values; they live in pgqueue.enqueuing.flow."""

from pgqueue.enqueuing.flow import KeySpec, OnConflict, RetryOrder, Unique, Until

__all__ = ["KeySpec", "OnConflict", "RetryOrder", "Unique", "Until"]
