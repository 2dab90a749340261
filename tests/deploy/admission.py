"""Helpers for the deployment tests that meet the real apiserver's admission.

The objects are sent to the session's real control plane (``tests/cluster``):
``kubectl apply --server-side [--dry-run=server]`` for whole overlays, and Pod
creates (``dryRun=All`` unless a test needs the pod to exist) for single pod
templates, as the cluster admin or as the API's ServiceAccount. Pod Security is the
apiserver's own ``PodSecurity`` admission plugin: a Pod that violates the
namespace's enforced level is refused with 403 and ``violates PodSecurity
"restricted:latest": …``; a workload (Deployment, Job, CronJob, StatefulSet) whose
pod template would be refused is accepted with a ``Warning`` header ``would violate
PodSecurity …``, and its controller's pod creates are then refused.

The Knative Serving CRDs come from the ``knative.dev/serving`` Go module
(``scripts/knative-crds``); only the CRDs are installed (no Knative controller or
webhook), so a Knative Service is checked against the CRD's OpenAPI schema.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.cluster import KubeCluster

from .kube import KNATIVE_API, REPO, Obj, knative_pod

__all__ = ["POD_SECURITY_REFUSAL", "POD_SECURITY_WARNING", "RESTRICTED_LABELS", "apply",
           "as_pod", "create_pod", "harness_objects", "install_knative_crds", "knative_crd_dir",
           "pod_security_warnings", "privileged", "status_message"]

#: What the apiserver answers for a Pod that breaks a namespace enforcing "restricted".
POD_SECURITY_REFUSAL = 'violates PodSecurity "restricted:latest"'
#: What it warns about a workload whose pod template would be refused.
POD_SECURITY_WARNING = 'would violate PodSecurity "restricted:latest"'
#: The labels of a namespace that enforces the latest "restricted" standard.
RESTRICTED_LABELS = {"pod-security.kubernetes.io/enforce": "restricted",
                     "pod-security.kubernetes.io/enforce-version": "latest"}
KNATIVE_SCRIPT = REPO / "scripts" / "knative-crds"


def knative_crd_dir() -> Path:
    """The directory of Knative Serving's CRD YAML (``scripts/knative-crds``)."""
    done = subprocess.run(["bash", str(KNATIVE_SCRIPT)], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise AssertionError(f"scripts/knative-crds failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def install_knative_crds(cluster: KubeCluster) -> list[str]:
    """Apply the Knative Serving CRDs as the cluster admin, wait until Established."""
    directory = knative_crd_dir()
    names = sorted(doc["metadata"]["name"] for path in directory.glob("*.yaml")
                   for doc in yaml.safe_load_all(path.read_text())
                   if doc and doc.get("kind") == "CustomResourceDefinition")
    assert "services.serving.knative.dev" in names, names
    cluster.run_kubectl("apply", "--server-side", "-f", str(directory))
    cluster.run_kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
                        *(f"customresourcedefinition/{name}" for name in names))
    return names


def apply(cluster: KubeCluster, directory: Path, *, dry_run: bool
          ) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --server-side [--dry-run=server] -k directory`` as the admin."""
    args = ["apply", "--server-side", "-k", str(directory)]
    if dry_run:
        args.insert(2, "--dry-run=server")
    return cluster.run_kubectl(*args, check=False)


def harness_objects() -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of what the harness itself applied to every test cluster
    (``manifests/namespaces.yaml`` and ``manifests/rbac.yaml``): never to be deleted."""
    found = set()
    for name in ("namespaces.yaml", "rbac.yaml"):
        for doc in yaml.safe_load_all((REPO / "manifests" / name).read_text()):
            if doc:
                meta = doc["metadata"]
                found.add((doc["kind"], meta.get("namespace", ""), meta["name"]))
    return found


def as_pod(obj: Obj, metadata: Obj, spec: Obj, suffix: str = "admission") -> Obj:
    """The Pod that ``obj``'s controller would create from the template (metadata, spec).

    A StatefulSet's pods get a PersistentVolumeClaim volume per volumeClaimTemplate
    (as its controller adds them); a Knative Service's revision template loses the
    Knative-only fields (``knative_pod``)."""
    if obj["kind"] == "Service" and obj["apiVersion"] == KNATIVE_API:
        pod = knative_pod(obj)
        pod["metadata"]["name"] = f"{obj['metadata']['name']}-{suffix}"
        return pod
    spec = copy.deepcopy(spec)
    if obj["kind"] == "StatefulSet":
        volumes = spec.setdefault("volumes", [])
        present = {v["name"] for v in volumes}
        for claim in obj["spec"].get("volumeClaimTemplates") or []:
            name = claim["metadata"]["name"]
            if name not in present:
                volumes.append({"name": name, "persistentVolumeClaim": {
                    "claimName": f"{name}-{obj['metadata']['name']}-0"}})
    meta = {"name": f"{obj['metadata']['name']}-{suffix}"[:63].rstrip("-"),
            **{k: copy.deepcopy(v) for k, v in metadata.items()
               if k in ("labels", "annotations")}}
    if "namespace" in obj["metadata"]:
        meta["namespace"] = obj["metadata"]["namespace"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def create_pod(cluster: KubeCluster, namespace: str, pod: Obj, *, as_api: bool = False,
               dry_run: bool = True) -> httpx.Response:
    """POST the Pod to ``namespace`` as the admin or the API's ServiceAccount."""
    body = copy.deepcopy(pod)
    body["metadata"]["namespace"] = namespace
    headers = {"Authorization": f"Bearer {cluster.api_token}"} if as_api else None
    params = {"dryRun": "All"} if dry_run else None
    return cluster.admin.post(f"/api/v1/namespaces/{namespace}/pods", json=body,
                              headers=headers, params=params)


def privileged(pod: Obj) -> Obj:
    """``pod`` with its first container privileged (and so allowed to escalate)."""
    bad = copy.deepcopy(pod)
    context = bad["spec"]["containers"][0].setdefault("securityContext", {})
    context.pop("allowPrivilegeEscalation", None)  # false and privileged: 422, not PSS
    context["privileged"] = True
    return bad


def pod_security_warnings(response: httpx.Response) -> list[str]:
    """The PodSecurity warnings (``Warning`` headers) the apiserver attached."""
    return [w for w in response.headers.get_list("warning") if "PodSecurity" in w]


def status_message(response: httpx.Response) -> str:
    """The message of a Status answer (empty when the body is not one)."""
    try:
        body: Any = response.json()
    except ValueError:
        return ""
    return str(body.get("message", "")) if isinstance(body, dict) else ""
