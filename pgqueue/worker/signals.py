"""Signal handling by self-pipe: handlers only record the signal and wake the loop."""

from __future__ import annotations

import os
import signal
from collections import deque


class SignalPipe:
    """Install handlers that append the signal number to a queue and write a byte to a pipe."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.received: deque[int] = deque()
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        self.wake()

    def wake(self) -> None:
        """Wake the loop (safe from signal handlers and other threads)."""
        try:
            os.write(self.write_fd, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is already due to wake

    def drain(self) -> list[int]:
        """Empty the pipe; return the signals received since the last call."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        signals = []
        while self.received:
            signals.append(self.received.popleft())
        return signals

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def reset_to_default(signals: tuple[int, ...]) -> None:
    for sig in signals:
        signal.signal(sig, signal.SIG_DFL)
