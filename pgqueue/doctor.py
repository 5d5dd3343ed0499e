"""pgqueue.doctor, the documented import path of pgqueue.ops.doctor (where the code lives): its public names."""

from pgqueue.ops.doctor import *  # noqa: F403
