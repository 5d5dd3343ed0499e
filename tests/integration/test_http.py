"""pgqueue.http.request against a real local HTTP server: the SSRF rules refuse before any connection (the
server sees nothing), allowed networks and hosts let requests through, redirects are checked hop by hop,
and each status ends as a result, a retryable error or a final one. DNS answers are simulated by
patching socket.getaddrinfo; the database is real."""

from __future__ import annotations

import gzip
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.conf import settings
from django.test import override_settings

import pgqueue
from pgqueue.conf import get_settings
from pgqueue.contrib import http
from pgqueue.contrib.http import (
    BlockedRequest,
    HttpClientError,
    RetryableHttpError,
    TooManyRedirects,
)
from pgqueue.exceptions import NonRetryable
from pgqueue.models import Job
from pgqueue.payload import dumps

# -- a local server -------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Server:
    host: str
    port: int
    seen: list[Seen] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    scheme: str = "http"

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"


class Handler(BaseHTTPRequestHandler):
    """Routes: /json, /echo, /flaky/<key> (500 the first time), /status/<code>, /redirect (302 to /json),
    /to?url=...&code=... (a redirect there), /loop, /big, /slow, /drip, /latin1."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self.handle_any()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        record: Server = self.server.record
        record.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/json":
            self.reply(200, json.dumps({"ok": True}), "application/json")
        elif path == "/echo":
            self.reply(200, json.dumps({"method": self.command, "path": self.path, "body": body,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}}),
                       "application/json")
        elif path.startswith("/flaky/"):
            record.counts[path] = record.counts.get(path, 0) + 1
            if record.counts[path] == 1:
                self.reply(500, "database is restarting", "text/plain")
            else:
                self.reply(200, json.dumps({"try": record.counts[path]}), "application/json")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.reply(code, f"status {code} body", "text/plain")
        elif path == "/redirect":
            self.redirect(302, "/json")
        elif path == "/to":
            self.redirect(int(query.get("code", "302")), query["url"])
        elif path == "/loop":
            self.redirect(302, "/loop")
        elif path == "/big":
            self.reply(200, "x" * 100_000, "text/plain")
        elif path == "/slow":
            time.sleep(2)
            self.reply(200, "late", "text/plain")
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(50):  # a byte every 0.1 s: no single read waits long, the whole takes 5 s
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)
        elif path == "/latin1":
            self.reply(200, "café", "text/plain; charset=iso-8859-1", encoding="latin-1")
        elif path == "/encoded":  # ?as=gzip|deflate|br|bad-gzip, &charset=..., &code=..., &zeros=N (a bomb)
            data = b"a" * int(query["zeros"]) if "zeros" in query else "café".encode()
            packed = {"gzip": lambda d: gzip.compress(d), "deflate": zlib.compress, "br": lambda d: b"\x8b\x02\x80",
                      "bad-gzip": lambda d: b"\x1f\x8b not gzip", "": lambda d: d}[query.get("as", "")](data)
            self.send_response(int(query.get("code", "200")))
            self.send_header("Content-Type", f"text/plain; charset={query.get('charset', 'utf-8')}")
            if query.get("as"):
                self.send_header("Content-Encoding", query["as"].replace("bad-", ""))
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)
        else:
            self.reply(404, "no such page", "text/plain")

    def reply(self, code: int, text: str, content_type: str, encoding: str = "utf-8") -> None:
        data = text.encode(encoding)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Test", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def redirect(self, code: int, location: str) -> None:
        self.send_response(code)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LocalServer(ThreadingHTTPServer):
    """Closing waits for its request threads (a daemon thread still answering /drip or /slow when the test
    run ended once wrote to stderr during interpreter shutdown and aborted it); a client that gave up
    mid-reply, as the timeout tests do on purpose, is not an error to print."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def serve(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    httpd = LocalServer(("127.0.0.1", 0), Handler)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    record = Server(host="127.0.0.1", port=httpd.server_address[1], scheme="https" if context else "http")
    httpd.record = record  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


