"""pgqueue.logs, the documented import path of pgqueue.ops.logs (where the code lives): its public names."""

from pgqueue.ops.logs import *  # noqa: F403
