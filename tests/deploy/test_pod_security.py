"""Pod Security "restricted", decided by the real apiserver's PodSecurity admission.

The sandbox pods the Kubernetes backend builds (``PodTemplates.pod``, the pool
Deployment's template) are created for real, as the API's ServiceAccount (the
project's Role), in a fresh namespace enforcing ``restricted:latest``: admitted.
The same pod with one control broken is refused with the apiserver's own 403 and
``violates PodSecurity "restricted:latest": <control>``; a pool Deployment with a
privileged container is stored with a warning, and the real ReplicaSet controller's
pod creates are then refused with that message.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from app.backends.kubernetes.templates import LABEL_POOL, LABEL_STATE, PodTemplates
from app.settings import KubernetesSettings
from tests.cluster import Namespace

from .admission import (
    POD_SECURITY_REFUSAL,
    POD_SECURITY_WARNING,
    RESTRICTED_LABELS,
    pod_security_warnings,
    privileged,
)

Spec = dict[str, Any]


def _sandbox_pod(name: str) -> Spec:
    pod = PodTemplates(KubernetesSettings()).pod("py", {"k8si.io/session": "s0123x",
                                                       "k8si.io/tenant": "tdefaultx"})
    pod["metadata"]["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def _context(spec: Spec) -> Spec:
    found: Spec = spec["containers"][0]["securityContext"]
    return found


def _privileged(spec: Spec) -> None:
    _context(spec).pop("allowPrivilegeEscalation")  # false with privileged is a 422
    _context(spec)["privileged"] = True


#: One broken control each -> the words of the apiserver's refusal that name it.
VIOLATIONS: dict[str, tuple[Callable[[Spec], Any], str]] = {
    "privileged": (_privileged,
                   'privileged (container "executor" must not set '
                   "securityContext.privileged=true)"),
    "runAsUser 0": (lambda s: _context(s).update(runAsUser=0),
                    'runAsUser=0 (container "executor" must not set runAsUser=0)'),
    "runAsUser 0 in the pod": (lambda s: s["securityContext"].update(runAsUser=0),
                               "runAsUser=0 (pod must not set runAsUser=0)"),
    "runAsNonRoot false": (lambda s: _context(s).update(runAsNonRoot=False),
                           "runAsNonRoot != true"),
    "runAsNonRoot unset": (lambda s: (s["securityContext"].pop("runAsNonRoot"),
                                      _context(s).pop("runAsNonRoot")),
                           "must set securityContext.runAsNonRoot=true"),
    "hostPath": (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
                 'restricted volume types (volume "host" uses restricted volume type '
                 '"hostPath")'),
    "nfs volume": (lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x",
                                                                       "path": "/"}}),
                   'volume "n" uses restricted volume type "nfs"'),
    "added capability": (lambda s: _context(s)["capabilities"].update(add=["SYS_ADMIN"]),
                         'must not include "SYS_ADMIN" in securityContext.capabilities.add'),
    "added baseline capability": (lambda s: _context(s)["capabilities"].update(add=["CHOWN"]),
                                  'must not include "CHOWN" in securityContext.capabilities'),
    "capabilities not dropped": (lambda s: _context(s).pop("capabilities"),
                                 'must set securityContext.capabilities.drop=["ALL"]'),
    "privilege escalation": (lambda s: _context(s).update(allowPrivilegeEscalation=True),
                             "allowPrivilegeEscalation != false"),
    "privilege escalation unset": (lambda s: _context(s).pop("allowPrivilegeEscalation"),
                                   "must set securityContext.allowPrivilegeEscalation=false"),
    "hostNetwork": (lambda s: s.update(hostNetwork=True), "host namespaces (hostNetwork=true)"),
    "hostPID": (lambda s: s.update(hostPID=True), "host namespaces (hostPID=true)"),
    "hostIPC": (lambda s: s.update(hostIPC=True), "host namespaces (hostIPC=true)"),
    "hostPort": (lambda s: s["containers"][0]["ports"][0].update(hostPort=8080),
                 'hostPort (container "executor" uses hostPort 8080)'),
    "seccomp unconfined": (lambda s: _context(s).update(seccompProfile={"type": "Unconfined"}),
                           'seccompProfile.type to "Unconfined"'),
    "seccomp unset": (lambda s: s["securityContext"].pop("seccompProfile"),
                      "seccompProfile (pod or container"),
    "unsafe sysctl": (lambda s: s["securityContext"].update(
        sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "forbidden sysctls (kernel.msgmax)"),
    "SELinux type": (lambda s: _context(s).update(seLinuxOptions={"type": "spc_t"}),
                     'seLinuxOptions: type "spc_t"'),
    "AppArmor unconfined": (lambda s: _context(s).update(appArmorProfile={"type": "Unconfined"}),
                            'must not set AppArmor profile type to "Unconfined"'),
    "bare init container": (lambda s: s.update(initContainers=[{"name": "init",
                                                                "image": "busybox:1.37"}]),
                            'container "init" must set securityContext.allowPrivilegeEscalation'),
}


def test_the_namespace_enforces_restricted(kube: Namespace) -> None:
    found = kube.cluster.admin.get(f"/api/v1/namespaces/{kube.namespace}")
    assert RESTRICTED_LABELS.items() <= found.json()["metadata"]["labels"].items()


def test_the_backends_sandbox_pod_is_admitted(kube: Namespace) -> None:
    response = kube.create("pods", _sandbox_pod("k8si-py-admitted"), as_api=True)
    assert response.status_code == 201, response.text
    assert not pod_security_warnings(response)
    assert kube.get("pods", "k8si-py-admitted") is not None


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_a_broken_control_is_refused_by_the_apiserver(kube: Namespace, name: str) -> None:
    pod = _sandbox_pod("k8si-py-violating")
    mutate, control = VIOLATIONS[name]
    mutate(pod["spec"])
    response = kube.create("pods", pod, as_api=True)
    assert response.status_code == 403, response.text
    status = response.json()
    assert status["reason"] == "Forbidden"
    assert POD_SECURITY_REFUSAL in status["message"], status["message"]
    assert control in status["message"], status["message"]
    assert kube.get("pods", "k8si-py-violating") is None


def test_an_unconfined_apparmor_annotation_is_refused(kube: Namespace) -> None:
    pod = _sandbox_pod("k8si-py-apparmor")
    pod["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/executor": "unconfined"}
    response = kube.create("pods", pod, as_api=True)
    assert response.status_code == 403, response.text
    message = response.json()["message"]
    assert POD_SECURITY_REFUSAL in message and "AppArmor" in message, message


def _replica_sets(kube: Namespace, pool: str) -> list[Spec]:
    return kube.objects("replicasets", label_selector=f"{LABEL_POOL}={pool}")


def test_the_pool_deployment_is_admitted_and_its_pods_made(kube: Namespace) -> None:
    deployment = PodTemplates(KubernetesSettings()).pool_deployment("py", 1, 1)
    response = kube.create("deployments", deployment, as_api=True)
    assert response.status_code == 201, response.text
    assert not pod_security_warnings(response)
    # The real ReplicaSet controller creates the pod: PodSecurity admits it.
    pods = kube.wait_for(lambda: kube.objects(
        "pods", label_selector=f"{LABEL_POOL}=py,{LABEL_STATE}=warm"), timeout=60,
        message="the pool's pod")
    assert pods[0]["spec"]["securityContext"] == deployment["spec"]["template"]["spec"][
        "securityContext"]
    assert not [c for rs in _replica_sets(kube, "py")
                for c in rs.get("status", {}).get("conditions") or []
                if c["type"] == "ReplicaFailure"]


def test_a_privileged_pool_is_warned_about_and_gets_no_pods(kube: Namespace) -> None:
    deployment = PodTemplates(KubernetesSettings()).pool_deployment("py", 1, 1)
    template = deployment["spec"]["template"]
    template.update(privileged(template))
    for labels in (deployment["metadata"]["labels"], deployment["spec"]["selector"][
            "matchLabels"], template["metadata"]["labels"]):
        labels[LABEL_POOL] = "bad"
    deployment["metadata"]["name"] = "k8si-pool-bad"
    response = kube.create("deployments", copy.deepcopy(deployment), as_api=True)
    assert response.status_code == 201, response.text
    (warning,) = pod_security_warnings(response)
    assert POD_SECURITY_WARNING in warning.replace('\\"', '"'), warning

    def refused() -> str:
        for rs in _replica_sets(kube, "bad"):
            for condition in rs.get("status", {}).get("conditions") or []:
                if condition["type"] == "ReplicaFailure":
                    return str(condition["message"])
        return ""
    message = kube.wait_for(refused, timeout=60, message="the ReplicaSet's refused create")
    assert POD_SECURITY_REFUSAL in message and "privileged" in message, message
    assert not kube.objects("pods", label_selector=f"{LABEL_POOL}=bad")
