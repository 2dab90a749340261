"""The node agent against the real control plane: what the real scheduler, ReplicaSet
and Job controllers see of the pods it runs, and the pods it refuses."""

from __future__ import annotations

import copy
import secrets
from typing import Any

import psutil
import pytest

from app.backends.kubernetes.templates import PodTemplates
from app.settings import KubernetesSettings
from tests.cluster import KubeCluster, Namespace

Obj = dict[str, Any]


def sandbox_pod(name: str, **spec: Any) -> Obj:
    """A pod of the project's own template (admitted under ``restricted``)."""
    pod = PodTemplates(KubernetesSettings()).pod("bash", {"k8si.io/test": "node-agent"})
    pod["metadata"]["name"] = name
    pod["spec"].update(spec)
    return pod


def phase(kube: Namespace, name: str) -> str:
    found = kube.get("pods", name)
    return "" if found is None else str(found.get("status", {}).get("phase", ""))


def ready(kube: Namespace, name: str) -> bool:
    found = kube.get("pods", name) or {}
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in found.get("status", {}).get("conditions", []))


def executor_alive(ip: str) -> bool:
    """Whether a process of this machine listens on the pod's IP (its executor)."""
    return any(c.laddr and c.laddr.ip == ip and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections("tcp4"))


def test_the_node_is_registered_ready_and_schedulable(kube_cluster: KubeCluster) -> None:
    node = kube_cluster.admin.get(f"/api/v1/nodes/{kube_cluster.node_name}").json()
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    # admission tainted the new node not-ready; the real node-lifecycle controller
    # lifted the taint because the agent's Lease and Ready condition say so
    assert not [t for t in node["spec"].get("taints", []) if t["effect"] == "NoSchedule"]


def test_a_pod_runs_reports_ready_and_its_ip_serves(kube: Namespace) -> None:
    name = f"agent-{secrets.token_hex(3)}"
    assert kube.create("pods", sandbox_pod(name)).status_code == 201
    kube.wait_for(lambda: ready(kube, name), timeout=60, message="the pod Ready")
    pod = kube.get("pods", name)
    assert pod is not None
    status = pod["status"]
    assert pod["spec"]["nodeName"] == kube.cluster.node_name, "bound by the real scheduler"
    assert status["phase"] == "Running" and status["podIP"].startswith("127.")
    assert status["podIP"] != "127.0.0.1"
    [container] = status["containerStatuses"]
    assert container["ready"] and "running" in container["state"]
    assert executor_alive(status["podIP"])
    # deletion with the default grace period: stopped, reported, then really removed
    kube.cluster.admin.delete(kube.path("pods", name))
    kube.wait_for(lambda: kube.get("pods", name) is None, timeout=30,
                  message="graceful deletion finished")
    kube.wait_for(lambda: not executor_alive(status["podIP"]), timeout=15,
                  message="the executor stopped")


def test_container_exit_is_reported_with_its_code(kube: Namespace) -> None:
    never, always = f"never-{secrets.token_hex(3)}", f"always-{secrets.token_hex(3)}"
    kube.create("pods", sandbox_pod(never)).raise_for_status()
    kube.create("pods", sandbox_pod(always, restartPolicy="Always")).raise_for_status()
    for name in (never, always):
        kube.wait_for(lambda: ready(kube, name), timeout=60, message=f"{name} Ready")  # noqa: B023
        assert kube.exit_pod(name, 3)
    kube.wait_for(lambda: phase(kube, never) == "Failed", timeout=30, message="Failed")
    pod = kube.get("pods", never)
    assert pod is not None
    [container] = pod["status"]["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 3

    def restarted() -> bool:
        found = kube.get("pods", always) or {}
        statuses = found.get("status", {}).get("containerStatuses") or [{}]
        return bool(statuses[0].get("restartCount") == 1 and ready(kube, always))
    kube.wait_for(restarted, timeout=60, message="restarted under restartPolicy Always")


def test_active_deadline_fails_the_pod(kube: Namespace) -> None:
    name = f"deadline-{secrets.token_hex(3)}"
    kube.create("pods", sandbox_pod(name, activeDeadlineSeconds=2)).raise_for_status()
    kube.wait_for(lambda: phase(kube, name) == "Failed", timeout=60, message="Failed")
    pod = kube.get("pods", name)
    assert pod is not None and pod["status"]["reason"] == "DeadlineExceeded"


def test_a_failing_job_pod_fails_the_job_through_the_real_job_controller(
        kube: Namespace) -> None:
    templates = PodTemplates(KubernetesSettings(lease_seconds=120, job_ttl_seconds=600))
    name = f"job-{secrets.token_hex(3)}"
    job = templates.job(name, "bash", {}, {})
    kube.create("jobs", job).raise_for_status()
    pod_name = kube.wait_for(lambda: next(
        (p["metadata"]["name"] for p in kube.objects("pods", label_selector=f"job-name={name}")
         if ready(kube, p["metadata"]["name"])), None), timeout=60, message="the Job's pod")
    assert kube.exit_pod(pod_name, 7)

    def failed() -> str:
        found = kube.get("jobs", name) or {}
        return next((c.get("reason", "") for c in found.get("status", {}).get("conditions", [])
                     if c["type"] == "Failed" and c["status"] == "True"), "")
    # the podFailurePolicy rule "FailJob on exit codes NotIn [0]" matched our exit code
    assert kube.wait_for(failed, timeout=60, message="the Job failed") == "PodFailurePolicy"


@pytest.mark.parametrize(("change", "why"), [
    ({"name": "cm", "configMap": {"name": "x"}}, "mounts only emptyDir"),
    ("second container", "exactly one container"),
])
def test_a_pod_it_cannot_run_is_refused_with_an_event(kube: Namespace, change: Any,
                                                      why: str) -> None:
    name = f"refused-{secrets.token_hex(3)}"
    pod = sandbox_pod(name)
    if change == "second container":
        extra = copy.deepcopy(pod["spec"]["containers"][0])
        extra["name"] = "helper"
        pod["spec"]["containers"].append(extra)
    else:
        pod["spec"]["volumes"].append(change)
    created = kube.create("pods", pod)
    assert created.status_code == 201, created.text  # admitted: the refusal is the node's
    kube.wait_for(lambda: phase(kube, name) == "Failed", timeout=30, message="Failed")
    found = kube.get("pods", name)
    assert found is not None and found["status"]["reason"] == "UnsupportedPodSpec"
    assert why in found["status"]["message"]
    events = kube.objects("events", field_selector=f"involvedObject.name={name}")
    assert any(e["reason"] == "UnsupportedPodSpec" and e["type"] == "Warning"
               and why in e["message"] for e in events)
