"""Pytest fixtures: a fresh emulator per test, running in a background thread.

Import them into a ``conftest.py`` (``from tests.kubesim.fixtures import kubesim``);
nothing is registered globally. ``kubesim`` runs real executors (it needs the
sandbox runtime, from the ``runtime_dir`` fixture of ``tests/conftest.py``);
``fake_kubesim`` runs pods without processes, for tests of API and controller
semantics only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import KubeSim

__all__ = ["fake_kubesim", "kubesim"]


@pytest.fixture
def kubesim(tmp_path: Path, runtime_dir: Path) -> Iterator[KubeSim]:
    """An emulator whose pods run real sandboxed executors; namespace ``k8si-test``."""
    with KubeSim(namespace="k8si-test", runtime_dir=runtime_dir,
                 work_dir=tmp_path / "kubesim", kubeconfig_path=tmp_path / "kubeconfig",
                 bookmark_interval=0.2) as sim:
        yield sim


@pytest.fixture
def fake_kubesim(tmp_path: Path) -> Iterator[KubeSim]:
    """An emulator whose pods have no processes (they still get an IP and go Ready)."""
    with KubeSim(namespace="k8si-test", run_executors=False, work_dir=tmp_path / "kubesim",
                 kubeconfig_path=tmp_path / "kubeconfig", bookmark_interval=0.2) as sim:
        yield sim
