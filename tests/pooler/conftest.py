"""The pooler tier: PgBouncer (1.18, Debian's) in transaction mode in front of the test database, with fewer
server connections than clients, started for each test that asks for it. Skipped when pgbouncer is not
installed, except where PGQUEUE_REQUIRE_POOLER=1 (.ci/run installs it and sets that)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import devdb
from tests.conftest import WorkerProcess

REQUIRED = os.environ.get("PGQUEUE_REQUIRE_POOLER") == "1"
INSTALLED = bool(shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists())


class Pooler:
    """A running PgBouncer: `url` goes through the pool, `direct` to the server itself."""

    def __init__(self, folder: Path, *, pool_size: int, reset_always: bool) -> None:
        if not INSTALLED:
            if REQUIRED:
                pytest.fail("pgbouncer is not installed, and PGQUEUE_REQUIRE_POOLER=1 says the pooler tier must run")
            pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
        self.folder = folder
        self.direct = WorkerProcess.database_url()
        self.url = devdb.start_pooler(self.direct, folder, pool_size=pool_size, reset_always=reset_always)

    def env(self, *, listen: bool = True, **more: str) -> dict[str, str]:
        """A pgqueue_worker's environment: the pool as its database, POOLER 'transaction', and the server
        itself as LISTEN_DATABASE (unless listen=False: the workers poll)."""
        env = {"DATABASE_URL": self.url, "PGQUEUE_POOLER": "transaction", "PGQUEUE_TEST_DIRECT_URL": self.direct}
        if listen:
            env["PGQUEUE_LISTEN_DATABASE"] = "direct"
        return {**env, **more}

    def connect(self) -> psycopg.Connection:
        """A plain client of the pool (prepares nothing, as a transaction-pooled client must)."""
        return psycopg.connect(self.url, autocommit=True, prepare_threshold=None)

    def stop(self) -> None:
        devdb.stop_pooler(self.folder)


@pytest.fixture
def pooler(transactional_db: None) -> Iterator[Callable[..., Pooler]]:
    started: list[Pooler] = []

    def start(*, pool_size: int = 2, reset_always: bool = True) -> Pooler:
        # not under pytest's tmp_path: as root, pgbouncer runs as another user, who must reach its folder
        pool = Pooler(Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-")), pool_size=pool_size,
                      reset_always=reset_always)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.stop()
        shutil.rmtree(pool.folder, ignore_errors=True)
