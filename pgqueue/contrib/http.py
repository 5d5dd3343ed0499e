"""HTTP jobs (contrib: the core never imports this module): pgqueue.http.request sends one HTTP request from a worker, refusing internal addresses (docs/http.md).

    from pgqueue import http
    http.request.enqueue("POST", "https://api.example.com/hook", json={"order": 7}, timeout=10)

The arguments are checked when the call is enqueued (InvalidJob, nothing written) and again when the job
runs. Before connecting, the host is matched against PGQUEUE['HTTP_ALLOWED_HOSTS'] (when set), resolved
once, and every address it resolves to is checked against the blocked ranges (loopback, private,
link-local, cloud metadata, ...) unless PGQUEUE['HTTP_ALLOWED_NETWORKS'] holds it; the connection then
goes to a checked address itself, so a second DNS answer cannot swap it. Redirects are followed by hand
and each hop is checked the same way.
"""

from __future__ import annotations

import codecs
import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from pgqueue.conf import BYTES_MAX, Settings, get_settings
from pgqueue.enqueuing import registry
from pgqueue.enqueuing.decorator import JobFunction
from pgqueue.enqueuing.options import check_int, check_seconds
from pgqueue.exceptions import InvalidJob, NonRetryable, NotSerializable
from pgqueue.payload import Unstorable, dumps, storable_text
from pgqueue.text import a_type, short_repr

NAME = "pgqueue.http.request"
LABEL = f"Job {NAME}:"
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
NO_BODY_METHODS = ("GET", "HEAD")
MAX_ATTEMPTS = 5
MAX_REDIRECTS = 5  # the default
MAX_REDIRECTS_LIMIT = 20
MAX_BODY_BYTES = 64 * 1024  # the default; the body is cut further if the result would not fit MAX_RESULT_BYTES
URL_MAX = 8_192  # characters
EXCERPT_CHARS = 500  # of a failed response's body, in the error message
HEADER_VALUE_MAX = 2_000  # characters of each response header kept in the result
USER_AGENT = "pgqueue-http"
# Headers http.client writes from the URL and the body; a caller's own would contradict them.
SET_BY_PGQUEUE = ("connection", "content-length", "host", "transfer-encoding")
# Headers that are not sent on to another origin (scheme, host or port) when a redirect leads there.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
RETRY_STATUSES = (408, 429)  # besides every 5xx

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
_HOST = re.compile(r"[a-z0-9_\-.]+")  # a host name after IDNA encoding (an IP address literal is checked apart)


# -- errors ---------------------------------------------------------------------------------------------
# Each names pgqueue.http as its module: attempts record an error by its class's dotted path, and this is
# the path the docs give and operators filter by.

