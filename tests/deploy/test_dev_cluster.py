"""The dev overlay applied for real to the real control plane: its warm pool comes up
and serves a real execution through the real Kubernetes backend.

``kubectl apply --server-side -k`` applies the ``dev`` overlay, as built, as the
cluster admin, with two fields changed and nothing else (a wrapping kustomization;
``test_the_applied_overlay_is_the_dev_overlay`` proves it): the API Deployment at 0
replicas and the Garage init Job suspended. The node agent of the test cluster runs
executor pods only (``tests/cluster/node_agent.py``), so it would refuse the API's
and the init Job's pods and their controllers would create replacements endlessly;
the API here is the test's own ``KubernetesBackend``. Valkey and Garage
(StatefulSets) and the reaper (CronJob) make no pods: the test cluster runs no
StatefulSet or CronJob controller.

Then the real Deployment and ReplicaSet controllers make the pool's pod, the
scheduler binds it, the node agent starts its executor as a local sandbox at the pod
IP and reports it Ready. The backend, configured from the ConfigMap the overlay put
in the cluster and authenticated as the ``k8si-api`` ServiceAccount (the overlay's
own Role in ``k8si-sandbox``), claims that pod by label patch, runs Python in it,
deletes it; the Deployment refills the pool. At the end every applied object is
deleted again (not the namespaces, ServiceAccount and RBAC, which the harness
applied from the same files for the whole session) and the pool's sandboxes are gone.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.backends.kubernetes import KubernetesBackend
from app.backends.kubernetes.templates import LABEL_POOL, LABEL_STATE
from app.settings import Settings
from tests.cluster import KubeCluster, Namespace
from tests.cluster.control_plane import write_kubeconfig

from .admission import apply, harness_objects
from .kube import API_NAMESPACE, Obj, build, config_data, pools

pytestmark = pytest.mark.sandbox

CODE = "import os, sys; print(os.environ['HOSTNAME'], sys.version_info[:2], 6 * 7)"
SANDBOX_NAMESPACE = "k8si-sandbox"
API_ACCOUNT = "k8si-api"
#: The wrapper: the dev overlay, the API and the init Job kept from making pods here.
WRAPPER = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../dev
patches:
  - target: {group: apps, kind: Deployment, name: k8si-api}
    patch: '[{"op": "add", "path": "/spec/replicas", "value": 0}]'
  - target: {group: batch, kind: Job, name: k8si-garage-init}
    patch: '[{"op": "add", "path": "/spec/suspend", "value": true}]'
"""


def _key(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _ready(pod: Obj) -> bool:
    return (any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or [])
            and not pod["metadata"].get("deletionTimestamp"))


@pytest.fixture(scope="module")
def dev_applied(kube_cluster: KubeCluster, scratch: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Obj]]:
    """The dev overlay (wrapped) applied for real; its objects deleted afterwards."""
    wrapper = scratch / "kustomize" / "overlays" / "dev-on-the-test-node"
    wrapper.mkdir(exist_ok=True)
    (wrapper / "kustomization.yaml").write_text(WRAPPER)
    objects = build(wrapper)
    keep = harness_objects()
    try:
        done = apply(kube_cluster, wrapper, dry_run=False)
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr
        yield objects
    finally:
        _delete(kube_cluster, [o for o in objects if _key(o) not in keep],
                tmp_path_factory.mktemp("dev-delete"))


def _delete(cluster: KubeCluster, objects: list[Obj], directory: Path) -> None:
    """Delete what the test applied, and wait until the pool's sandboxes are gone."""
    manifest = directory / "applied.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    cluster.run_kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=120s",
                        "--cascade=foreground", "-f", str(manifest))
    sandbox = Namespace(cluster, SANDBOX_NAMESPACE, Path(directory / "unused"))
    sandbox.wait_for(lambda: not sandbox.objects("pods"), timeout=120,
                     message="the dev pool's pods deleted")
    api = Namespace(cluster, API_NAMESPACE, Path(directory / "unused"))
    assert not api.objects("pods"), "the wrapped overlay made no pod in the API namespace"


