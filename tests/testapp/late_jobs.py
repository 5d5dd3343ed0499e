"""A jobs module that fails to import until a flag file exists (a rolling deploy, as a worker sees it)."""

import os
from pathlib import Path

from pgqueue import job

if not Path(os.environ.get("PGQUEUE_TEST_IMPORT_FLAG", "/nonexistent")).exists():
    raise ImportError("this module is not deployed on this worker yet")


@job(queue="misbehave", max_attempts=3)
def arrives_late() -> str:
    return "deployed"
