"""A warm and a cold execution on a cluster: any cluster given by ``KUBECONFIG``, else the
suite's own real control plane (``tests/cluster``), so it never skips.

Against your own cluster it needs the runtime images pushed (``runtime-images/build.sh
--push``), in ``K8S_NAMESPACE`` (default: the kubeconfig's) the RBAC of
``manifests/rbac.yaml``, and pod IPs reachable from where the tests run (see the README,
"Tests against the real control plane").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.settings import KubernetesSettings
from tests.conftest import make_settings, start_app, stop_app


@pytest.fixture
def kubernetes(request: pytest.FixtureRequest) -> KubernetesSettings:
    """The cluster to run on: ``KUBECONFIG`` if set, else a namespace of the suite's own."""
    if os.environ.get("KUBECONFIG"):
        return KubernetesSettings(kubeconfig=os.environ["KUBECONFIG"],
                                  namespace=os.environ.get("K8S_NAMESPACE") or None)
    kube = request.getfixturevalue("kube")
    return KubernetesSettings(kubeconfig=str(kube.kubeconfig_path), namespace=kube.namespace)


def test_warm_and_cold_execution_on_a_real_cluster(tmp_path: Path, runtime_dir: Path,
                                                   valkey_url: str,
                                                   kubernetes: KubernetesSettings) -> None:
    settings = make_settings(tmp_path, runtime_dir, valkey_url, execution_backend="kubernetes",
                             pool_sizes={"py": 1}, kubernetes=kubernetes)
    app, server, thread = start_app(settings)
    try:
        with app.client() as client:
            warm = client.post("/exec", json={"lang": "py", "code": "print(6 * 7)"}).json()
            assert warm["stdout"] == "42\n", warm
            cold = client.post("/exec", json={"lang": "bash", "code": "echo cold"}).json()
            assert cold["stdout"] == "cold\n", cold
    finally:
        stop_app(server, thread)