@pytest.fixture(scope="module")
def sandbox_ns(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> Namespace:
    """A view of the overlay's execution namespace (``objects``/``get``/``wait_for``)."""
    return Namespace(kube_cluster, SANDBOX_NAMESPACE,
                     tmp_path_factory.mktemp("sandbox-ns") / "unused")


def _warm(namespace: Namespace, lang: str) -> list[Obj]:
    listed = namespace.objects("pods", label_selector=f"{LABEL_POOL}={lang},{LABEL_STATE}=warm")
    return [p for p in listed if _ready(p)]


def test_the_applied_overlay_is_the_dev_overlay(dev_applied: list[Obj],
                                                built: dict[str, list[Obj]]) -> None:
    """Everything applied is the dev overlay's, with exactly the two documented changes."""
    expected = {_key(o): copy.deepcopy(o) for o in built["dev"]}
    expected[("Deployment", API_NAMESPACE, "k8si-api")]["spec"]["replicas"] = 0
    expected[("Job", API_NAMESPACE, "k8si-garage-init")]["spec"]["suspend"] = True
    assert {_key(o): o for o in dev_applied} == expected


def test_every_object_of_the_overlay_is_in_the_cluster(kube_cluster: KubeCluster,
                                                       dev_applied: list[Obj]) -> None:
    missing = []
    for obj in dev_applied:
        group = obj["apiVersion"].rpartition("/")[0]
        meta = obj["metadata"]
        args = ["get", f"{obj['kind']}{'.' + group if group else ''}/{meta['name']}",
                "-o", "json"]
        if "namespace" in meta:
            args += ["-n", meta["namespace"]]
        done = kube_cluster.run_kubectl(*args, check=False)
        if done.returncode != 0:
            missing.append(f"{obj['kind']} {meta['name']}: {done.stderr.strip()}")
            continue
        stored = json.loads(done.stdout)
        labels = stored["metadata"].get("labels") or {}
        if (meta.get("labels") or {}).items() - labels.items():
            missing.append(f"{obj['kind']} {meta['name']}: labels {labels}")
    assert not missing, missing


def test_the_dev_pool_comes_up_through_the_real_controllers(
        dev_applied: list[Obj], sandbox_ns: Namespace) -> None:
    (pool,) = pools(dev_applied)
    assert pool["metadata"]["namespace"] == SANDBOX_NAMESPACE
    size = int(pool["spec"]["replicas"])
    warm = sandbox_ns.wait_for(lambda: len(_warm(sandbox_ns, "py")) == size
                               and _warm(sandbox_ns, "py"), timeout=180,
                               message="the dev pool's warm pod Ready")
    (pod,) = warm
    # Made by the ReplicaSet that the Deployment controller made for the overlay's pool.
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["kind"] == "ReplicaSet" and owner["controller"] is True
    replica_set = sandbox_ns.get("replicasets", owner["name"])
    assert replica_set is not None
    (deployment_owner,) = replica_set["metadata"]["ownerReferences"]
    assert (deployment_owner["kind"], deployment_owner["name"]) == (
        "Deployment", pool["metadata"]["name"])
    assert pod["spec"]["nodeName"] == sandbox_ns.cluster.node_name
    assert pod["status"]["podIP"].startswith("127.") and pod["status"]["podIP"] != "127.0.0.1"
    assert pod["spec"]["containers"][0]["image"] == pool["spec"]["template"]["spec"][
        "containers"][0]["image"]


def _backend_settings(cluster: KubeCluster, kubeconfig: Path) -> Settings:
    """Settings from the overlay's ConfigMap as the cluster stores it, and a kubeconfig
    whose user is the k8si-api ServiceAccount."""
    done = cluster.run_kubectl("get", "configmap", "-n", API_NAMESPACE, "-l",
                               "app.kubernetes.io/name=k8si-api", "-o", "json")
    maps: list[Obj] = json.loads(done.stdout)["items"]
    settings = Settings.from_env({**config_data(maps), "KUBECONFIG": str(kubeconfig)})
    assert settings.kubernetes.namespace == SANDBOX_NAMESPACE
    write_kubeconfig(kubeconfig, cluster.url, cluster.control_plane.pki.ca_cert,
                     cluster.api_token, SANDBOX_NAMESPACE, API_ACCOUNT)
    return settings


async def _claim_and_run(backend: KubernetesBackend, sandbox_ns: Namespace
                         ) -> tuple[str, Any]:
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
        for _ in range(1200):
            if sandbox_ns.get("pods", pod) is None:
                break
            await asyncio.sleep(0.05)
        return lease.sandbox_id, result
    finally:
        await backend.stop()


def test_a_real_execution_runs_in_a_pod_of_the_dev_pool(
        kube_cluster: KubeCluster, dev_applied: list[Obj], sandbox_ns: Namespace,
        tmp_path: Path) -> None:
    settings = _backend_settings(kube_cluster, tmp_path / "kubeconfig")
    assert settings.pool_size("py") == 1
    before = {p["metadata"]["name"] for p in sandbox_ns.wait_for(
        lambda: _warm(sandbox_ns, "py"), timeout=180, message="a warm py pod")}
    assert len(before) == 1
    sandbox_id, result = asyncio.run(_claim_and_run(KubernetesBackend(settings), sandbox_ns))
    kind, _, pod = sandbox_id.partition("/")
    assert kind == "pod" and pod in before, "a warm pod of the dev pool was claimed"
    assert result.status == "ok" and result.exit_code == 0, result.stderr
    words = result.stdout.split()
    assert words[0] == pod and words[-1] == "42", result.stdout
    assert sandbox_ns.get("pods", pod) is None, "the used pod was deleted, never reused"
    # The Deployment from the overlay refills the pool by itself.
    refilled = sandbox_ns.wait_for(
        lambda: {p["metadata"]["name"] for p in _warm(sandbox_ns, "py")} - before,
        timeout=180, message="the pool refilled")
    assert len(refilled) == 1
    # Everything the backend did, it did as the k8si-api ServiceAccount, allowed by the
    # overlay's Role: no request of it was refused.
    requests = [r for r in sandbox_ns.audit() if r.resource in ("pods", "deployments")]
    assert requests and all(r.code < 400 for r in requests), requests
    assert {("list", "pods"), ("patch", "pods"), ("delete", "pods")} <= {
        (r.verb, r.resource) for r in requests}
