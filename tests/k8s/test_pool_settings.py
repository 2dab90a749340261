"""Pool Deployments follow the settings, on the real control plane: a replica that
starts with another image or pool size brings the pool the API created to them (the
real Deployment controller then rolls the warm pods over), and leaves the template of
a pool applied by kustomize alone."""

from __future__ import annotations

import time
from typing import Any

from app.backends.kubernetes.templates import (
    ANNOTATION_MANAGED,
    ANNOTATION_TARGET,
    ANNOTATION_TEMPLATE,
    PodTemplates,
)
from app.settings import KubernetesSettings
from tests.cluster import Namespace
from tests.k8s.conftest import WARM, AppFactory, ready_warm

NEW_IMAGE = "registry.example/k8si/runtime-python:0.2.0"


def _deployment(kube: Namespace) -> dict[str, Any]:
    deployment = kube.get("deployments", "k8si-pool-bash")
    assert deployment is not None
    return deployment


def _image(pod_or_template: dict[str, Any]) -> str:
    return str(pod_or_template["spec"]["containers"][0]["image"])


def test_a_new_image_and_size_reach_the_pool_the_api_created(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    k8s_app_factory({"bash": 2})
    kube.wait_for(lambda: ready_warm(kube) == 2, timeout=60, message="2 warm pods")
    before = _deployment(kube)
    assert before["metadata"]["annotations"][ANNOTATION_MANAGED] == "k8si-api"
    assert _image(before["spec"]["template"]) != NEW_IMAGE

    upgraded = k8s_app_factory({"bash": 3}, images={"bash": NEW_IMAGE})  # a new replica
    after = _deployment(kube)
    assert _image(after["spec"]["template"]) == NEW_IMAGE
    assert after["spec"]["replicas"] == 3
    annotations = after["metadata"]["annotations"]
    assert annotations[ANNOTATION_TARGET] == "3"
    assert annotations[ANNOTATION_TEMPLATE] != before["metadata"]["annotations"][
        ANNOTATION_TEMPLATE]

    def rolled() -> bool:
        live = [pod for pod in kube.objects("pods", WARM)
                if not pod["metadata"].get("deletionTimestamp")]
        return ready_warm(kube) == 3 and [_image(pod) for pod in live] == [NEW_IMAGE] * 3

    kube.wait_for(rolled, timeout=90, message="the Deployment rolled its warm pods over")
    with upgraded.client() as client:
        result = client.post("/exec", json={"lang": "bash", "code": "echo upgraded"}).json()
    assert result["stdout"] == "upgraded\n", result

    started = time.time()
    same = k8s_app_factory({"bash": 3}, images={"bash": NEW_IMAGE})  # settings unchanged
    marked = time.time()
    with same.client() as client:  # a request after its start, to find in the audit log
        assert client.get("/health/pool").status_code == 200
    audit = kube.wait_for(lambda: [record for record in kube.audit(started)
                                   if record.received >= marked] and kube.audit(started),
                          timeout=10, message="the requests after the start in the audit log")
    assert any(record.verb == "get" and record.name == "k8si-pool-bash"
               for record in audit), "its start looked at the pool"
    assert not [record for record in audit if record.resource == "deployments"
                and record.verb == "patch"], "a replica whose settings match changes nothing"
    assert _deployment(kube)["spec"] == after["spec"]


def test_a_pool_applied_by_kustomize_keeps_its_template(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """As ``manifests/pools/`` renders it (``scripts/render_pools.py``): no mark of the
    API's own; the API keeps its size and annotations, never its template."""
    own = PodTemplates(KubernetesSettings(images={"bash": "kustomize.example/own:1"}))
    body = own.pool_deployment("bash", 1, 1)
    for name in (ANNOTATION_MANAGED, ANNOTATION_TEMPLATE):
        del body["metadata"]["annotations"][name]
    created = kube.create("deployments", body)
    assert created.status_code == 201, created.text

    k8s_app_factory({"bash": 2}, images={"bash": NEW_IMAGE})
    deployment = _deployment(kube)
    assert _image(deployment["spec"]["template"]) == "kustomize.example/own:1"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["annotations"][ANNOTATION_TARGET] == "2"
    assert ANNOTATION_MANAGED not in deployment["metadata"]["annotations"]
