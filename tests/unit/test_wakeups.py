"""The wake-up pipe between a supervisor's LISTEN connection and its workers (--share-connections): payloads
by line, a line cut between two reads, a WAKE_ALL line wakes for everything, a full pipe is owed one, the
supervisor gone wakes once and stops."""

from __future__ import annotations

import os
import selectors
from collections.abc import Iterator

import pytest

from pgqueue.worker.wakeups import RATED, SUSPECTS, WAKE_ALL, Listener, Relay


@pytest.fixture
def piped() -> Iterator[tuple[Listener, int, selectors.BaseSelector]]:
    relay = Relay(None, "pgqueue")
    read_fd, write_fd = relay.pipe()
    selector = selectors.DefaultSelector()
    listener = Listener(selector, ("emails", "reports"), pipe=read_fd)
    yield listener, write_fd, selector
    selector.close()
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def woken(listener: Listener) -> tuple[bool, bool, bool]:
    wake = listener.read()
    return wake.work, wake.suspects, wake.rated


def test_payloads_name_our_queues_rated_jobs_and_suspects(piped) -> None:
    listener, write_fd, selector = piped
    assert listener.active and listener.ensure() and not listener.ensure()  # registered once
    assert selector.select(timeout=0) == []
    os.write(write_fd, b"other\n")
    assert woken(listener) == (False, False, False)  # another queue's work
    os.write(write_fd, b"emails\n")
    assert woken(listener) == (True, False, False)
    os.write(write_fd, f"{RATED}reports\n{SUSPECTS}emails\n".encode())
    assert woken(listener) == (True, True, True)
    assert woken(listener) == (False, False, False)  # nothing new: a spurious wake reads nothing


def test_a_line_cut_between_two_reads_is_read_whole(piped) -> None:
    listener, write_fd, _ = piped
    os.write(write_fd, b"other\nema")
    assert woken(listener) == (False, False, False)
    os.write(write_fd, b"ils\n")
    assert woken(listener) == (True, False, False)


def test_wake_all_wakes_for_everything_and_a_full_pipe_is_owed_one(piped) -> None:
    listener, write_fd, _ = piped
    os.write(write_fd, WAKE_ALL + b"\n")
    assert woken(listener) == (True, True, True)
    relay = Relay(None, "pgqueue")
    relay.add(1, write_fd)
    try:  # the worker reads nothing while its pipe fills up: lines of another queue, then to the last byte
        while True:
            os.write(write_fd, b"other\n" * 100)
    except BlockingIOError:
        pass
    try:
        while True:
            os.write(write_fd, b"\n")
    except BlockingIOError:
        pass
    relay.send(f"{SUSPECTS}emails\n".encode())  # dropped: no room
    relay.owed()  # still no room: still owed
    assert 1 in relay.overflowed
    assert woken(listener) == (False, False, False)  # the lines that fitted name another queue
    relay.owed()  # room again: the WAKE_ALL goes
    assert not relay.overflowed
    assert woken(listener) == (True, True, True)  # the suspect is looked for after all
    relay.writers.clear()  # the fixture closes the pipe


def test_the_supervisor_gone_wakes_once_and_the_pipe_is_left(piped) -> None:
    listener, write_fd, selector = piped
    listener.ensure()
    os.close(write_fd)
    assert woken(listener) == (True, True, True)
    assert listener.closed and listener.fd == -1 and not listener.ensure()
    assert selector.get_map() == {}


def test_without_a_pipe_the_worker_polls() -> None:
    listener = Listener(selectors.DefaultSelector(), ("emails",))
    assert not listener.active and not listener.ensure()
