"""Fixtures for the Kubernetes backend's tests: the emulator, and API apps against it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from app.settings import KubernetesSettings
from tests.conftest import RunningApp, make_settings, start_app, stop_app
from tests.kubesim import KubeSim
from tests.kubesim.fixtures import kubesim

__all__ = ["k8s_app_factory", "kubesim"]

AppFactory = Callable[..., RunningApp]


@pytest.fixture
def k8s_app_factory(tmp_path: Path, runtime_dir: Path, valkey_url: str,
                    kubesim: KubeSim) -> Iterator[AppFactory]:
    """Starts API replicas with ``EXECUTION_BACKEND=kubernetes`` against the emulator."""
    running: list[tuple[Any, Any]] = []

    def start(pool_sizes: dict[str, int] | None = None, **kube: Any) -> RunningApp:
        config = KubernetesSettings(kubeconfig=str(kubesim.kubeconfig_path),
                                    namespace=kubesim.namespace,
                                    **{"reap_interval": 1, "lease_seconds": 120, **kube})
        settings = make_settings(tmp_path / f"replica{len(running)}", runtime_dir, valkey_url,
                                 execution_backend="kubernetes",
                                 pool_sizes=pool_sizes if pool_sizes is not None else {"bash": 2},
                                 kubernetes=config)
        app, server, thread = start_app(settings)
        running.append((server, thread))
        return app

    yield start
    for server, thread in running:
        stop_app(server, thread)


def with_kube(app: RunningApp, **changes: Any) -> KubernetesSettings:
    return attrs.evolve(app.settings.kubernetes, **changes)
