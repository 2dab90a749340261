"""Fixtures for the Kubernetes backend's tests: the real control plane, and API replicas
whose kubeconfig is the project's own Role in a fresh namespace."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import KubernetesSettings, StateSettings
from tests.cluster import Namespace
from tests.conftest import RunningApp, make_settings, start_app, stop_app

__all__ = ["AppFactory", "k8s_app_factory", "ready_warm"]

AppFactory = Callable[..., RunningApp]
WARM = "k8si.io/pool=bash,k8si.io/state=warm"
_SHARED_KEY = "replicas-of-one-deployment-share-this-key"


def ready_warm(kube: Namespace, selector: str = WARM) -> int:
    """Warm pods the apiserver reports Ready and not terminating."""
    return sum(1 for pod in kube.objects("pods", label_selector=selector)
               if any(c.get("type") == "Ready" and c.get("status") == "True"
                      for c in pod.get("status", {}).get("conditions", []))
               and not pod["metadata"].get("deletionTimestamp"))


@pytest.fixture
def k8s_app_factory(tmp_path: Path, runtime_dir: Path, valkey_url: str,
                    kube: Namespace) -> Iterator[AppFactory]:
    """Starts API replicas with ``EXECUTION_BACKEND=kubernetes`` against the cluster."""
    running: list[tuple[Any, Any]] = []
    numbers = itertools.count()  # a data dir of its own, even for replicas started at once

    def start(pool_sizes: dict[str, int] | None = None, *,
              kubeconfig: Path | None = None, app_settings: dict[str, Any] | None = None,
              **kube_settings: Any) -> RunningApp:
        """``app_settings``: more of the replica's ``Settings`` (e.g. a shared store)."""
        config = KubernetesSettings(kubeconfig=str(kubeconfig or kube.kubeconfig_path),
                                    namespace=kube.namespace,
                                    **{"reap_interval": 1, "lease_seconds": 120,
                                       **kube_settings})
        # Replicas share STATE_HMAC_KEY, as a deployment's must (state, continuation tokens).
        settings = make_settings(tmp_path / f"replica{next(numbers)}", runtime_dir, valkey_url,
                                 state=StateSettings(hmac_key=_SHARED_KEY),
                                 execution_backend="kubernetes",
                                 pool_sizes=pool_sizes if pool_sizes is not None else {"bash": 2},
                                 kubernetes=config, **(app_settings or {}))
        app, server, thread = start_app(settings)
        running.append((server, thread))
        return app

    yield start
    for server, thread in running:
        stop_app(server, thread)
