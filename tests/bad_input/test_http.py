"""Bad pgqueue.http.request calls: refused at enqueue with InvalidJob (NotSerializable for json that is
not JSON) and a precise message, and no job written; the job itself refuses the same call when run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from pgqueue.contrib import http
from pgqueue.exceptions import InvalidJob, NotSerializable
from pgqueue.text import short_repr
from tests.bad_input.conftest import Refused

URL = "https://api.example.com/hook"
LONG_LABEL = f"http://{'a' * 64}.example/"
P = "Job pgqueue.http.request:"

# (id, error, message, method, url, keyword arguments)
CASES: list[tuple[str, type[BaseException], str, Any, Any, dict[str, Any]]] = [
    ("unknown method", InvalidJob, f"{P} method must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, "
     "got 'FETCH'.", "FETCH", URL, {}),
    ("method not text", InvalidJob, f"{P} method must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, "
     "got 5.", 5, URL, {}),
    ("url not text", InvalidJob, f"{P} url must be a string, got None.", "GET", None, {}),
    ("ftp scheme", InvalidJob, f"{P} url 'ftp://example.com/f' has the scheme 'ftp'; only http and https are "
     "allowed.", "GET", "ftp://example.com/f", {}),
    ("file scheme", InvalidJob, f"{P} url 'file:///etc/passwd' has the scheme 'file'; only http and https are "
     "allowed.", "GET", "file:///etc/passwd", {}),
    ("no scheme", InvalidJob, f"{P} url 'example.com/hook' has no scheme; start it with https:// or http://.",
     "GET", "example.com/hook", {}),
    ("no host", InvalidJob, f"{P} url 'http:///path' has no host.", "GET", "http:///path", {}),
    ("credentials", InvalidJob, f"{P} url 'https://***@example.com/x?y=1' holds a user name or password; URLs are "
     "shown in results and errors, so send credentials in a header instead: headers={'Authorization': ...}.",
     "GET", "https://user:pw@example.com/x?y=1", {}),
    ("port out of range", InvalidJob, f"{P} url 'http://example.com:99999/' cannot be parsed: Port out of range "
     "0-65535.", "GET", "http://example.com:99999/", {}),
    ("port 0", InvalidJob, f"{P} url 'http://example.com:0/' has the port 0; a port is from 1 to 65535.", "GET",
     "http://example.com:0/", {}),
    ("space in url", InvalidJob, f"{P} url 'http://example.com/a b' contains a space; percent-encode it as %20.",
     "GET", "http://example.com/a b", {}),
    ("newline in url", InvalidJob, f"{P} url 'http://example.com/\\nx' contains the control character U+000A.",
     "GET", "http://example.com/\nx", {}),
    ("bad host name", InvalidJob, f"{P} url 'http://exa$mple.com/' has an invalid host name 'exa$mple.com'.",
     "GET", "http://exa$mple.com/", {}),
    ("host label too long", InvalidJob, f"{P} url {short_repr(LONG_LABEL)} has a host name that DNS cannot "
     "hold (over 253 characters, or a part between dots over 63).", "GET", LONG_LABEL, {}),
    ("headers not a dict", InvalidJob, f"{P} headers must be a dict of header names to values, got a list.",
     "GET", URL, {"headers": ["X-A: 1"]}),
    ("header name with a space", InvalidJob, f"{P} header name 'X Bad' is not a valid HTTP header name (letters, "
     "digits and !#$%&'*+-.^_`|~).", "GET", URL, {"headers": {"X Bad": "1"}}),
    ("header name with CR LF", InvalidJob, f"{P} header name 'X\\r\\nA' is not a valid HTTP header name (letters, "
     "digits and !#$%&'*+-.^_`|~).", "GET", URL, {"headers": {"X\r\nA": "1"}}),
    ("header value with CR LF", InvalidJob, f"{P} header 'X-A' has a value with a line break (U+000D), which would "
     "end the header.", "GET", URL, {"headers": {"X-A": "1\r\nX-B: 2"}}),
    ("header value with LF", InvalidJob, f"{P} header 'X-A' has a value with a line break (U+000A), which would "
     "end the header.", "GET", URL, {"headers": {"X-A": "1\nX-B: 2"}}),
    ("header value not text", InvalidJob, f"{P} header 'X-A' must have a str value, got 5.", "GET", URL,
     {"headers": {"X-A": 5}}),
    ("header value with NUL", InvalidJob, f"{P} header 'X-A' has a value with the control character U+0000.",
     "GET", URL, {"headers": {"X-A": "a\x00"}}),
    ("header value not Latin-1", InvalidJob, f"{P} header 'X-A' has a value with '€', which HTTP headers cannot "
     "carry (Latin-1 only); percent-encode it.", "GET", URL, {"headers": {"X-A": "5 €"}}),
    ("Host header", InvalidJob, f"{P} header 'Host' is set by pgqueue from the URL and the body; leave it out.",
     "GET", URL, {"headers": {"Host": "internal.example"}}),
    ("header twice", InvalidJob, f"{P} header 'x-a' is given twice (as 'X-A' too); header names are "
     "case-insensitive.", "GET", URL, {"headers": {"X-A": "1", "x-a": "2"}}),
    ("body and json", InvalidJob, f"{P} give body or json, not both.", "POST", URL, {"body": "a", "json": {}}),
    ("body not text", InvalidJob, f"{P} body must be a str or None, got a list; send data as text, or give "
     "json=... for a JSON body.", "POST", URL, {"body": [1, 2]}),
    ("GET with json", InvalidJob, f"{P} a GET request takes no body or json.", "GET", URL, {"json": {"a": 1}}),
    ("HEAD with body", InvalidJob, f"{P} a HEAD request takes no body or json.", "HEAD", URL, {"body": "x"}),
    ("json not JSON", NotSerializable, f"{P} json cannot be sent as JSON (Object of type object is not JSON "
     "serializable).", "POST", URL, {"json": {"a": object()}}),
    ("json NaN", NotSerializable, f"{P} json cannot be sent as JSON (Out of range float values are not JSON "
     "compliant", "POST", URL, {"json": float("nan")}),
    ("timeout 0", InvalidJob, f"{P} timeout must be a number of seconds greater than 0, got 0.", "POST", URL,
     {"timeout": 0}),
    ("timeout negative", InvalidJob, f"{P} timeout must be a number of seconds greater than 0, got -1.", "POST", URL,
     {"timeout": -1}),
    ("timeout NaN", InvalidJob, f"{P} timeout must be a finite number of seconds, got nan.", "POST", URL,
     {"timeout": float("nan")}),
    ("timeout infinite", InvalidJob, f"{P} timeout must be a finite number of seconds, got inf.", "POST", URL,
     {"timeout": float("inf")}),
    ("timeout text", InvalidJob, f"{P} timeout must be a number of seconds, got '10'.", "POST", URL,
     {"timeout": "10"}),
    ("timeout bool", InvalidJob, f"{P} timeout must be a number of seconds, got True.", "POST", URL,
     {"timeout": True}),
    ("max_redirects negative", InvalidJob, f"{P} max_redirects must be an integer from 0 to 20, got -1.", "GET",
     URL, {"max_redirects": -1}),
    ("max_redirects too many", InvalidJob, f"{P} max_redirects must be an integer from 0 to 20, got 21.", "GET",
     URL, {"max_redirects": 21}),
    ("max_redirects not whole", InvalidJob, f"{P} max_redirects must be an integer from 0 to 20, got 2.5.", "GET",
     URL, {"max_redirects": 2.5}),
    ("max_redirects bool", InvalidJob, f"{P} max_redirects must be an integer from 0 to 20, got True.", "GET",
     URL, {"max_redirects": True}),
    ("max_body_bytes negative", InvalidJob, f"{P} max_body_bytes must be an integer from 0 to 67108864, got -1.",
     "GET", URL, {"max_body_bytes": -1}),
    ("unknown argument", InvalidJob, f"{P} the arguments do not fit request(", "GET", URL,
     {"params": {"a": 1}}),
]


@pytest.mark.parametrize(("error", "message", "method", "url", "kwargs"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_at_enqueue_and_no_job_written(refused: Refused, error: type[BaseException], message: str,
                                               method: Any, url: Any, kwargs: dict[str, Any]) -> None:
    refused(error, message, lambda: http.request.enqueue(method, url, **kwargs))


RUN_CASES = [c for c in CASES if c[0] != "unknown argument"]  # a call the function cannot take is not run


@pytest.mark.parametrize(("error", "message", "method", "url", "kwargs"), [c[1:] for c in RUN_CASES],
                         ids=[c[0] for c in RUN_CASES])
def test_the_job_refuses_the_same_call_when_it_runs(error: type[BaseException], message: str, method: Any,
                                                    url: Any, kwargs: dict[str, Any]) -> None:
    # A row written by other means (SQL, an older version) reaches the job body: it checks too, and the
    # job's policy makes InvalidJob final (no retries).
    with pytest.raises(error) as info:
        http.request(method, url, **kwargs)
    assert str(info.value).startswith(message)
    assert not http.request.is_retryable(info.value)


OTHER_WAYS: list[tuple[str, Callable[[], Any]]] = [
    ("options().enqueue", lambda: http.request.options(queue="hooks", max_attempts=2).enqueue("GET", "ftp://e.com/")),
    ("pgqueue.enqueue by name", lambda: pgqueue.enqueue("pgqueue.http.request", "GET", "ftp://e.com/")),
    ("enqueue_many, a bad call after a good one", lambda: http.request.enqueue_many(
        [("GET", "https://e.com/"), ("GET", "ftp://e.com/")])),
    ("pgqueue.enqueue_many", lambda: pgqueue.enqueue_many(
        [http.request.call("GET", "https://e.com/"), http.request.options(priority=3).call("GET", "ftp://e.com/")])),
]


@pytest.mark.parametrize("action", [w[1] for w in OTHER_WAYS], ids=[w[0] for w in OTHER_WAYS])
def test_every_way_of_enqueueing_checks_the_call(refused: Refused, action: Callable[[], Any]) -> None:
    refused(InvalidJob, f"{P} url 'ftp://e.com/' has the scheme 'ftp'; only http and https are allowed.", action)
