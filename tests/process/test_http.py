"""pgqueue.http.request run by real worker processes against a local server: a refused request goes dead
after one attempt whose row says why; an allowed one succeeds with its result; a 500 is retried."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from pgqueue import http
from pgqueue.models import Attempt, Job
from tests.conftest import wait_for
from tests.integration.test_http import Server, serve

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

FINISHED = ("succeeded", "dead", "cancelled")
ALLOW_LOCAL = {"PGQUEUE_HTTP_ALLOWED_NETWORKS": "127.0.0.1/32", "PGQUEUE_RETRY_BACKOFF": "0"}


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


def finished(*ids: int) -> bool:
    return Job.objects.filter(pk__in=ids, state__in=FINISHED).count() == len(ids)


def attempts(job_id: int) -> list[tuple[str, str, str]]:
    return list(Attempt.objects.filter(job_id=job_id).order_by("number").values_list("outcome", "error_class",
                                                                                     "message"))


def test_a_blocked_request_goes_dead_after_one_attempt_that_says_why(start_worker, server: Server) -> None:
    url = server.url("/json")
    handle = http.request.enqueue("POST", url, json={"order": 7})
    start_worker()
    wait_for(lambda: finished(handle.id), what="the blocked request")
    job = Job.objects.get(pk=handle.id)
    assert (job.state, job.reason_code, job.attempts, job.error_class) == (
        "dead", "non_retryable", 1, "pgqueue.http.BlockedRequest")
    [(outcome, error_class, message)] = attempts(handle.id)
    assert (outcome, error_class) == ("failed", "pgqueue.http.BlockedRequest")
    assert message == (f"BlockedRequest: Refused POST {url}: address 127.0.0.1 is a loopback address. To allow it, "
                       "add a network that holds it to PGQUEUE['HTTP_ALLOWED_NETWORKS'].")
    assert server.seen == []


def test_allowed_requests_succeed_retry_or_end_as_their_answer_says(start_worker, server: Server) -> None:
    ok = http.request.enqueue("GET", server.url("/json"))
    flaky = http.request.enqueue("POST", server.url("/flaky/once"), json={"n": 1})
    missing = http.request.enqueue("GET", server.url("/status/404"))
    metadata = server.url(f"/to?url={quote('http://169.254.169.254/latest/meta-data/', safe='')}")
    redirected = http.request.enqueue("GET", metadata)
    start_worker(env=ALLOW_LOCAL)
    wait_for(lambda: finished(ok.id, flaky.id, missing.id, redirected.id), what="four HTTP jobs")

    job = Job.objects.get(pk=ok.id)
    assert (job.state, job.attempts) == ("succeeded", 1)
    assert job.result["status"] == 200 and job.result["body"] == '{"ok": true}'
    assert job.result["url"] == server.url("/json") and job.result["truncated"] is False
    assert job.result["headers"]["content-type"] == "application/json" and job.result["elapsed"] >= 0

    job = Job.objects.get(pk=flaky.id)
    assert (job.state, job.attempts, job.result["body"]) == ("succeeded", 2, '{"try": 2}')
    first, second = attempts(flaky.id)
    assert first == ("failed", "pgqueue.http.RetryableHttpError",
                     f"RetryableHttpError: 500 Internal Server Error from {server.url('/flaky/once')}: "
                     "database is restarting")
    assert second == ("succeeded", "", "")

    job = Job.objects.get(pk=missing.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "non_retryable", 1)
    assert attempts(missing.id) == [("failed", "pgqueue.http.HttpClientError",
                                     f"HttpClientError: 404 Not Found from {server.url('/status/404')}: status 404 body")]

    job = Job.objects.get(pk=redirected.id)
    assert (job.state, job.reason_code, job.attempts) == ("dead", "non_retryable", 1)
    [(_, error_class, message)] = attempts(redirected.id)
    assert error_class == "pgqueue.http.BlockedRequest"
    assert message == (f"BlockedRequest: Refused the redirect (302) from {metadata} to "
                       "http://169.254.169.254/latest/meta-data/: address 169.254.169.254 is a cloud metadata "
                       "address. To allow it, add a network that holds it to PGQUEUE['HTTP_ALLOWED_NETWORKS'].")
    assert [s.path.split("?")[0] for s in server.seen].count("/flaky/once") == 2
