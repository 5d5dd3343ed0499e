"""The import path the 0.1 docs gave for batches; they live in pgqueue.enqueuing.batches."""

from pgqueue.enqueuing.batches import Batch, BatchProgress, batch

__all__ = ["Batch", "BatchProgress", "batch"]