def with_pgqueue(**options: Any) -> Any:
    """override_settings on top of the test settings' PGQUEUE (pgqueue's settings are re-read at once)."""
    return override_settings(PGQUEUE={**settings.PGQUEUE, **options})


LOCAL = {"HTTP_ALLOWED_NETWORKS": ["127.0.0.1/32"]}


@pytest.fixture
def local() -> Iterator[None]:
    with with_pgqueue(**LOCAL):
        assert get_settings().HTTP_ALLOWED_NETWORKS == ("127.0.0.1/32",)
        yield


# -- simulated DNS --------------------------------------------------------------------------------------


@dataclass
class FakeDns:
    answers: dict[str, list[list[str]]] = field(default_factory=dict)  # host -> one answer per lookup
    lookups: list[str] = field(default_factory=list)

    def add(self, host: str, *addresses: str) -> None:
        self.answers.setdefault(host, []).append(list(addresses))


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """Names in `answers` resolve to the given addresses (the next answer on each lookup, the last one
    repeating); every other name goes to the real resolver. Every lookup is recorded."""
    fake = FakeDns()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        fake.lookups.append(str(host))
        answers = fake.answers.get(host)
        if answers is None:
            return real(host, port, *args, **kwargs)
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        infos: list[tuple[Any, ...]] = []
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if ip.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (text, port)))
            else:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (text, port, 0, 0)))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection pgqueue.http opens, recorded: a refused request opens none."""
    opened: list[Any] = []
    connect = http.PinnedConnection.connect

    def spy(self: http.PinnedConnection) -> None:
        opened.append(self.info[4])
        connect(self)

    monkeypatch.setattr(http.PinnedConnection, "connect", spy)
    return opened


def refused(action: Callable[[], Any], message: str) -> BlockedRequest:
    with pytest.raises(BlockedRequest) as info:
        action()
    assert str(info.value) == message
    return info.value


ADVICE = "To allow it, add a network that holds it to PGQUEUE['HTTP_ALLOWED_NETWORKS']."


# -- enqueueing -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_writes_one_job_with_the_call_as_its_arguments() -> None:
    handle = http.request.enqueue("POST", "https://api.example.com/hook", json={"order": 7},
                                  headers={"X-Signature": "abc"}, timeout=10)
    job = Job.objects.get(pk=handle.id)
    assert (job.task, job.queue, job.max_attempts, job.state) == ("pgqueue.http.request", "default", 5, "ready")
    assert job.args == ["POST", "https://api.example.com/hook"]
    assert job.kwargs == {"json": {"order": 7}, "headers": {"X-Signature": "abc"}, "timeout": 10}


@pytest.mark.django_db
def test_options_and_enqueue_by_name_work_as_for_any_job() -> None:
    a = http.request.options(queue="webhooks", max_attempts=2, priority=5).enqueue("GET", "https://example.com/")
    b = pgqueue.enqueue("pgqueue.http.request", "DELETE", "https://example.com/items/1")
    c, d = http.request.enqueue_many([("GET", "https://example.com/a"), http.request.call("HEAD", "https://b.example")])
    rows = {j.id: j for j in Job.objects.all()}
    assert (rows[a.id].queue, rows[a.id].max_attempts, rows[a.id].priority) == ("webhooks", 2, 5)
    assert rows[b.id].args == ["DELETE", "https://example.com/items/1"]
    assert rows[c.id].args == ["GET", "https://example.com/a"] and rows[d.id].args == ["HEAD", "https://b.example"]


# -- the SSRF rules, before any connection ---------------------------------------------------------------


def test_a_loopback_address_is_refused_by_default_and_the_server_sees_nothing(server: Server,
                                                                              no_connection: list[Any]) -> None:
    url = server.url("/json")
    error = refused(lambda: http.request("GET", url),
                    f"Refused GET {url}: address 127.0.0.1 is a loopback address. {ADVICE}")
    assert (error.host, error.address, error.rule) == ("127.0.0.1", "127.0.0.1", "a loopback address")
    assert server.seen == [] and no_connection == []


def test_localhost_resolves_to_loopback_and_is_refused(server: Server, no_connection: list[Any]) -> None:
    with pytest.raises(BlockedRequest) as info:
        http.request("GET", server.url("/json", host="localhost"))
    assert str(info.value).startswith(f"Refused GET {server.url('/json', host='localhost')}: host 'localhost' "
                                      "resolves to ")
    assert info.value.rule == "a loopback address" and ipaddress.ip_address(info.value.address).is_loopback
    assert server.seen == [] and no_connection == []


def test_an_allowed_network_lets_the_request_through(server: Server, local: None) -> None:
    result = http.request("GET", server.url("/json"))
    assert result["status"] == 200
    assert result["headers"]["content-type"] == "application/json" and result["headers"]["x-test"] == "yes"
    assert json.loads(result["body"]) == {"ok": True}
    assert result["truncated"] is False and result["url"] == server.url("/json")
    assert 0 <= result["elapsed"] < 5
    assert len(dumps(result).encode()) < get_settings().MAX_RESULT_BYTES
    assert [s.path for s in server.seen] == ["/json"]


def test_an_answer_that_mixes_a_public_and_a_private_address_is_refused(dns: FakeDns,
                                                                        no_connection: list[Any]) -> None:
    dns.add("mixed.test", "93.184.216.34", "10.0.0.7")
    refused(lambda: http.request("POST", "http://mixed.test/hook", json={}),
            "Refused POST http://mixed.test/hook: host 'mixed.test' resolves to 10.0.0.7 (of 93.184.216.34, "
            f"10.0.0.7), a private address (RFC 1918). {ADVICE}")
    assert no_connection == []


@pytest.mark.parametrize(("answer", "rule"), [
    ("::ffff:127.0.0.1", "the IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "the IPv4-mapped form of 169.254.169.254, a cloud metadata address"),
    ("64:ff9b::10.1.2.3", "the NAT64 form of 10.1.2.3, a private address (RFC 1918)"),
    ("::127.0.0.1", "the IPv4-compatible form of 127.0.0.1, a loopback address"),
    ("::ffff:0:7f00:1", "the IPv4-translated form of 127.0.0.1, a loopback address"),
    ("::ffff:0:a9fe:a9fe", "the IPv4-translated form of 169.254.169.254, a cloud metadata address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("100.64.3.4", "a shared address (carrier-grade NAT, 100.64.0.0/10)"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a private address (unique local, fc00::/7)"),
    ("::1", "a loopback address"),
    ("0.0.0.0", "the unspecified address"),
    ("224.0.0.251", "a multicast address"),
    ("255.255.255.255", "a reserved address"),
    ("192.0.2.10", "not a globally reachable address"),
])
def test_each_blocked_kind_of_address_is_refused_with_its_rule(dns: FakeDns, no_connection: list[Any],
                                                              answer: str, rule: str) -> None:
    dns.add("inside.test", answer)
    shown = ipaddress.ip_address(answer)
    refused(lambda: http.request("GET", "https://inside.test/"),
            f"Refused GET https://inside.test/: host 'inside.test' resolves to {shown}, {rule}. {ADVICE}")
    assert no_connection == []


def test_an_ipv4_mapped_loopback_literal_is_refused(server: Server, no_connection: list[Any]) -> None:
    url = f"http://[::ffff:127.0.0.1]:{server.port}/json"
    refused(lambda: http.request("GET", url),
            f"Refused GET {url}: address {ipaddress.ip_address('::ffff:127.0.0.1')} is the IPv4-mapped form of "
            f"127.0.0.1, a loopback address. {ADVICE}")
    assert server.seen == [] and no_connection == []


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.1", "017700000001", "LOCALHOST", "localhost."])
def test_odd_spellings_of_loopback_are_refused_by_the_address_they_resolve_to(host: str,
                                                                             no_connection: list[Any]) -> None:
    with pytest.raises(BlockedRequest, match=r"resolves to (127\.0\.0\.1|::1)(, | \(of ).*a loopback address\."):
        http.request("GET", f"http://{host}/")
    assert no_connection == []


def test_public_addresses_pass_the_rules() -> None:
    for text in ("93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"):
        assert http.blocked_rule(ipaddress.ip_address(text)) is None, text


def test_an_allowed_network_admits_only_its_own_addresses() -> None:
    allowed = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.1.0.0/16"))
    assert http.blocked_rule(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert http.blocked_rule(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None  # the same address
    assert http.blocked_rule(ipaddress.ip_address("10.1.200.3"), allowed) is None
    assert http.blocked_rule(ipaddress.ip_address("127.0.0.2"), allowed) == "a loopback address"
    assert http.blocked_rule(ipaddress.ip_address("10.2.0.1"), allowed) == "a private address (RFC 1918)"
    assert http.blocked_rule(ipaddress.ip_address("169.254.169.254"), allowed) == "a cloud metadata address"


def test_a_host_outside_http_allowed_hosts_is_refused_before_any_lookup(dns: FakeDns,
                                                                        no_connection: list[Any]) -> None:
    with with_pgqueue(HTTP_ALLOWED_HOSTS=["api.example.com", ".hooks.example.org"]):
        error = refused(lambda: http.request("GET", "https://evil.test/x"),
                        "Refused GET https://evil.test/x: host 'evil.test' is not in PGQUEUE['HTTP_ALLOWED_HOSTS'] "
                        "(api.example.com, .hooks.example.org).")
        assert (error.host, error.address, error.rule) == ("evil.test", "", "HTTP_ALLOWED_HOSTS")
        for host in ("xhooks.example.org", "example.com", "api.example.com.evil.test", "sub.api.example.com"):
            with pytest.raises(BlockedRequest, match="is not in PGQUEUE"):
                http.request("GET", f"https://{host}/")
    assert dns.lookups == [] and no_connection == []


def test_an_allowed_host_must_still_resolve_to_an_allowed_address(dns: FakeDns) -> None:
    dns.add("api.example.com", "127.0.0.1")
    with with_pgqueue(HTTP_ALLOWED_HOSTS=["api.example.com"]):
        refused(lambda: http.request("GET", "https://api.example.com/"),
                f"Refused GET https://api.example.com/: host 'api.example.com' resolves to 127.0.0.1, a loopback "
                f"address. {ADVICE}")
    assert dns.lookups == ["api.example.com"]


def test_allowed_hosts_match_the_host_and_its_subdomains(server: Server, dns: FakeDns) -> None:
    for host in ("hooks.example.org", "a.hooks.example.org", "api.example.com", "API.Example.com"):
        dns.add(host.lower(), "127.0.0.1")
    with with_pgqueue(HTTP_ALLOWED_HOSTS=["api.example.com", ".hooks.example.org"], **LOCAL):
        for host in ("hooks.example.org", "a.hooks.example.org", "API.Example.com"):
            assert http.request("GET", server.url("/json", host=host))["status"] == 200


def test_the_connection_goes_to_the_checked_address_with_the_hosts_name(server: Server, dns: FakeDns,
                                                                        local: None) -> None:
    # A second lookup would answer 127.0.0.2 (blocked, and nothing listens there): there is none.
    dns.add("hook.test", "127.0.0.1")
    dns.add("hook.test", "127.0.0.2")
    result = http.request("GET", server.url("/echo", host="hook.test"))
    echoed = json.loads(result["body"])
    assert echoed["headers"]["host"] == f"hook.test:{server.port}"
    assert echoed["headers"]["user-agent"] == "pgqueue-http"
    assert dns.lookups == ["hook.test"]


def test_a_dns_failure_is_retryable(dns: FakeDns) -> None:
    with pytest.raises(RetryableHttpError, match=r"^Could not resolve host 'nowhere\.invalid' for "):
        http.request("GET", "http://nowhere.invalid/")


# -- redirects ------------------------------------------------------------------------------------------


def test_a_redirect_to_another_path_is_followed(server: Server, local: None) -> None:
    result = http.request("GET", server.url("/redirect"))
    assert (result["status"], result["url"]) == (200, server.url("/json"))
    assert [s.path for s in server.seen] == ["/redirect", "/json"]


def to(server: Server, url: str, code: int = 302) -> str:
    return server.url(f"/to?code={code}&url={quote(url, safe='')}")


def test_a_redirect_to_a_blocked_address_is_refused(server: Server, local: None) -> None:
    start, target = to(server, f"http://127.0.0.2:{server.port}/json"), f"http://127.0.0.2:{server.port}/json"
    refused(lambda: http.request("GET", start),
            f"Refused the redirect (302) from {start} to {target}: address 127.0.0.2 is a loopback address. {ADVICE}")
    start = to(server, "http://169.254.169.254/latest/meta-data/", 307)
    refused(lambda: http.request("GET", start),
            f"Refused the redirect (307) from {start} to http://169.254.169.254/latest/meta-data/: address "
            f"169.254.169.254 is a cloud metadata address. {ADVICE}")
    assert [s.path.split("?")[0] for s in server.seen] == ["/to", "/to"]


def test_a_redirect_to_a_host_that_resolves_to_a_blocked_address_is_refused(server: Server, dns: FakeDns,
                                                                          local: None) -> None:
    dns.add("rebound.test", "10.0.0.1")
    start = to(server, "http://rebound.test/admin")
    refused(lambda: http.request("GET", start),
            f"Refused the redirect (302) from {start} to http://rebound.test/admin: host 'rebound.test' resolves "
            f"to 10.0.0.1, a private address (RFC 1918). {ADVICE}")


def test_a_redirect_to_a_host_outside_the_allowed_hosts_is_refused(server: Server, dns: FakeDns) -> None:
    dns.add("hook.test", "127.0.0.1")
    start = to(server, "http://other.test/").replace("127.0.0.1", "hook.test")
    with with_pgqueue(HTTP_ALLOWED_HOSTS=["hook.test"], **LOCAL):
        refused(lambda: http.request("GET", start),
                f"Refused the redirect (302) from {start} to http://other.test/: host 'other.test' is not in "
                "PGQUEUE['HTTP_ALLOWED_HOSTS'] (hook.test).")
    assert dns.lookups == ["hook.test"]


def test_a_redirect_to_another_scheme_is_refused(server: Server, local: None) -> None:
    start = to(server, "file:///etc/passwd")
    refused(lambda: http.request("GET", start),
            f"Refused the redirect from {start}: its URL 'file:///etc/passwd' has the scheme 'file'; only http "
            "and https are allowed.")


def test_too_many_redirects_end_the_job(server: Server, local: None) -> None:
    with pytest.raises(TooManyRedirects) as info:
        http.request("GET", server.url("/loop"), max_redirects=3)
    assert str(info.value) == (f"GET {server.url('/loop')}: more than 3 redirect(s); the last, 302 from "
                               f"{server.url('/loop')}, led to '/loop'.")
    assert len(server.seen) == 4
    with pytest.raises(TooManyRedirects):
        http.request("GET", server.url("/redirect"), max_redirects=0)


@pytest.mark.parametrize(("code", "method", "after"), [
    (303, "POST", "GET"), (303, "PUT", "GET"), (302, "POST", "GET"), (301, "POST", "GET"),
    (307, "POST", "POST"), (308, "PUT", "PUT"), (302, "PUT", "PUT"),
])
def test_a_redirect_keeps_or_drops_the_method_and_body(server: Server, local: None, code: int, method: str,
                                                       after: str) -> None:
    result = http.request(method, to(server, "/echo", code), json={"n": 1})
    echoed = json.loads(result["body"])
    assert echoed["method"] == after
    if after == "GET":
        assert echoed["body"] == "" and "content-type" not in echoed["headers"]
    else:
        assert echoed["body"] == '{"n":1}' and echoed["headers"]["content-type"] == "application/json"


def test_credentials_are_not_sent_on_to_another_origin(server: Server, dns: FakeDns, local: None) -> None:
    dns.add("hook.test", "127.0.0.1")
    secret = {"Authorization": "Bearer s3cret", "Cookie": "a=1", "X-Keep": "1"}
    same = json.loads(http.request("GET", to(server, "/echo"), headers=secret)["body"])["headers"]
    assert (same["authorization"], same["cookie"], same["x-keep"]) == ("Bearer s3cret", "a=1", "1")
    other = json.loads(http.request("GET", to(server, server.url("/echo", host="hook.test")),
                                    headers=secret)["body"])["headers"]
    assert "authorization" not in other and "cookie" not in other and other["x-keep"] == "1"


# -- statuses, timeouts, bodies -------------------------------------------------------------------------


def test_a_4xx_is_final_with_the_status_and_a_body_excerpt(server: Server, local: None) -> None:
    with pytest.raises(HttpClientError) as info:
        http.request("GET", server.url("/status/404"))
    assert str(info.value) == f"404 Not Found from {server.url('/status/404')}: status 404 body"
    assert (info.value.status, info.value.url) == (404, server.url("/status/404"))
    assert isinstance(info.value, NonRetryable)


@pytest.mark.parametrize("code", [500, 502, 503, 429, 408])
def test_5xx_429_and_408_are_retryable(server: Server, local: None, code: int) -> None:
    with pytest.raises(RetryableHttpError, match=rf"^{code} .* from {server.url(f'/status/{code}')}: status {code} body$") as info:
        http.request("GET", server.url(f"/status/{code}"))
    assert info.value.status == code
    assert not isinstance(info.value, NonRetryable)


def test_a_refused_connection_is_retryable(local: None) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RetryableHttpError, match=rf"^Could not connect to http://127\.0\.0\.1:{port}/ "
                                                 r"\(127\.0\.0\.1: ConnectionRefusedError"):
        http.request("GET", f"http://127.0.0.1:{port}/")


def test_a_slow_answer_times_out_and_is_retryable(server: Server, local: None) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableHttpError, match=r"did not answer within the timeout of 0\.3 s\.$"):
        http.request("GET", server.url("/slow"), timeout=0.3)
    assert time.monotonic() - started < 1.5


def test_a_body_dripped_byte_by_byte_still_stops_at_the_timeout(server: Server, local: None) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableHttpError, match=r"did not answer within the timeout of 0\.5 s\.$"):
        http.request("GET", server.url("/drip"), timeout=0.5)
    assert time.monotonic() - started < 2


def test_the_timeout_defaults_to_the_setting(server: Server) -> None:
    with with_pgqueue(HTTP_TIMEOUT=0.3, **LOCAL), pytest.raises(RetryableHttpError, match=r"0\.3 s\.$"):
        http.request("GET", server.url("/slow"))


def test_a_long_body_is_cut_to_max_body_bytes(server: Server, local: None) -> None:
    result = http.request("GET", server.url("/big"), max_body_bytes=1000)
    assert (result["body"], result["truncated"]) == ("x" * 1000, True)
    assert http.request("GET", server.url("/big"), max_body_bytes=200_000)["truncated"] is False


def test_the_result_always_fits_max_result_bytes(server: Server) -> None:
    with with_pgqueue(MAX_RESULT_BYTES=4096, **LOCAL):
        result = http.request("GET", server.url("/big"))
    assert result["truncated"] is True and 3000 < len(dumps(result).encode()) <= 4096


def test_the_body_is_decoded_with_its_charset_and_head_has_none(server: Server, local: None) -> None:
    assert http.request("GET", server.url("/latin1"))["body"] == "café"
    head = http.request("HEAD", server.url("/json"))
    assert (head["status"], head["body"], head["truncated"]) == (200, "", False)


def test_a_server_chosen_content_encoding_is_decoded_or_refused_and_never_resent(server: Server, local: None) -> None:
    """Issue #18, class 5: a compressed body, or a charset naming a bytes codec, raised an internal error and
    the request was sent again five times."""
    assert json.loads(http.request("GET", server.url("/echo"))["body"])["headers"]["accept-encoding"] == "identity"
    for packed in ("gzip", "deflate"):
        result = http.request("GET", server.url(f"/encoded?as={packed}"))
        assert (result["body"], result["truncated"]) == ("café", False), packed
    for codec in ("zlib", "base64", "rot13", "no-such-charset"):  # not text encodings: read as UTF-8
        assert http.request("GET", server.url(f"/encoded?charset={codec}"))["body"] == "café", codec
    bomb = http.request("GET", server.url("/encoded?as=gzip&zeros=50000000"), max_body_bytes=1000)
    assert (len(bomb["body"]), bomb["truncated"]) == (1000, True)  # 50 MB of one letter in 50 KB: never expanded whole
    for packed, says in (("br", "is encoded with 'br', which pgqueue does not decode"),
                         ("bad-gzip", "is not valid gzip data")):
        with pytest.raises(http.UndecodableResponse, match=f"200 OK from .*: the body {says}") as refused:
            http.request("GET", server.url(f"/encoded?as={packed}"))
        assert isinstance(refused.value, NonRetryable)  # the server has it: never sent again
    with pytest.raises(http.RetryableHttpError, match="the body is encoded with 'br'"):  # a 5xx stays retryable
        http.request("GET", server.url("/encoded?as=br&code=503"))


def test_a_body_and_headers_are_sent(server: Server, local: None) -> None:
    result = http.request("put", server.url("/echo?x=1"), body="a=1&b=2",
                          headers={"Content-Type": "application/x-www-form-urlencoded", "X-Tab": "a\tb"})
    echoed = json.loads(result["body"])
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("PUT", "/echo?x=1", "a=1&b=2")
    assert echoed["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert echoed["headers"]["x-tab"] == "a\tb"


# -- https: SNI and the certificate checked against the host name ---------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> Callable[[str], Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def make(name: str) -> Path:
        key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
        (tmp_path / f"{name}.both").write_text(key.read_text() + cert.read_text())
        return tmp_path / f"{name}.both"

    return make


def tls_server(both: Path) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(both)
    yield from serve(context)


@pytest.mark.parametrize(("served", "ok"), [("hook.test", True), ("other.test", False)])
def test_https_checks_the_certificate_against_the_host_name(certificate: Callable[[str], Path], dns: FakeDns,
                                                            monkeypatch: pytest.MonkeyPatch, local: None,
                                                            served: str, ok: bool) -> None:
    both = certificate(served)
    trusted = ssl.create_default_context(cafile=str(both))
    monkeypatch.setattr(http, "tls_context", lambda: trusted)
    dns.add("hook.test", "127.0.0.1")
    for tls in tls_server(both):
        url = tls.url("/echo", host="hook.test")
        if ok:
            result = http.request("GET", url)
            assert result["status"] == 200 and result["url"] == url
            assert json.loads(result["body"])["headers"]["host"] == f"hook.test:{tls.port}"
        else:
            with pytest.raises(RetryableHttpError, match="certificate verify failed"):
                http.request("GET", url)
            assert tls.seen == []
