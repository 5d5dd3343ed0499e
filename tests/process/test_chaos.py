"""The chaos suite's short run (tests/chaos/run.py): kills, session terminations, an idle transaction
holding a job's row, two PostgreSQL restarts and a job holding the interpreter past its lease, against two
supervisors; every job must succeed once acknowledged, and no two executions of a job may overlap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.pooler.conftest import INSTALLED as POOLER_INSTALLED

pytestmark = [pytest.mark.process,
              pytest.mark.skipif(os.environ.get("PGQUEUE_SKIP_CHAOS") == "1",
                                 reason="the chaos run checks the engine: one tox environment runs it (tox.ini)")]


@pytest.mark.parametrize("pooled", [False, True], ids=["direct", "through PgBouncer"])
def test_the_short_chaos_run_loses_nothing_and_never_runs_a_job_twice_at_once(tmp_path: Path, pooled: bool) -> None:
    if pooled and not POOLER_INSTALLED:
        if os.environ.get("PGQUEUE_REQUIRE_POOLER") == "1":
            pytest.fail("pgbouncer is not installed, and PGQUEUE_REQUIRE_POOLER=1 says the pooler runs must run")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    report_path = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, "tests/chaos/run.py", "--report", str(report_path),
                           *(["--pooled"] if pooled else [])], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert report["states"] == {"succeeded": report["jobs"]} and report["lost"] == 0
    assert report["overlaps"] == 0 and report["unbounded_executions"] == 0
    assert report["faults"] == {"idle_in_transaction": 1, "job_holds_interpreter": 1, "kill_supervisor_tree": 1,
                                "kill_worker": 3, "restart_postgresql": 2, "terminate_sessions": 1}
    assert report["hog_rescued_from_a_living_process"] == 0
    # once; through the pooler a database fault may also reach its own statements (a repeat the run explains)
    assert report["hog_executions"] == [1] or (pooled and report["hog_executions"] >= [1])
    # the enqueuer met the outages with a clear error, and every job it was told about exists once
    assert report["enqueue_errors_during_outages"] >= 1 and report["enqueued_twice"] == 0
    assert all(e.split(":")[0] in ("OperationalError", "InterfaceError") for e in report["enqueue_error_examples"])
    assert set(report["repeated_after"]) <= {"its process was killed", "it failed on a database fault"}
