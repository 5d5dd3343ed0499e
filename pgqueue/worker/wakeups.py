"""Wake-ups: NOTIFYs on the notify channel tell workers that one of their queues got work. Each worker
LISTENs on a connection of its own, or (pgqueue_worker --share-connections) the supervisor listens once for
all its workers and passes each payload down a pipe to every worker it forked, so a supervisor holds one
listening connection instead of one per worker, for one more hop per wake-up.

A payload is the queue's name (RATED + the name for jobs with a rate key, which only job_lease_limited
leases; SUSPECTS + the name for a crash suspect to run alone), one per line. WAKE_ALL says anything may
have been missed (the supervisor's connection was made again): look at everything."""

from __future__ import annotations

import contextlib
import os
import selectors
from typing import Any

import psycopg

from pgqueue import db, sql

SUSPECTS = ",suspects:"  # a queue name has no comma, so no queue's payload starts like this
RATED = ",rated:"  # the statements that make jobs with a rate key ready write this before the queue's name
WAKE_ALL = b",*"  # a line no payload can be (the only payloads that start with a comma are the two above)
WAKE_ALL_TEXT = WAKE_ALL.decode()
READ_SIZE = 65536  # a pipe's default capacity: read at most this much at once


class Relay:
    """The supervisor's side: LISTEN on `database` (None: nobody listens, the workers poll) and copy every
    payload to each worker's pipe. Never blocks on a worker: a worker whose pipe is full (it has much
    unread) is owed a WAKE_ALL, written as soon as its pipe has room."""

    def __init__(self, database: db.Database | None, channel: str) -> None:
        self.database = database  # the supervisor's own (direct), or one to LISTEN_DATABASE behind a pooler
        self.channel = channel
        self.listening_on: Any = None  # the connection LISTEN ran on (a new one must LISTEN again)
        self.writers: dict[int, int] = {}  # worker pid -> the write end of its pipe
        self.overflowed: set[int] = set()  # workers whose full pipe dropped lines: they owe a WAKE_ALL
        self.fd = -1  # the listening socket, -1 while not listening

    @property
    def active(self) -> bool:
        return self.database is not None

    def pipe(self) -> tuple[int, int]:
        """A new worker's pipe: (its read end, our write end). Call before the fork."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        return read_fd, write_fd

    def add(self, pid: int, write_fd: int) -> None:
        self.writers[pid] = write_fd

    def remove(self, pid: int) -> None:
        self.overflowed.discard(pid)
        write_fd = self.writers.pop(pid, None)
        if write_fd is not None:
            with contextlib.suppress(OSError):
                os.close(write_fd)

    @property
    def listening(self) -> bool:
        """Whether LISTEN holds on the connection as it is now (another statement may have replaced it)."""
        return self.database is not None and self.database.conn is not None and \
            self.database.conn is self.listening_on and not self.listening_on.closed

    def ensure(self) -> None:
        """Listen if not listening; having just (re)started, tell the workers anything may have been missed."""
        if self.database is None or self.listening:
            return
        self.fd = -1
        try:
            self.database.run(sql.channel_listen, channel=self.channel)  # connects (a failure is reported)
            self.listening_on = self.database.connect()
            self.fd = self.listening_on.fileno()
        except db.CONNECTION_ERRORS:
            return  # Database.run closed it; the next loop tries again
        self.send(WAKE_ALL + b"\n")

    def read(self) -> None:
        """Pass the pending NOTIFYs on (each payload once per read): those the socket brought, and those
        that came in while the connection ran another statement. A broken connection wakes everyone."""
        if not self.listening:
            return
        assert self.database is not None and self.database.conn is not None
        payloads: dict[str, None] = {}
        try:
            for note in self.database.conn.notifies(timeout=0):
                payloads[note.payload] = None
        except psycopg.Error as exc:
            self.database.broken(exc)
            self.fd = -1
            self.send(WAKE_ALL + b"\n")
            return
        if payloads:
            self.send("".join(p + "\n" for p in payloads).encode())

    def close(self) -> None:
        """Before a fork (nothing connected may cross it), and at the end: the next ensure() listens again."""
        if self.database is not None:
            self.database.close()
        self.fd = -1
        self.listening_on = None

    def close_in_child(self) -> None:
        """In a forked child: drop the write ends of every worker's pipe (its own reads EOF if we are gone)."""
        for write_fd in self.writers.values():
            with contextlib.suppress(OSError):
                os.close(write_fd)
        self.writers.clear()

    def send(self, data: bytes) -> None:
        """Write lines to every worker's pipe; one whose pipe is full gets a WAKE_ALL once it has room."""
        for pid, write_fd in self.writers.items():
            line = b"\n" + WAKE_ALL + b"\n" + data if pid in self.overflowed else data
            try:
                written = os.write(write_fd, line)
            except BlockingIOError:
                self.overflowed.add(pid)
                continue
            except OSError:
                continue  # it is gone (reaped at the supervisor's next loop)
            if written == len(line):
                self.overflowed.discard(pid)
            else:  # a line cut short: the WAKE_ALL that follows makes up for it
                self.overflowed.add(pid)

    def owed(self) -> None:
        """At each of the supervisor's loops: the WAKE_ALL owed to workers whose pipe was full."""
        if self.overflowed:
            for pid in list(self.overflowed):
                write_fd = self.writers.get(pid)
                if write_fd is None:
                    self.overflowed.discard(pid)
                    continue
                line = b"\n" + WAKE_ALL + b"\n"
                with contextlib.suppress(BlockingIOError, OSError):
                    if os.write(write_fd, line) == len(line):  # cut short, it is owed again (the next begins
                        self.overflowed.discard(pid)            # with a newline that ends the cut line)


