"""The metrics role (pgqueue_worker --metrics-port): serves Prometheus scrapes on the socket the supervisor
bound, from the counters every process of the supervisor writes to the multi-process directory and the
gauges read from the database at each scrape (pgqueue.metrics)."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pgqueue import db, events
from pgqueue.conf import Settings
from pgqueue.ops import metrics
from pgqueue.worker.signals import SignalPipe

StartResponse = Callable[..., Any]


# A connection that sends nothing (or too slowly) is dropped after this many seconds.
READ_TIMEOUT = 5.0


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT  # the socket's timeout for each read and write of one connection

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # a scrape every few seconds is not news


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per connection, so an idle or slow client never holds up a scrape (one idle connection
    used to time every scrape out, and delay the supervisor's stop by 40 s)."""

    daemon_threads = True  # a connection still open when the process stops does not keep it alive


def listen(address: str, port: int) -> WSGIServer:
    """Bind the metrics port (in the supervisor, before forking: a port in use stops the start)."""
    server = make_server(address, port, _not_ready, server_class=_Server, handler_class=_QuietHandler)
    server.timeout = 0.5
    return server


def _not_ready(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"pgqueue metrics are starting\n"]


class Exporter:
    def __init__(self, process_id: str, supervisor_id: str, settings: Settings, db_params: dict[str, Any],
                 server: WSGIServer, *, open_access: bool) -> None:
        self.id = process_id
        self.supervisor_id = supervisor_id
        self.settings = settings
        self.db = db.Database(db_params, owner=process_id, role="metrics")
        self.server = server
        self.open_access = open_access  # DEBUG with no METRICS_TOKEN: no token asked for
        self.pipe = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        self.registered = False
        self.next_heartbeat = 0.0
        self.db_lock = threading.Lock()  # connections have threads; the database connection is one

    def run(self) -> int:
        events.emit("worker_started", worker=self.id, kind="metrics", queues=(), concurrency=0)
        self.server.set_app(self.app)
        parent = os.getppid()
        while not self.pipe.drain() and os.getppid() == parent:
            self._heartbeat()
            readable, _, _ = select.select([self.server.fileno(), self.pipe.read_fd], [], [], 1.0)
            if self.server.fileno() in readable:
                self.server.handle_request()
        with self.db_lock:
            try:
                self.db.run("workerprocess_set_state", ids=[self.id], state="stopped")
            except db.CONNECTION_ERRORS:
                pass
            self.db.close()
        return 0

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"pgqueue serves metrics at /metrics\n"]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET, HEAD")])
            return [b"pgqueue metrics answer GET and HEAD\n"]
        if not self.open_access and not metrics.bearer_ok(environ.get("HTTP_AUTHORIZATION"), self.settings):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                 ("WWW-Authenticate", 'Bearer realm="pgqueue metrics"')])
            return [b"pgqueue metrics need Authorization: Bearer <PGQUEUE['METRICS_TOKEN']>\n"]
        try:
            with self.db_lock:
                body = metrics.exposition(self.db, self.settings)
        except db.CONNECTION_ERRORS as exc:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"pgqueue metrics: the database is unavailable ({exc})\n".encode()]
        start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    def _heartbeat(self) -> None:
        if time.monotonic() < self.next_heartbeat:
            return
        self.next_heartbeat = time.monotonic() + self.settings.HEARTBEAT_SECONDS
        with self.db_lock:
            self._beat()

    def _beat(self) -> None:
        try:
            if not self.registered:
                self.db.run("workerprocess_register", id=self.id, kind="metrics", supervisor=self.supervisor_id,
                            hostname=socket.gethostname(), pid=os.getpid(), queues="", concurrency=0)
                self.registered = True
            else:
                self.db.run("workerprocess_heartbeat", id=self.id)
        except db.CONNECTION_ERRORS:
            self.registered = False
