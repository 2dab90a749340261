"""A second API for the state tests that need other settings than the shared one.

Small size caps (so limits are reached with little data), an archive period of one
second, and no capture after a failed run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import StateSettings
from tests.conftest import RunningApp, make_settings, start_app, stop_app

SMALL_MAX_BYTES = 256 * 1024
SMALL_MAX_RAW_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="session")
def small_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
              valkey_url: str) -> Iterator[RunningApp]:
    state = StateSettings(max_bytes=SMALL_MAX_BYTES, max_raw_bytes=SMALL_MAX_RAW_BYTES,
                          archive_after=1, capture_on_error=False)
    settings = make_settings(tmp_path_factory.mktemp("small-state"), runtime_dir, valkey_url,
                             state=state)
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)
