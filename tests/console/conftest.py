"""Fixtures of the console tests: an API with an admin key, and real headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright (``executable_path``; no
browser download). Without Playwright or Chromium the browser tests are skipped
on a developer's machine and fail in CI (``CI`` set), where both must be installed.
Screenshots go to ``K8SI_TEST_ARTIFACTS`` (default ``.k8si-test/artifacts``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunningApp, make_settings, start_app, stop_app

ADMIN_KEY = "admin-key-0123456789abcdef"
CHROMIUM = os.environ.get("K8SI_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def console_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                valkey_url: str) -> Iterator[RunningApp]:
    """An API whose operator key is ``ADMIN_KEY``, with warm Python and Bash pools (and
    runtime sessions: the operator page lists them)."""
    settings = make_settings(tmp_path_factory.mktemp("console"), runtime_dir, valkey_url,
                             admin_api_keys=(ADMIN_KEY,), pool_sizes={"py": 1, "bash": 1},
                             execution_profiles=("default", "stateful"))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("K8SI_TEST_ARTIFACTS", REPO / ".k8si-test" / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need {reason} in CI")
    pytest.skip(f"browser tests need {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module: Playwright's sync API keeps an event loop running in
    this thread while it is open, so it must close before other tests use asyncio."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright (pip install playwright)")
    if not shutil.which(CHROMIUM):
        _unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    opened = context.new_page()
    yield opened
    context.close()
