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

# loop last ran, earliest job deadline (time.monotonic(): one clock per host), 1.0 once it asks to be replaced
_LAYOUT = struct.Struct("ddd")
STALL_GRACE = 5.0  # seconds past a deadline with no sign of the loop before the supervisor kills the process


class Beacon:
    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _LAYOUT.size)  # anonymous and shared: the forked child writes, we read
        self._replace = 0.0
        self.show(0.0, math.inf)

    def show(self, clock: float, deadline: float) -> None:
        """From the worker's loop: it ran at `clock`; its earliest job deadline is `deadline` (inf: none)."""
        _LAYOUT.pack_into(self._memory, 0, clock, deadline, self._replace)

    def ask_replacement(self) -> None:
        """From the worker: a job is stuck past its timeout and this process will exit once it can; start
        its replacement now, so the stuck job's retry and new jobs do not wait for it to drain."""
        self._replace = 1.0
        struct.pack_into("d", self._memory, 16, 1.0)

    def stalled(self, clock: float) -> bool:
        """From the supervisor: a deadline passed STALL_GRACE seconds ago and the loop has not run since."""
        seen, deadline, _ = _LAYOUT.unpack_from(self._memory, 0)
        return bool(seen < deadline and deadline + STALL_GRACE < clock)

    def wants_replacement(self) -> bool:
        """From the supervisor: the worker asked for its replacement to start now."""
        return bool(_LAYOUT.unpack_from(self._memory, 0)[2] == 1.0)

    def close(self) -> None:
        self._memory.close()
