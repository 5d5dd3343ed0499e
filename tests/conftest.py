"""Shared fixtures: a real PostgreSQL test database, worker subprocesses, waiting on conditions."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connections

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


LEADER = re.compile(r"maintenance (\S+) is the leader \(token (\d+)\)")  # its log line when it gains the lead


class WorkerProcess:
    """A real `manage.py pgqueue_worker` subprocess on the test database."""

    @staticmethod
    def database_url() -> str:
        """The URL of the test database (children must use it, not the settings' DATABASE_URL)."""
        db = connections["default"].settings_dict
        auth = quote(db["USER"] or "") + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "")
        return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, "DATABASE_URL": self.database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(os.environ.get("PGQUEUE_TEST_LOGS", "/tmp")) / f"pgqueue-worker-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "pgqueue_worker", "--log-level", "DEBUG", *args],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def leads(self) -> list[tuple[str, int]]:
        """The (maintenance process, token) of each lead its maintenance processes gained, in order."""
        return [(holder, int(token)) for holder, token in LEADER.findall(self.output())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def start_worker(transactional_db: None) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(*args, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    connections.close_all()


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_for


# The engine's process and pooler tiers (raw SQL, forked workers: the same on every Django) run on one Django
# in CI; the other environment sets this and runs what depends on Django: models, ORM, admin, settings,
# enqueue, the django.tasks backend (its worker tests included). CI time stays under 15 minutes.
ENGINE_TIERS_ELSEWHERE = os.environ.get("PGQUEUE_ENGINE_TIERS_ELSEWHERE") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ENGINE_TIERS_ELSEWHERE:
        return
    skip = pytest.mark.skip(reason="the engine's process and pooler tiers and the packaging tests run in the "
                                   "py311-django52 environment")
    for item in items:
        path = Path(str(item.path)).relative_to(ROOT).as_posix()
        if (path.startswith("tests/process/") and path != "tests/process/test_tasks.py") or \
                path.startswith(("tests/pooler/", "tests/packaging/")):
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Stop the embedded server this run started (CI must not leave a daemon behind).
    data = os.environ.get("PGQUEUE_TEST_DEVDB")
    if data and os.environ.get("PGQUEUE_KEEP_DEVDB") != "1":
        from pgqueue import devdb

        connections.close_all()
        try:
            devdb.stop(data)
        except Exception as exc:  # pragma: no cover
            print(f"could not stop the embedded PostgreSQL: {exc}", file=sys.stderr)
