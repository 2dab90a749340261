"""Pool Deployments follow the settings, on the real control plane: a replica that
starts with another image or pool size brings the pool the API created to them (the
real Deployment controller then rolls the warm pods over), and leaves the template of
a pool applied by kustomize alone."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.backends.kubernetes.pools import ANNOTATION_WRITTEN_BY
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


def _foreign_pool(kube: Namespace, image: str, manager: str,
                  annotations: dict[str, str] | None = None) -> None:
    """A bash pool written by ``manager`` (a field manager the apiserver records), not by
    the API running now (its annotations as given, the API's own marks left out)."""
    own = PodTemplates(KubernetesSettings(images={"bash": image}))
    body = own.pool_deployment("bash", 1, 1)
    for name in (ANNOTATION_MANAGED, ANNOTATION_TEMPLATE):
        del body["metadata"]["annotations"][name]
    body["metadata"]["annotations"].update(annotations or {})
    created = kube.cluster.admin.post(kube.path("deployments"), json=body,
                                      params={"fieldManager": manager})
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(("manager", "annotations"), [
    ("kubectl-client-side-apply", {ANNOTATION_MANAGED: "kustomize"}),  # manifests/pools
    ("kubectl-client-side-apply",  # older manifests, kubectl apply -k
     {"kubectl.kubernetes.io/last-applied-configuration": "{}"}),
    ("kustomize-controller", {}),  # older manifests, a GitOps tool's server-side apply
], ids=["marked", "kubectl", "gitops"])
def test_a_pool_applied_by_kustomize_keeps_its_template(
        kube: Namespace, k8s_app_factory: AppFactory, manager: str,
        annotations: dict[str, str]) -> None:
    """The API keeps its size and annotations, never its template."""
    _foreign_pool(kube, "kustomize.example/own:1", manager, annotations)
    k8s_app_factory({"bash": 2}, images={"bash": NEW_IMAGE})
    deployment = _deployment(kube)
    assert _image(deployment["spec"]["template"]) == "kustomize.example/own:1"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["annotations"][ANNOTATION_TARGET] == "2"
    assert deployment["metadata"]["annotations"].get(ANNOTATION_MANAGED) != "k8si-api"


def test_a_pool_an_older_version_made_is_brought_to_the_settings(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """Unmarked, written by the API alone (older versions wrote as kr8s's user agent, its
    version number): made by an API from before the marks."""
    _foreign_pool(kube, "registry.example/k8si/runtime-python:0.0.9", "0.20.15")
    k8s_app_factory({"bash": 1}, images={"bash": NEW_IMAGE})
    deployment = _deployment(kube)
    assert _image(deployment["spec"]["template"]) == NEW_IMAGE
    assert deployment["metadata"]["annotations"][ANNOTATION_MANAGED] == "k8si-api"


def test_an_older_revision_does_not_set_the_pool_back(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """During a rollout an old revision's replica may start after the new one's: it
    leaves the pool as the newer revision set it (Knative's K_REVISION)."""
    k8s_app_factory({"bash": 1}, images={"bash": NEW_IMAGE}, revision="k8si-api-00008")
    k8s_app_factory({"bash": 1}, revision="k8si-api-00007")  # the old image
    deployment = _deployment(kube)
    assert _image(deployment["spec"]["template"]) == NEW_IMAGE
    assert deployment["metadata"]["annotations"][ANNOTATION_WRITTEN_BY] == "k8si-api-00008"
    k8s_app_factory({"bash": 1}, revision="k8si-api-00009")  # a newer one: its settings
    assert _image(_deployment(kube)["spec"]["template"]) != NEW_IMAGE


def test_pods_made_before_a_port_change_are_reached_on_their_own_port(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """K8S_EXECUTOR_PORT changed: until the Deployment has rolled its warm pods over (held
    here: the rollout paused), a replica with the new port claims pods that listen on
    the old one, and reaches them there; once rolled, on the new one."""
    k8s_app_factory({"bash": 2})
    kube.wait_for(lambda: ready_warm(kube) == 2, timeout=60, message="2 warm pods")
    old = {pod["metadata"]["name"] for pod in kube.objects("pods", WARM)}
    paused = kube.cluster.admin.patch(
        kube.path("deployments", "k8si-pool-bash"), json={"spec": {"paused": True}},
        headers={"Content-Type": "application/merge-patch+json"})
    assert paused.status_code == 200, paused.text
    moved = k8s_app_factory({"bash": 2}, executor_port=9090)
    with moved.client() as client:
        served = client.post("/exec", json={"lang": "bash", "code": "echo $HOSTNAME"}).json()
    assert served["status"] == "ok", served
    assert served["stdout"].strip() in old, "an old pod, on its old port"
    resumed = kube.cluster.admin.patch(
        kube.path("deployments", "k8si-pool-bash"), json={"spec": {"paused": False}},
        headers={"Content-Type": "application/merge-patch+json"})
    assert resumed.status_code == 200, resumed.text

    def rolled() -> bool:
        live = [pod for pod in kube.objects("pods", WARM)
                if not pod["metadata"].get("deletionTimestamp")]
        return ready_warm(kube) == 2 and all(
            pod["spec"]["containers"][0]["ports"][0]["containerPort"] == 9090 for pod in live)

    kube.wait_for(rolled, timeout=90, message="the warm pods rolled to the new port")
    with moved.client() as client:
        served = client.post("/exec", json={"lang": "bash", "code": "echo $HOSTNAME"}).json()
    assert served["status"] == "ok" and served["stdout"].strip() not in old, served
