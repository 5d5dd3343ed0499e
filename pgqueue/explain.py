"""pgqueue.explain, the documented import path of pgqueue.ops.explain (where the code lives): its public names."""

from pgqueue.ops.explain import *  # noqa: F403
