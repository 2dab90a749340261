"""The dev overlay's warm pools, applied to the Kubernetes API emulator (tests/kubesim),
serve a real execution through the real Kubernetes backend.

The built ``dev`` overlay's pool Deployments are POSTed to the emulator in the
namespace and with the ConfigMap the overlay gives the API; the emulator's
ReplicaSet controller makes their pods and its kubelet starts each pod's executor
as a real local sandbox at the pod IP. The ``KubernetesBackend``, configured from the
same ConfigMap, then claims one of those pods by label patch and runs code in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.backends.kubernetes import KubernetesBackend
from app.backends.kubernetes.templates import LABEL_POOL, LABEL_STATE
from app.settings import Settings
from tests.kubesim import KubeSim
from tests.kubesim.testing import pod_ready

from .kube import Obj, config_data, pools

pytestmark = pytest.mark.sandbox

CODE = "import os, sys; print(os.environ['HOSTNAME'], sys.version_info[:2], 6 * 7)"


def _deployments_url(sim: KubeSim, namespace: str) -> str:
    return f"{sim.url}/apis/apps/v1/namespaces/{namespace}/deployments"


def _dev(built: dict[str, list[Obj]], kubeconfig: Path) -> tuple[list[Obj], Settings]:
    objects = built["dev"]
    settings = Settings.from_env({**config_data(objects), "KUBECONFIG": str(kubeconfig)})
    return pools(objects), settings


def test_the_emulator_accepts_the_dev_pools_as_built(built: dict[str, list[Obj]],
                                                     tmp_path: Path) -> None:
    dev_pools, settings = _dev(built, tmp_path / "kubeconfig")
    namespace = settings.kubernetes.namespace
    assert namespace
    with KubeSim(namespace=namespace, run_executors=False, work_dir=tmp_path / "sim",
                 kubeconfig_path=tmp_path / "kubeconfig") as sim:
        for pool in dev_pools:
            response = httpx.post(_deployments_url(sim, namespace), json=pool, timeout=30)
            assert response.status_code == 201, response.text


@pytest.fixture
def dev_cluster(built: dict[str, list[Obj]], runtime_dir: Path,
                tmp_path: Path) -> Iterator[tuple[KubeSim, Settings]]:
    """The emulator with the dev overlay's pools applied and one warm pod ready."""
    dev_pools, settings = _dev(built, tmp_path / "kubeconfig")
    namespace = settings.kubernetes.namespace
    assert namespace and dev_pools
    with KubeSim(namespace=namespace, runtime_dir=runtime_dir, work_dir=tmp_path / "sim",
                 kubeconfig_path=tmp_path / "kubeconfig") as sim:
        for pool in dev_pools:
            response = httpx.post(_deployments_url(sim, namespace), json=pool, timeout=30)
            assert response.status_code == 201, response.text
        sim.wait_for(lambda: _warm(sim, "py"), timeout=180, message="a warm py pod")
        yield sim, settings


def _warm(sim: KubeSim, lang: str) -> list[Obj]:
    listed = sim.objects("pods", label_selector=f"{LABEL_POOL}={lang},{LABEL_STATE}=warm")
    return [p for p in listed if pod_ready(p)]


async def _claim_and_run(sim: KubeSim, backend: KubernetesBackend) -> tuple[str, Any]:
    await backend.start()
    try:
        lease = await backend.acquire("py", "S" * 21, "default")
        try:
            result = await lease.executor.execute(
                lang="py", code=CODE, args=[], timeout=20, request_id="deploy-test",
                transport_timeout=60)
        finally:
            await backend.release(lease)
        # Release deletes the pod in the background; stop() would cancel that task.
        pod = lease.sandbox_id.partition("/")[2]
        for _ in range(600):
            if sim.get("pods", pod) is None:
                break
            await asyncio.sleep(0.05)
        return lease.sandbox_id, result
    finally:
        await backend.stop()


def test_a_real_execution_runs_in_a_pod_of_the_dev_pool(
        dev_cluster: tuple[KubeSim, Settings]) -> None:
    sim, settings = dev_cluster
    before = {p["metadata"]["name"] for p in _warm(sim, "py")}
    assert settings.pool_size("py") == len(before) == 1
    sandbox_id, result = asyncio.run(_claim_and_run(sim, KubernetesBackend(settings)))
    kind, _, pod = sandbox_id.partition("/")
    assert kind == "pod" and pod in before, "a warm pod of the dev pool was claimed"
    assert result.status == "ok" and result.exit_code == 0, result.stderr
    words = result.stdout.split()
    assert words[0] == pod and words[-1] == "42", result.stdout
    assert sim.get("pods", pod) is None, "the used pod was deleted, never reused"
    # The Deployment from the overlay refills the pool by itself.
    sim.wait_for(lambda: {p["metadata"]["name"] for p in _warm(sim, "py")} - before,
                 timeout=180, message="the pool refilled")