class BlockedRequest(NonRetryable):
    """The request, or a redirect, was refused by the SSRF rules or PGQUEUE['HTTP_ALLOWED_HOSTS']: the job
    goes dead at once, and its attempt row names the host, the address and the rule."""

    __module__ = "pgqueue.http"

    def __init__(self, message: str, *, host: str = "", address: str = "", rule: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.rule = rule


class HttpClientError(NonRetryable):
    """A 4xx response other than 408 and 429: sending the same request again would get the same answer."""

    __module__ = "pgqueue.http"

    def __init__(self, message: str, *, status: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class TooManyRedirects(NonRetryable):
    """More redirects than the call's max_redirects."""

    __module__ = "pgqueue.http"


class UndecodableResponse(NonRetryable):
    """The server sent a body in a content encoding pgqueue does not decode (it asks for identity, and decodes
    gzip and deflate), or a compressed body that is corrupt. The request reached the server: it is not sent
    again."""

    __module__ = "pgqueue.http"

    def __init__(self, message: str, *, status: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class RetryableHttpError(Exception):
    """A failure worth trying again later: a 5xx, 429 or 408 response, a connection error or a timeout.
    pgqueue retries the job with backoff, up to its max_attempts."""

    __module__ = "pgqueue.http"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status  # None: no response (connection error, timeout, DNS failure)


# -- checking a call ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A checked http(s) URL, split into what the connection needs."""

    url: str  # normalised: no fragment, non-ASCII path characters percent-encoded
    scheme: str  # "http" or "https"
    host: str  # lowercase ASCII (IDNA), no brackets around an IPv6 literal, no trailing dot
    port: int
    path: str  # path and query, at least "/"

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A checked call of pgqueue.http.request."""

    method: str
    target: Target
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout: float
    max_redirects: int
    max_body_bytes: int


def check_request(
    method: Any,
    url: Any,
    *,
    headers: Any = None,
    json: Any = None,
    body: Any = None,
    timeout: Any = None,
    max_redirects: Any = MAX_REDIRECTS,
    max_body_bytes: Any = MAX_BODY_BYTES,
    settings: Settings | None = None,
) -> Request:
    """The call's arguments checked and normalised, or InvalidJob saying which one is wrong and why."""
    settings = settings or get_settings()
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise InvalidJob(f"{LABEL} method must be one of {', '.join(METHODS)}, got {short_repr(method)}.")
    method = method.upper()
    target = parse_url(url)
    header_items = _check_headers(headers)
    if body is not None and json is not None:
        raise InvalidJob(f"{LABEL} give body or json, not both.")
    if body is not None and not isinstance(body, str):
        raise InvalidJob(f"{LABEL} body must be a str or None, got {a_type(body)}; send data as text, or "
                         "give json=... for a JSON body.")
    if (body is not None or json is not None) and method in NO_BODY_METHODS:
        raise InvalidJob(f"{LABEL} a {method} request takes no body or json.")
    data: bytes | None = None
    names = {name.lower() for name, _ in header_items}
    if json is not None:
        try:
            data = dumps(json).encode("utf-8")
        except Unstorable as exc:
            raise NotSerializable(f"{LABEL} json cannot be sent as JSON ({exc}).") from None
        if "content-type" not in names:
            header_items += (("Content-Type", "application/json"),)
    elif body is not None:
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJob(f"{LABEL} body contains a lone surrogate, which is not valid Unicode.") from None
        if "content-type" not in names:
            header_items += (("Content-Type", "text/plain; charset=utf-8"),)
    if "user-agent" not in names:
        header_items += (("User-Agent", USER_AGENT),)
    if "accept-encoding" not in names:  # a body pgqueue can store as it came; gzip and deflate are decoded too
        header_items += (("Accept-Encoding", "identity"),)
    seconds = settings.HTTP_TIMEOUT if timeout is None else float(check_seconds(f"{LABEL} timeout", timeout))
    return Request(
        method=method, target=target, headers=header_items, body=data, timeout=seconds,
        max_redirects=check_int(f"{LABEL} max_redirects", max_redirects, 0, MAX_REDIRECTS_LIMIT),
        max_body_bytes=check_int(f"{LABEL} max_body_bytes", max_body_bytes, 0, BYTES_MAX),
    )


def parse_url(url: Any, label: str = f"{LABEL} url") -> Target:
    """A checked http(s) URL with a host and no credentials, or InvalidJob("<label> ...")."""
    if not isinstance(url, str):
        raise InvalidJob(f"{label} must be a string, got {short_repr(url)}.")
    if len(url) > URL_MAX:
        raise InvalidJob(f"{label} is {len(url)} characters long, over {URL_MAX}.")
    for char in url:
        if char == " ":
            raise InvalidJob(f"{label} {short_repr(url)} contains a space; percent-encode it as %20.")
        if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or 0xD800 <= ord(char) <= 0xDFFF:
            raise InvalidJob(f"{label} {short_repr(url)} contains the control character U+{ord(char):04X}.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidJob(f"{label} {short_repr(url)} cannot be parsed: {exc}.") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidJob(f"{label} {short_repr(url)} has no scheme; start it with https:// or http://.")
    if scheme not in ("http", "https"):
        raise InvalidJob(f"{label} {short_repr(url)} has the scheme {scheme!r}; only http and https are allowed.")
    if parts.username is not None or parts.password is not None:
        shown = urlunsplit((parts.scheme, f"***@{parts.netloc.rpartition('@')[2]}", parts.path, parts.query, ""))
        raise InvalidJob(
            f"{label} {short_repr(shown)} holds a user name or password; URLs are shown in results and errors, "
            "so send credentials in a header instead: headers={'Authorization': ...}."
        )
    host = _ascii_host(parts.hostname or "", url, label)
    if port == 0:
        raise InvalidJob(f"{label} {short_repr(url)} has the port 0; a port is from 1 to 65535.")
    path = _encode_non_ascii(parts.path or "/")
    query = _encode_non_ascii(parts.query)
    netloc = _encode_non_ascii(parts.netloc) if parts.netloc.isascii() else _netloc(host, port)
    return Target(
        url=urlunsplit((scheme, netloc, path, query, "")), scheme=scheme, host=host,
        port=port or (443 if scheme == "https" else 80), path=f"{path}?{query}" if query else path,
    )


def _ascii_host(hostname: str, url: str, label: str) -> str:
    host = hostname.removesuffix(".")
    if not host:
        raise InvalidJob(f"{label} {short_repr(url)} has no host.")
    if ":" in host:  # urlsplit took it from [brackets]: an IPv6 address
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidJob(f"{label} {short_repr(url)} has an invalid IPv6 address {host!r}.") from None
        return host
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidJob(f"{label} {short_repr(url)} has a host name that IDNA cannot encode.") from None
    if not _HOST.fullmatch(host) or ".." in host or host.startswith("."):
        raise InvalidJob(f"{label} {short_repr(url)} has an invalid host name {host!r}.")
    if len(host) > 253 or any(len(part) > 63 for part in host.split(".")):
        raise InvalidJob(f"{label} {short_repr(url)} has a host name that DNS cannot hold (over 253 characters, "
                         "or a part between dots over 63).")
    return host


def _encode_non_ascii(text: str) -> str:
    return text if text.isascii() else "".join(c if c.isascii() else quote(c) for c in text)


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _check_headers(headers: Any) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        raise InvalidJob(f"{LABEL} headers must be a dict of header names to values, got {a_type(headers)}.")
    items: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidJob(f"{LABEL} header name {short_repr(name)} is not a valid HTTP header name "
                             "(letters, digits and !#$%&'*+-.^_`|~).")
        lower = name.lower()
        if lower in SET_BY_PGQUEUE:
            raise InvalidJob(f"{LABEL} header {name!r} is set by pgqueue from the URL and the body; leave it out.")
        if lower in seen:
            raise InvalidJob(f"{LABEL} header {name!r} is given twice (as {seen[lower]!r} too); header names "
                             "are case-insensitive.")
        seen[lower] = name
        if not isinstance(value, str):
            raise InvalidJob(f"{LABEL} header {name!r} must have a str value, got {short_repr(value)}.")
        for char in value:
            if char in "\r\n":
                raise InvalidJob(f"{LABEL} header {name!r} has a value with a line break (U+{ord(char):04X}), "
                                 "which would end the header.")
            if (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
                raise InvalidJob(f"{LABEL} header {name!r} has a value with the control character "
                                 f"U+{ord(char):04X}.")
            if ord(char) > 0xFF:
                raise InvalidJob(f"{LABEL} header {name!r} has a value with {char!r}, which HTTP headers cannot "
                                 "carry (Latin-1 only); percent-encode it.")
        items.append((name, value))
    return tuple(items)


# -- the SSRF rules -------------------------------------------------------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = "a cloud metadata address"
# Checked in this order; the first that holds an address names the rule. Then, for anything else that
# Python's ipaddress does not call globally reachable: "not a globally reachable address".
BLOCKED: tuple[tuple[Network, str], ...] = tuple((ipaddress.ip_network(net), rule) for net, rule in (
    ("169.254.169.254/32", METADATA),  # AWS, GCP, Azure, OpenStack, ...
    ("fd00:ec2::254/128", METADATA),  # AWS over IPv6
    ("100.100.100.200/32", METADATA),  # Alibaba Cloud
    ("0.0.0.0/32", "the unspecified address"),
    ("::/128", "the unspecified address"),
    ("0.0.0.0/8", "in 0.0.0.0/8 ('this network')"),
    ("127.0.0.0/8", "a loopback address"),
    ("::1/128", "a loopback address"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("fc00::/7", "a private address (unique local, fc00::/7)"),
    ("100.64.0.0/10", "a shared address (carrier-grade NAT, 100.64.0.0/10)"),
    ("169.254.0.0/16", "a link-local address"),
    ("fe80::/10", "a link-local address"),
    ("224.0.0.0/4", "a multicast address"),
    ("ff00::/8", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48)"),
    ("2002::/16", "a 6to4 address (2002::/16), which can reach any IPv4 address"),
    ("2001::/32", "a Teredo address (2001::/32), which can reach any IPv4 address"),
))
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d (deprecated, RFC 4291), but still routed by some
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT, RFC 2765)


def embedded_ipv4(address: Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, and how: IPv4-mapped (::ffff:a.b.c.d), NAT64
    (64:ff9b::a.b.c.d, RFC 6052), IPv4-translated (::ffff:0:a.b.c.d) or IPv4-compatible (::a.b.c.d;
    :: and ::1 are the IPv6 unspecified and loopback addresses themselves)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in NAT64:
        return inner, "NAT64"
    if address in IPV4_TRANSLATED:
        return inner, "IPv4-translated"
    if address in IPV4_COMPATIBLE and int(address) > 1:
        return inner, "IPv4-compatible"
    return None


def blocked_rule(address: Address, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why `address` may not be requested ("a loopback address"), or None if it may: it is globally
    reachable, or inside one of the `allowed` networks."""
    embedded = embedded_ipv4(address)
    if any(address in net for net in allowed) or (embedded and any(embedded[0] in net for net in allowed)):
        return None
    if embedded is not None:
        inner = blocked_rule(embedded[0])
        return None if inner is None else f"the {embedded[1]} form of {embedded[0]}, {inner}"
    for network, rule in BLOCKED:
        if address in network:
            return rule
    if not address.is_global:
        return "not a globally reachable address"
    return None


def allowed_networks(settings: Settings) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(net, strict=False) for net in settings.HTTP_ALLOWED_NETWORKS)


def host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    """True if PGQUEUE['HTTP_ALLOWED_HOSTS'] is not set, or an entry matches: "example.com" that host
    only, ".example.com" it and every subdomain."""
    if allowed is None:
        return True
    for entry in allowed:
        name = _entry_host(entry)
        if name.startswith("."):
            if host == name[1:] or host.endswith(name):
                return True
        elif host == name:
            return True
    return False


def _entry_host(entry: str) -> str:
    name = entry.strip().lower().removesuffix(".")
    dot, bare = ("." if name.startswith(".") else ""), name.lstrip(".")
    if not bare.isascii():
        try:
            bare = bare.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # matches no host: every host is ASCII by now
    return dot + bare


SockInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def resolve(target: Target, settings: Settings, refusing: str) -> list[SockInfo]:
    """The addresses to connect to for `target`, every one of them checked: BlockedRequest if the host is
    not allowed (before any DNS lookup) or if any address it resolves to is blocked."""
    if not host_allowed(target.host, settings.HTTP_ALLOWED_HOSTS):
        raise BlockedRequest(
            f"{refusing}: host {target.host!r} is not in PGQUEUE['HTTP_ALLOWED_HOSTS'] "
            f"({', '.join(settings.HTTP_ALLOWED_HOSTS or ())}).",
            host=target.host, rule="HTTP_ALLOWED_HOSTS",
        )
    allowed = allowed_networks(settings)
    if _is_literal(target.host):  # refused before any lookup, like a host name that is not allowed
        _check_address(target, ipaddress.ip_address(target.host), [target.host], allowed, refusing)
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise RetryableHttpError(f"Could not resolve host {target.host!r} for {target.url}: {exc}.",
                                 url=target.url) from None
    unique: dict[str, SockInfo] = {}
    for info in infos:
        if info[0] in (socket.AF_INET, socket.AF_INET6):
            unique.setdefault(str(info[4][0]), info)
    if not unique:
        raise RetryableHttpError(f"Host {target.host!r} for {target.url} resolves to no IP address.", url=target.url)
    for text in unique:
        _check_address(target, ipaddress.ip_address(text), list(unique), allowed, refusing)
    return list(unique.values())


def _check_address(target: Target, address: Address, answer: list[str], allowed: tuple[Network, ...],
                   refusing: str) -> None:
    rule = blocked_rule(address, allowed)
    if rule is None:
        return
    if _is_literal(target.host):
        where = f"address {address} is {rule}"
    else:
        others = f" (of {', '.join(answer)})" if len(answer) > 1 else ""
        where = f"host {target.host!r} resolves to {address}{others}, {rule}"
    raise BlockedRequest(
        f"{refusing}: {where}. To allow it, add a network that holds it to PGQUEUE['HTTP_ALLOWED_NETWORKS'].",
        host=target.host, address=str(address), rule=rule,
    )


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- sending --------------------------------------------------------------------------------------------

@functools.cache
def tls_context() -> ssl.SSLContext:
    """Certificates verified against the system's CAs, and the host name checked (the default context)."""
    return ssl.create_default_context()


class PinnedConnection(http.client.HTTPConnection):
    """A connection to one checked address: the Host header (and, for https, SNI and the certificate
    check) name the URL's host, while the socket goes to the address, with no second DNS lookup."""

    def __init__(self, target: Target, info: SockInfo, timeout: float, context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.default_port = 443 if context is not None else 80  # so the Host header carries no default port
        self.info = info
        self.context = context
        # The socket itself: http.client drops self.sock when a response will close the connection, but
        # the response keeps reading from it, and the deadline must still reach it.
        self.raw: socket.socket | None = None

    def connect(self) -> None:
        family, kind, proto, _, sockaddr = self.info
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = self.raw = sock


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool
    charset: str | None
    location: str | None
    encoding: str = ""  # Content-Encoding, lower case ("" for none or identity)
    limit: int = BYTES_MAX  # the most body bytes kept, compressed or not


class _Watchdog:
    """Ends a connection's socket when the deadline passes, so a server that sends a byte now and then
    cannot hold the worker past the timeout (a socket timeout only bounds each single read)."""

    def __init__(self, remaining: float, connection: PinnedConnection) -> None:
        self.fired = False
        self.connection = connection
        self.timer = threading.Timer(remaining, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.connection.raw
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: an SSL one's is not thread-safe
            except OSError:
                pass

    def stop(self) -> None:
        self.timer.cancel()


def exchange(req: Request, method: str, target: Target, headers: dict[str, str], body: bytes | None,
             infos: list[SockInfo], deadline: float, limit: int) -> Response:
    """Send one request to the first of the checked addresses that accepts a connection; read the body
    (up to `limit` bytes) unless the response is a redirect to follow."""
    context = tls_context() if target.scheme == "https" else None
    errors: list[str] = []
    for info in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn = PinnedConnection(target, info, remaining, context)
        try:
            conn.connect()
        except OSError as exc:  # ssl.SSLError is one too
            conn.close()
            errors.append(f"{info[4][0]}: {_describe(exc)}")
            if isinstance(exc, ssl.SSLCertVerificationError):
                break  # the same host name on another address would fail the same check
            continue
        watchdog = _Watchdog(max(0.0, deadline - time.monotonic()), conn)
        try:
            return _send(conn, method, target, headers, body, deadline, limit)
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired or isinstance(exc, TimeoutError):
                raise _timed_out(req, target) from None
            raise RetryableHttpError(f"{method} {target.url} failed: {_describe(exc)}.", url=target.url) from None
        finally:
            watchdog.stop()
            conn.close()
    if not errors:
        raise _timed_out(req, target)
    raise RetryableHttpError(f"Could not connect to {target.url} ({'; '.join(errors)}).", url=target.url)


def _send(conn: PinnedConnection, method: str, target: Target, headers: dict[str, str], body: bytes | None,
          deadline: float, limit: int) -> Response:
    conn.request(method, target.path, body=body, headers=headers)
    _settimeout(conn, deadline)
    resp = conn.getresponse()
    location = resp.getheader("Location")
    following = resp.status in REDIRECT_STATUSES and location is not None
    data = b""
    if not following:
        while len(data) <= limit and not resp.isclosed():  # one byte over the limit tells it was cut
            _settimeout(conn, deadline)
            chunk = resp.read(limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    encoding = (resp.getheader("Content-Encoding") or "").strip().lower()
    return Response(
        status=resp.status, reason=resp.reason, headers=tuple(resp.getheaders()), body=data[:limit],
        truncated=len(data) > limit, charset=resp.msg.get_content_charset(), location=location,
        encoding="" if encoding == "identity" else encoding, limit=limit,
    )


def _settimeout(conn: PinnedConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the deadline passed")
    if conn.raw is not None:
        conn.raw.settimeout(remaining)


def _timed_out(req: Request, target: Target) -> RetryableHttpError:
    return RetryableHttpError(f"{target.url} did not answer within the timeout of {req.timeout:g} s.",
                              url=target.url)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def send(req: Request, settings: Settings) -> dict[str, Any]:
    """Send a checked request, following redirects (each checked like the first): the result of the last
    response, or the error that decides whether pgqueue retries."""
    started = time.monotonic()
    deadline = started + req.timeout
    method, target, body = req.method, req.target, req.body
    headers = dict(req.headers)
    refusing = f"Refused {req.method} {target.url}"
    for hop in range(req.max_redirects + 1):
        infos = resolve(target, settings, refusing)
        response = exchange(req, method, target, headers, body, infos, deadline,
                            min(req.max_body_bytes, settings.MAX_RESULT_BYTES))
        if response.status in REDIRECT_STATUSES and response.location is not None:
            if hop == req.max_redirects:
                raise TooManyRedirects(
                    f"{req.method} {req.target.url}: more than {req.max_redirects} redirect(s); the last, "
                    f"{response.status} from {target.url}, led to {short_repr(response.location)}."
                )
            following = _redirect(target, response.location)
            refusing = f"Refused the redirect ({response.status}) from {target.url} to {following.url}"
            if (response.status == 303 and method != "HEAD") or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-encoding")}
            if following.origin != target.origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            target = following
            continue
        return outcome(response, target, time.monotonic() - started, settings)
    raise AssertionError("unreachable: the last hop returns or raises")  # pragma: no cover


def _redirect(current: Target, location: str) -> Target:
    """The target a Location header points to, checked like a call's URL (BlockedRequest if it is not one)."""
    joined = urljoin(current.url, location.strip())
    try:
        return parse_url(joined, f"Refused the redirect from {current.url}: its URL")
    except InvalidJob as exc:
        raise BlockedRequest(str(exc), host=current.host, rule="redirect URL") from None


def outcome(response: Response, target: Target, elapsed: float, settings: Settings) -> dict[str, Any]:
    """The job's result for a response, or the error its status calls for."""
    status = response.status
    if status >= 500 or status in RETRY_STATUSES:
        raise RetryableHttpError(f"{status} {response.reason} from {target.url}{_excerpt(response)}",
                                 url=target.url, status=status)
    if status >= 400:
        raise HttpClientError(f"{status} {response.reason} from {target.url}{_excerpt(response)}",
                              status=status, url=target.url)
    headers: dict[str, str] = {}
    for name, value in response.headers:
        key = storable_text(name.lower())
        text = storable_text(value)[:HEADER_VALUE_MAX]
        headers[key] = f"{headers[key]}, {text}"[:HEADER_VALUE_MAX] if key in headers else text
    text = _decode(response, target)
    result: dict[str, Any] = {"status": status, "headers": headers, "body": "", "truncated": response.truncated,
                              "url": target.url, "elapsed": round(elapsed, 6)}
    budget = settings.MAX_RESULT_BYTES - len(dumps(result).encode("utf-8")) - 64
    if budget < 0:  # even the headers do not fit: leave them out
        result["headers"] = {}
        budget = settings.MAX_RESULT_BYTES - len(dumps(result).encode("utf-8")) - 64
    fitted = _fit(text, budget)
    result["body"] = fitted
    result["truncated"] = response.truncated or len(fitted) < len(text)
    return result


ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}  # 32: a zlib or gzip header


def _decode(response: Response, target: Target | None = None) -> str:
    """The body as text: decompressed (gzip, deflate; at most the response's limit, so a small compressed
    body cannot expand without bound), in its charset when that is a text encoding (a server may name a
    bytes codec such as 'zlib' or 'base64'), else UTF-8. An encoding it cannot decode raises
    UndecodableResponse; without a `target` (an error's excerpt) it reads as a note instead."""
    body, truncated = response.body, response.truncated
    if response.encoding:
        try:
            body, truncated = _decompress(response)
        except (KeyError, zlib.error) as exc:
            what = (f"is encoded with {response.encoding!r}, which pgqueue does not decode" if isinstance(exc, KeyError)
                    else f"is not valid {response.encoding} data ({exc})")
            if target is None:
                return f"(the body {what})"
            raise UndecodableResponse(
                f"{response.status} {response.reason} from {target.url}: the body {what}. pgqueue asks for "
                "Accept-Encoding: identity unless the call sets it; the request is not sent again.",
                status=response.status, url=target.url) from None
    decoder: codecs.IncrementalDecoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if response.charset:
        try:
            info = codecs.lookup(response.charset)
            if info._is_text_encoding:
                decoder = info.incrementaldecoder(errors="replace")
        except LookupError:
            pass
    # A body cut short may end inside a character: final=False leaves that half out.
    return storable_text(decoder.decode(body, final=not truncated))


def _decompress(response: Response) -> tuple[bytes, bool]:
    """The decompressed body and whether it was cut short. KeyError: an encoding not decoded here."""
    decompressor = zlib.decompressobj(ZLIB_WBITS[response.encoding])
    data = decompressor.decompress(response.body, response.limit + 1)
    return data[:response.limit], response.truncated or len(data) > response.limit


def _fit(text: str, budget: int) -> str:
    """The longest start of `text` whose JSON string takes at most `budget` bytes."""
    if _json_size(text) <= budget:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _json_size(text: str) -> int:
    return len(dumps(text).encode("utf-8"))


def _excerpt(response: Response) -> str:
    text = " ".join(_decode(response).split())
    if not text:
        return "."
    return f": {text[:EXCERPT_CHARS]}{'...' if len(text) > EXCERPT_CHARS or response.truncated else ''}"


# -- the job --------------------------------------------------------------------------------------------

class RequestJob(JobFunction):
    """The JobFunction of pgqueue.http.request: an enqueue checks the request's arguments too, so a bad
    method, URL, header or timeout is refused with InvalidJob before anything is written."""

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().check_arguments(args, kwargs)
        assert self.signature is not None
        bound = self.signature.bind(*args, **kwargs)
        check_request(**bound.arguments)


def _register(func: Callable[..., dict[str, Any]]) -> RequestJob:
    wrapped = RequestJob(
        func, name=NAME, queue=None, priority=0, max_attempts=MAX_ATTEMPTS, timeout=None, retry_backoff=None,
        retry_backoff_max=None, retry_jitter=None, non_retryable=(InvalidJob,), pass_context=False,
    )
    registry.register(wrapped)
    return wrapped


@_register
def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    timeout: float | None = None,
    max_redirects: int = MAX_REDIRECTS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> dict[str, Any]:
    """Send one HTTP request; return {"status", "headers", "body", "truncated", "url", "elapsed"}.

    Refused (BlockedRequest, not retried): a host outside PGQUEUE['HTTP_ALLOWED_HOSTS'], an address that
    is loopback, private, link-local, metadata, ... unless inside PGQUEUE['HTTP_ALLOWED_NETWORKS'].
    Retried (RetryableHttpError): 5xx, 429, 408, connection errors and timeouts. Other 4xx: HttpClientError,
    not retried. timeout (seconds, default PGQUEUE['HTTP_TIMEOUT']) bounds the whole request, redirects
    included, but not the DNS lookups."""
    settings = get_settings()
    checked = check_request(method, url, headers=headers, json=json, body=body, timeout=timeout,
                            max_redirects=max_redirects, max_body_bytes=max_body_bytes, settings=settings)
    return send(checked, settings)
