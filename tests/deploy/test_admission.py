"""Every overlay, as built, meets a real apiserver's admission (server-side dry run).

``kubectl apply --server-side --dry-run=server -k`` sends each overlay's objects
through the real kube-apiserver v1.34 of the test cluster as the cluster admin:
schema validation with unknown fields refused (kubectl's ``--validate=strict``
default), defaulting, the admission plugins, and the Knative Service against the
``serving.knative.dev`` CRDs of the ``knative.dev/serving`` Go module. Nothing is
stored. The two namespaces must exist beforehand (a dry run does not create a
Namespace for the objects placed in it): the harness applied
``manifests/namespaces.yaml`` itself, which is the file every overlay takes them from.

Workload pod templates meet Pod Security too: both namespaces enforce and warn
"restricted", and the apiserver answers a Deployment, Job, CronJob or StatefulSet
whose template would be refused with a ``would violate PodSecurity`` warning, which
kubectl prints; none may appear.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.cluster import KubeCluster

from .admission import POD_SECURITY_WARNING, RESTRICTED_LABELS, apply, harness_objects
from .kube import API_NAMESPACE, KNATIVE_API, OVERLAYS, Obj, find, one

SANDBOX_NAMESPACE = "k8si-sandbox"


def test_the_knative_crds_come_from_the_go_module_and_are_established(
        kube_cluster: KubeCluster, knative_crds: list[str]) -> None:
    assert {"services.serving.knative.dev", "revisions.serving.knative.dev",
            "configurations.serving.knative.dev", "routes.serving.knative.dev"} <= set(
        knative_crds)
    done = kube_cluster.run_kubectl("get", "customresourcedefinition",
                                    "services.serving.knative.dev", "-o", "json")
    crd = json.loads(done.stdout)
    assert [v["name"] for v in crd["spec"]["versions"] if v["served"]] == ["v1"]
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established["Established"] == "True"
    assert established["NamesAccepted"] == "True"


def test_the_overlays_namespaces_exist_and_enforce_restricted(
        kube_cluster: KubeCluster, built: dict[str, list[Obj]]) -> None:
    """What the dry runs rely on: the namespaces are there, as every overlay has them."""
    from_harness = {name for kind, _, name in harness_objects() if kind == "Namespace"}
    assert from_harness == {API_NAMESPACE, SANDBOX_NAMESPACE}
    for name in from_harness:
        found = kube_cluster.admin.get(f"/api/v1/namespaces/{name}")
        assert found.status_code == 200, found.text
        labels = found.json()["metadata"]["labels"]
        assert RESTRICTED_LABELS.items() <= labels.items()
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"
        for objects in built.values():
            built_ns = one(objects, "Namespace", name)["metadata"]["labels"]
            assert {k: v for k, v in built_ns.items() if k.startswith("pod-security")} == {
                k: v for k, v in labels.items() if k.startswith("pod-security")}


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_passes_real_admission(
        name: str, kube_cluster: KubeCluster, knative_crds: list[str], scratch: Path,
        built: dict[str, list[Obj]]) -> None:
    done = apply(kube_cluster, scratch / "kustomize" / "overlays" / name, dry_run=True)
    assert done.returncode == 0, f"{name}: {done.stderr}"
    assert "PodSecurity" not in done.stderr, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    # Every object of the overlay went through the apiserver, none was skipped.
    applied = [line for line in done.stdout.splitlines()
               if line.endswith("serverside-applied (server dry run)")]
    assert len(applied) == len(built[name]), done.stdout


def test_the_knative_service_is_checked_against_its_crd_schema(
        kube_cluster: KubeCluster, knative_crds: list[str], built: dict[str, list[Obj]],
        tmp_path: Path) -> None:
    """The dry run above is not vacuous: a misspelt field of the Knative Service (and a
    wrong type) is refused by the CRD's schema, and the overlay's own Service passes."""
    ksvc = one(built["knative"], "Service", "k8si-api", KNATIVE_API)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(ksvc))
    done = kube_cluster.run_kubectl("apply", "--server-side", "--dry-run=server", "-f",
                                    str(good), check=False)
    assert done.returncode == 0, done.stderr
    misspelt = copy.deepcopy(ksvc)
    misspelt["spec"]["template"]["spec"]["containerConcurency"] = 8
    wrong_type = copy.deepcopy(ksvc)
    wrong_type["spec"]["template"]["spec"]["timeoutSeconds"] = "five minutes"
    for bad, expected in ((misspelt, "containerConcurency"), (wrong_type, "timeoutSeconds")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        done = kube_cluster.run_kubectl("apply", "--server-side", "--dry-run=server", "-f",
                                        str(path), check=False)
        assert done.returncode != 0, f"{expected} was accepted"
        assert expected in done.stderr, done.stderr


def test_a_violating_workload_would_be_reported(
        kube_cluster: KubeCluster, built: dict[str, list[Obj]], tmp_path: Path) -> None:
    """The "no PodSecurity warning" check is live: the dev pool with a privileged
    container, dry-run applied the same way, is reported by the apiserver."""
    pool = copy.deepcopy(one(built["dev"], "Deployment", "k8si-pool-py"))
    assert pool["metadata"]["namespace"] == SANDBOX_NAMESPACE
    context = pool["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context.pop("allowPrivilegeEscalation")
    context["privileged"] = True
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    done = kube_cluster.run_kubectl("apply", "--server-side", "--dry-run=server", "-f",
                                    str(path), check=False)
    assert done.returncode == 0, done.stderr
    assert POD_SECURITY_WARNING in done.stderr, done.stderr
    assert "privileged" in done.stderr


def test_every_overlay_places_its_objects_in_the_two_namespaces(
        built: dict[str, list[Obj]]) -> None:
    """The dry runs only reached existing namespaces: no third one hides in an overlay."""
    for objects in built.values():
        placed = {o["metadata"].get("namespace") for o in objects
                  if o["kind"] != "Namespace" and o["kind"] != "CustomResourceDefinition"}
        assert placed == {API_NAMESPACE, SANDBOX_NAMESPACE}
        assert {n["metadata"]["name"] for n in find(objects, "Namespace")} == placed
