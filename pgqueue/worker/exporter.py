"""The metrics role (pgqueue_worker --metrics-port): serves Prometheus scrapes on the socket the supervisor
bound, from the counters every process of the supervisor writes to the multi-process directory and the
gauges read from the database at each scrape (pgqueue.metrics)."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pgqueue import db
from pgqueue.conf import Settings
from pgqueue.ops import metrics
from pgqueue.worker.role import Role

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


class Exporter(Role):
    kind = "metrics"

    def __init__(self, process_id: str, supervisor_id: str, settings: Settings, db_params: dict[str, Any],
                 server: WSGIServer, *, open_access: bool) -> None:
        super().__init__(process_id, supervisor_id, settings, db.Database(db_params, owner=process_id, role="metrics"))
        self.db: db.Database = self.runner
        self.server = server
        self.open_access = open_access  # DEBUG with no METRICS_TOKEN: no token asked for
        self.db_lock = threading.Lock()  # connections have threads; the database connection is one
        server.set_app(self.app)

    def detail(self) -> str:
        host, port = self.server.server_address[:2]
        return f"serving http://{host!s}:{port}/metrics"

    def tick(self) -> float:
        with self.db_lock:  # a scrape may be reading the database on another thread
            return super().tick()

    def round(self) -> float:
        return 1.0  # the scrapes are served while waiting

    def wait(self, seconds: float) -> None:
        """Serve scrapes until `seconds` have passed or a stop signal came."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.pipe.received:
            readable, _, _ = select.select([self.server.fileno(), self.pipe.read_fd], [], [], left)
            if self.server.fileno() in readable:
                self.server.handle_request()
            elif self.pipe.read_fd in readable:
                return

    def close(self) -> None:
        with self.db_lock:
            self.db.close()

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
                body = metrics.exposition(self.db, self.settings, supervisor=os.getppid())
        except db.CONNECTION_ERRORS as exc:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"pgqueue metrics: the database is unavailable ({exc})\n".encode()]
        start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]
