"""The attack suite runs against both sandbox factories.

``api`` is overridden here: every module of ``tests/security`` gets an API whose
sandboxes come from nsjail, then one whose sandboxes come from the zygote (the
fork-server), and each attack case is reported per class and per factory
(``tests/conftest.py``). Where the zygote cannot run (not root, no cgroups, not
x86-64) its half is skipped with the backend's own reason; in CI it must run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningApp, make_settings, start_app, stop_app, wait_for_factory

FACTORIES = ("nsjail", "zygote")


@pytest.fixture(scope="module", params=FACTORIES)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        runtime_dir: Path, valkey_url: str) -> Iterator[RunningApp]:
    """An API whose local sandboxes come from one factory (the parameter)."""
    factory = str(request.param)
    settings = make_settings(tmp_path_factory.mktemp(f"attacks-{factory}"), runtime_dir,
                             valkey_url, sandbox_factory=factory)
    running, server, thread = start_app(settings)
    try:
        wait_for_factory(running, factory)
        yield running
    finally:
        stop_app(server, thread)
