"""pgqueue.metrics, the documented import path of pgqueue.ops.metrics (where the code lives): its public names."""

from pgqueue.ops.metrics import *  # noqa: F403
