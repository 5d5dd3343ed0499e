"""pgqueue.health, the documented import path of pgqueue.ops.health (where the code lives): its public names."""

from pgqueue.ops.health import *  # noqa: F403
