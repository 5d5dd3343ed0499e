"""pgqueue.retention, the documented import path of pgqueue.ops.retention (where the code lives): its public names."""

from pgqueue.ops.retention import *  # noqa: F403
