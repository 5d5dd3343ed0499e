"""Debian's chromium driven by Playwright (never a browser Playwright downloads): missing, it fails the test
where .ci/run requires the browser tests (PGQUEUE_REQUIRE_BROWSER=1), and skips it elsewhere."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("PGQUEUE_REQUIRE_BROWSER") == "1"


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if CHROMIUM is None:
        _missing("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run",
        ])
        yield launched
        launched.close()
