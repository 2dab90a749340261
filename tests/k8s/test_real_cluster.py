"""Against a real cluster: runs only when ``KUBECONFIG`` is set (see the README).

It needs the runtime images pushed (``runtime-images/build.sh --push``) and, in the
kubeconfig's namespace, the RBAC of ``manifests/rbac.yaml``. CI has no cluster, so
it is skipped there; the emulator tests cover the same paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.settings import KubernetesSettings
from tests.conftest import make_settings, start_app, stop_app

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                                reason="needs a real cluster: set KUBECONFIG")


def test_warm_and_cold_execution_on_a_real_cluster(tmp_path: Path, runtime_dir: Path,
                                                   valkey_url: str) -> None:
    config = KubernetesSettings(kubeconfig=os.environ["KUBECONFIG"],
                                namespace=os.environ.get("K8S_NAMESPACE") or None)
    settings = make_settings(tmp_path, runtime_dir, valkey_url, execution_backend="kubernetes",
                             pool_sizes={"py": 1}, kubernetes=config)
    app, server, thread = start_app(settings)
    try:
        with app.client() as client:
            warm = client.post("/exec", json={"lang": "py", "code": "print(6 * 7)"}).json()
            assert warm["stdout"] == "42\n", warm
            cold = client.post("/exec", json={"lang": "bash", "code": "echo cold"}).json()
            assert cold["stdout"] == "cold\n", cold
    finally:
        stop_app(server, thread)
