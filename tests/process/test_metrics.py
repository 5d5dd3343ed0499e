"""pgqueue_worker --metrics-port on real processes: counters summed across two forked workers after a known
workload, the token asked for, and the start refused behind an empty or placeholder token."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from pgqueue.models import Job, WorkerProcess
from tests.conftest import ROOT, wait_for
from tests.conftest import WorkerProcess as WorkerSubprocess
from tests.integration.test_metrics import scrape, value
from tests.testapp import jobs

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]
TOKEN = "a-long-random-token-for-the-process-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_counters_add_up_across_two_worker_processes(start_worker) -> None:
    ok = [jobs.add.enqueue(i, i) for i in range(40)]
    doomed = [jobs.give_up.enqueue() for _ in range(5)]  # max_attempts=1: dead after one failed attempt
    flaky = [jobs.flaky.enqueue(f"f{i}", 1) for i in range(3)]  # one failure, then success
    port = free_port()
    start_worker("--processes", "2", "--concurrency", "4", "--queues", "default,marks", "--metrics-port", str(port),
                 "--metrics-address", "127.0.0.1", env={"PGQUEUE_METRICS_TOKEN": TOKEN})
    total = len(ok) + len(doomed) + len(flaky)
    wait_for(lambda: Job.objects.filter(state__in=["succeeded", "dead"]).count() == total, what="the workload")
    assert WorkerProcess.objects.filter(kind="worker", state="running").count() == 2

    def counted() -> dict:
        status, body = get(port)
        samples = scrape(body) if status == 200 else {}
        done = sum(v for (name, _), v in samples.items() if name == "pgqueue_jobs_total")
        return samples if done == total + len(flaky) else {}

    samples = wait_for(counted, what="the counters of every attempt")
    task = "tests.testapp.jobs."
    assert value(samples, "pgqueue_jobs_total", queue="default", task=task + "add", outcome="succeeded") == 40
    assert value(samples, "pgqueue_jobs_total", queue="default", task=task + "give_up", outcome="dead") == 5
    assert value(samples, "pgqueue_jobs_total", queue="default", task=task + "flaky", outcome="retried") == 3
    assert value(samples, "pgqueue_jobs_total", queue="default", task=task + "flaky", outcome="succeeded") == 3
    assert value(samples, "pgqueue_jobs_started_total", queue="default", task=task + "add") == 40
    assert value(samples, "pgqueue_jobs_started_total", queue="default", task=task + "flaky") == 6
    assert value(samples, "pgqueue_pickup_latency_seconds_count", queue="default") == total + len(flaky)
    assert value(samples, "pgqueue_attempt_duration_seconds_count", queue="default", task=task + "add",
                 outcome="succeeded") == 40
    # the gauges come from the database in the same scrape
    assert value(samples, "pgqueue_queue_jobs", queue="default", state="dead") == 5
    assert value(samples, "pgqueue_queue_workers", queue="default") == 2
    assert value(samples, "pgqueue_processes", kind="metrics") == 1
    # the memory of the supervisor's tree: each process (supervisor, 2 workers, maintenance, metrics), and
    # the sum of their PSS
    pids = {labels for (name, labels) in samples if name == "pgqueue_process_pss_bytes"}
    assert len(pids) == 5, pids
    live = set(WorkerProcess.objects.filter(state="running").values_list("pid", flat=True))
    assert {int(dict(labels)["pid"]) for labels in pids} == live
    pss = sum(v for (name, _), v in samples.items() if name == "pgqueue_process_pss_bytes")
    assert samples[("pgqueue_supervisor_pss_bytes", ())] == pss > 10 * 2**20
    assert all(0 < v < pss for (name, _), v in samples.items() if name == "pgqueue_process_uss_bytes")


def test_the_port_asks_for_the_token(start_worker) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-address", "127.0.0.1",
                          env={"PGQUEUE_METRICS_TOKEN": TOKEN})
    wait_for(lambda: WorkerProcess.objects.filter(kind="metrics", state="running").exists(), what="the metrics process")
    status, body = get(port, token=None)
    assert status == 401 and "Bearer" in body
    assert get(port, token="wrong")[0] == 401
    status, body = get(port)
    assert status == 200 and "pgqueue_queue_jobs" in body
    for path in ("/nothing-here", "/", "/metrics/"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
        assert missing.value.code == 404, path
    assert worker.proc.poll() is None
    metrics_id = WorkerProcess.objects.get(kind="metrics", state="running").id
    maintenance_id = WorkerProcess.objects.get(kind="maintenance", state="running").id
    assert "-x0-" in metrics_id and "-m0-" in maintenance_id  # not named alike
    assert f"metrics {metrics_id} started, serving http://127.0.0.1:{port}/metrics" in worker.output()


def test_the_port_serves_scrapes_beside_idle_connections_and_only_get_and_head(start_worker) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-address", "127.0.0.1",
                          env={"PGQUEUE_METRICS_TOKEN": TOKEN})
    wait_for(lambda: WorkerProcess.objects.filter(kind="metrics", state="running").exists(), what="the metrics process")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # connected, sending nothing
    try:
        status, body = get(port)  # would wait behind the idle connections if they were served in turn
        assert status == 200 and "pgqueue_queue_jobs" in body
        for method in ("POST", "PUT", "DELETE"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method=method, data=b"",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD", method
        head = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="HEAD",
                                      headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.status == 200 and response.read() == b""
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        assert time.monotonic() - started < 10  # the idle connections do not hold the stop up
    finally:
        for conn in idle:
            conn.close()


@pytest.mark.parametrize(("token", "problem"), [
    ("", "it is empty"),
    ("changeme", "'changeme' is a placeholder, not a secret"),
])
def test_the_start_is_refused_without_a_real_token_when_debug_is_off(token: str, problem: str) -> None:
    env = {"DATABASE_URL": WorkerSubprocess.database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PGQUEUE_METRICS_TOKEN": token, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "django", "pgqueue_worker", "--metrics-port", str(free_port())],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"--metrics-port needs PGQUEUE['METRICS_TOKEN'] (or PGQUEUE_METRICS_TOKEN) set to a secret when DEBUG is " \
           f"off, and {problem}." in result.stderr
    assert not WorkerProcess.objects.exists()


def test_a_port_in_use_stops_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"DATABASE_URL": WorkerSubprocess.database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
               "PGQUEUE_METRICS_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
        result = subprocess.run([sys.executable, "-m", "django", "pgqueue_worker", "--metrics-port", str(port),
                                 "--metrics-address", "127.0.0.1"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: Address already in use." in result.stderr
