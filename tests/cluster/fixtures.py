"""Pytest fixtures: one real control plane per test session, a namespace per test.

Registered for the whole suite by ``tests/conftest.py`` (``pytest_plugins``), so
every directory shares one cluster per session. The first use builds the binaries if
the cache is cold (``scripts/kube-control-plane``) and starts the cluster; its
start-up time and memory are printed at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import KubeCluster, Namespace

__all__ = ["STARTED", "kube", "kube_cluster"]

#: Clusters started in this run, for the report at its end (``tests/conftest.py``).
STARTED: list[dict[str, object]] = []


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory,
                 runtime_dir: Path) -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, controller-manager, scheduler and the node agent."""
    with KubeCluster(tmp_path_factory.mktemp("cluster"), runtime_dir) as cluster:
        report: dict[str, object] = {"start_seconds": cluster.control_plane.start_seconds,
                                     "rss": cluster.control_plane.rss_bytes()}
        STARTED.append(report)
        yield cluster
        report["rss_end"] = cluster.control_plane.rss_bytes()


@pytest.fixture
def kube(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[Namespace]:
    """A fresh namespace whose kubeconfig is the API's ServiceAccount (the project's Role)."""
    namespace = kube_cluster.namespace(tmp_path / "kube")
    yield namespace
    namespace.close()
