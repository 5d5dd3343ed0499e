"""pgqueue.monitor, the documented import path of pgqueue.ops.monitor (where the code lives): its public names."""

from pgqueue.ops.monitor import *  # noqa: F403