class Wake:
    """What the payloads read at once said: work in our queues (some with a rate key), crash suspects in
    our queues."""

    __slots__ = ("rated", "suspects", "work")

    def __init__(self, work: bool = False, suspects: bool = False, rated: bool = False) -> None:
        self.work = work
        self.suspects = suspects
        self.rated = rated


ALL = Wake(work=True, suspects=True, rated=True)


class Listener:
    """The worker's side: NOTIFY payloads from the supervisor's pipe (`pipe`, with --share-connections) or
    from its own LISTEN connection (`database`), in the loop's selector; read() tells whether a payload
    named one of `queues`. With neither (nobody listens) it never wakes: the worker polls."""

    def __init__(self, selector: selectors.BaseSelector, queues: tuple[str, ...], *, pipe: int | None = None,
                 database: db.Database | None = None, channel: str = "") -> None:
        self.pipe = pipe
        if pipe is not None:
            os.set_blocking(pipe, False)
        self.database = database
        self.channel = channel
        self.selector = selector
        self.queues = frozenset(queues)
        self.suspect_payloads = frozenset(SUSPECTS + q for q in queues)
        self.rated_payloads = frozenset(RATED + q for q in queues)
        self.fd = -1  # the registered pipe or socket while listening, -1 otherwise
        self.closed = False  # the supervisor is gone (its pipe's end): never read again
        self.tail = b""  # a line cut by the end of the last read of the pipe

    @property
    def active(self) -> bool:
        """Whether NOTIFYs reach this worker (else it finds work by polling)."""
        return self.pipe is not None or self.database is not None

    def ensure(self) -> bool:
        """Listen if not listening. True when it just (re)started: wake-ups may have been missed."""
        if self.fd >= 0 or self.closed:
            return False
        if self.pipe is not None:
            fd = self.pipe
        elif self.database is not None:
            try:
                self.database.run(sql.channel_listen, channel=self.channel)  # connects (a failure is reported)
                fd = self.database.connect().fileno()
            except db.CONNECTION_ERRORS:
                return False  # Database.run closed it; try again at the next wait
        else:
            return False
        self.selector.register(fd, selectors.EVENT_READ, "listen")
        self.fd = fd
        return True

    def read(self) -> Wake:
        """Consume what arrived. A WAKE_ALL line, a broken connection or the supervisor gone wake for all."""
        payloads = self._pipe_payloads() if self.pipe is not None else self._notified()
        if payloads is None:
            return ALL
        wake = Wake()
        for payload in payloads:
            if payload in self.queues:
                wake.work = True
            elif payload in self.rated_payloads:
                wake.work = wake.rated = True
            elif payload in self.suspect_payloads:
                wake.suspects = True
            elif payload == WAKE_ALL_TEXT:
                return ALL
        return wake

    def _pipe_payloads(self) -> list[str] | None:
        assert self.pipe is not None
        try:
            data = os.read(self.pipe, READ_SIZE)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:  # the supervisor is gone: stop listening (the loop sees it gone at its next check)
            self.stop()
            self.closed = True
            return None
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        return [line.decode(errors="replace") for line in lines]

    def _notified(self) -> list[str] | None:
        assert self.database is not None
        conn = self.database.conn
        if conn is None:
            self.stop()
            return None
        try:
            return [note.payload for note in conn.notifies(timeout=0)]
        except psycopg.Error as exc:
            self.stop()
            self.database.broken(exc)
            return None

    def stop(self) -> None:
        """Stop reading (draining: no new work is wanted); a LISTEN connection listens again at ensure()."""
        if self.fd >= 0:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.fd)
        self.fd = -1

    def close(self) -> None:
        self.stop()
        if self.database is not None:
            self.database.close()
