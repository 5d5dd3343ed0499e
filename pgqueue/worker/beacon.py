"""What a worker's loop shows its supervisor, in memory they share across the fork: when the loop last ran
and the earliest deadline of the jobs it runs.

A job that holds the interpreter lock starves every other thread of its process: the heartbeat and the
loop that enforces timeouts. The supervisor (which runs no jobs) keeps such a worker's leases alive, since
the process may still be running the job; the beacon lets it see a loop that has not run since a deadline
passed, and end that process so the timeout holds."""

from __future__ import annotations

import math
import mmap
import struct

_LAYOUT = struct.Struct("dd")  # loop last ran, earliest job deadline (time.monotonic(): one clock per host)
STALL_GRACE = 5.0  # seconds past a deadline with no sign of the loop before the supervisor kills the process


class Beacon:
    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _LAYOUT.size)  # anonymous and shared: the forked child writes, we read
        self.show(0.0, math.inf)

    def show(self, clock: float, deadline: float) -> None:
        """From the worker's loop: it ran at `clock`; its earliest job deadline is `deadline` (inf: none)."""
        _LAYOUT.pack_into(self._memory, 0, clock, deadline)

    def stalled(self, clock: float) -> bool:
        """From the supervisor: a deadline passed STALL_GRACE seconds ago and the loop has not run since."""
        seen, deadline = _LAYOUT.unpack_from(self._memory, 0)
        return seen < deadline and deadline + STALL_GRACE < clock

    def close(self) -> None:
        self._memory.close()
