"""An API with a short pause lease and few rounds, for the tests that reach those limits;
the Kubernetes tests' API replicas against the real control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import ProgrammaticSettings
from tests.conftest import RunningApp, make_settings, start_app, stop_app
from tests.k8s.conftest import k8s_app_factory

__all__ = ["LEASE", "ROUNDS", "k8s_app_factory", "short_api"]

#: Seconds a paused run of ``short_api`` waits for its tool results.
LEASE = 3
#: Rounds of tool calls a run of ``short_api`` may make.
ROUNDS = 3


@pytest.fixture(scope="module")
def short_api(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
              valkey_url: str) -> Iterator[RunningApp]:
    settings = make_settings(
        tmp_path_factory.mktemp("ptc-short"), runtime_dir, valkey_url,
        programmatic=ProgrammaticSettings(lease_seconds=LEASE, max_rounds=ROUNDS))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)
