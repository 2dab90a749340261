"""Conformance of the emulated controllers and kubelet.

The ReplicaSet controller releases a relabelled pod and refills (and re-adopts a
pod only if its labels match again); Deployments scale by ``spec.replicas``; Jobs
finish from their pod's exit, fail on ``backoffLimit: 0``, ``activeDeadlineSeconds``
and ``podFailurePolicy``, are deleted after ``ttlSecondsAfterFinished``, and delete
(``Background``) or orphan (the default) their pods; the kubelet runs each pod's
executor on the pod's own loopback IP, where ``HOSTNAME`` is the pod's name.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .server import KubeSim
from .testing import deployment_manifest, http, job_manifest, pod_manifest, pod_ready

NS = "/api/v1/namespaces/k8si-test"
DEPLOYMENTS = "/apis/apps/v1/namespaces/k8si-test/deployments"
JOBS = "/apis/batch/v1/namespaces/k8si-test/jobs"
POOL = {"k8si.io/pool": "bash", "k8si.io/state": "warm"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def post(sim: KubeSim, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with http(sim) as client:
        response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def ready_pool(sim: KubeSim, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [p for p in sim.objects("pods", label_selector="k8si.io/state=warm")
                if pod_ready(p)]
        return pods if len(pods) == count else None
    return sim.wait_for(ready, message=f"{count} ready warm pods")


def owners(pod: dict[str, Any] | None) -> list[str]:
    assert pod is not None
    return [ref["kind"] for ref in pod["metadata"].get("ownerReferences") or []]


def test_a_claimed_pod_is_released_and_replaced_never_readopted(
        fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    post(sim, DEPLOYMENTS, deployment_manifest("pool-bash", 2, POOL))
    claimed = ready_pool(sim, 2)[0]["metadata"]["name"]
    assert owners(sim.get("pods", claimed)) == ["ReplicaSet"]
    with http(sim) as client:
        response = client.patch(f"{NS}/pods/{claimed}", headers=JSON_PATCH, content=json.dumps([
            {"op": "test", "path": "/metadata/labels/k8si.io~1state", "value": "warm"},
            {"op": "replace", "path": "/metadata/labels/k8si.io~1state", "value": "claimed"}]))
    assert response.status_code == 200, response.text
    replacements = ready_pool(sim, 2)
    assert claimed not in [p["metadata"]["name"] for p in replacements]
    sim.call(sim.manager.reconcile_once)  # one more full pass of every controller
    assert owners(sim.get("pods", claimed)) == []
    assert pod_ready(sim.get("pods", claimed))  # released, not killed
    assert len(sim.objects("pods")) == 3
    deployment = sim.get("deployments", "pool-bash")
    assert deployment is not None and deployment["status"]["readyReplicas"] == 2
    # Relabelled back to warm it matches again: adopted, and the surplus is deleted.
    with http(sim) as client:
        client.patch(f"{NS}/pods/{claimed}", headers=MERGE,
                     content=json.dumps({"metadata": {"labels": {"k8si.io/state": "warm"}}}))
    sim.wait_for(lambda: len(sim.objects("pods")) == 2, message="surplus deleted")
    assert all(owners(p) == ["ReplicaSet"] for p in sim.objects("pods"))


def test_scaling_by_patching_replicas_and_deleting_the_deployment(
        fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    post(sim, DEPLOYMENTS, deployment_manifest("pool-bash", 1, POOL))
    ready_pool(sim, 1)
    with http(sim) as client:
        client.patch(f"{DEPLOYMENTS}/pool-bash", headers=MERGE,
                     content=json.dumps({"spec": {"replicas": 3}}))
        ready_pool(sim, 3)
        scale = client.get(f"{DEPLOYMENTS}/pool-bash/scale").json()
        assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
        client.patch(f"{DEPLOYMENTS}/pool-bash/scale", headers=MERGE,
                     content=json.dumps({"spec": {"replicas": 0}}))
        sim.wait_for(lambda: not sim.objects("pods"), message="scaled to zero")
        client.patch(f"{DEPLOYMENTS}/pool-bash", headers=MERGE,
                     content=json.dumps({"spec": {"replicas": 2}}))
        ready_pool(sim, 2)
        deleted = client.delete(f"{DEPLOYMENTS}/pool-bash")
    assert deleted.json()["status"] == "Success"
    sim.wait_for(lambda: not sim.objects("pods") and not sim.objects("replicasets"),
                 message="dependents deleted in the background")


def test_workload_templates_are_validated_like_a_cluster(fake_kubesim: KubeSim) -> None:
    never = deployment_manifest("d", 1, POOL)
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    mismatched = deployment_manifest("e", 1, POOL)
    mismatched["spec"]["selector"] = {"matchLabels": {"other": "x"}}
    always = job_manifest("j")
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with http(fake_kubesim) as client:
        for path, body, field in [
                (DEPLOYMENTS, never, "spec.template.spec.restartPolicy"),
                (DEPLOYMENTS, mismatched, "spec.template.metadata.labels"),
                (JOBS, always, "spec.template.spec.restartPolicy")]:
            response = client.post(path, json=body)
            assert response.status_code == 422, response.text
            assert [c["field"] for c in response.json()["details"]["causes"]] == [field]


def job_pod(sim: KubeSim, job: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        pods = [p for p in sim.objects("pods", label_selector=f"job-name={job}")
                if pod_ready(p)]
        return pods[0] if pods else None
    return sim.wait_for(find, message=f"the pod of job {job}")


def condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in ((job or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind and item["status"] == "True":
            return dict(item)
    return None


def test_a_finished_job_is_deleted_after_its_ttl(fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    post(sim, JOBS, job_manifest("run-1", ttl=2))
    pod = job_pod(sim, "run-1")
    labels = pod["metadata"]["labels"]
    assert labels["job-name"] == "run-1" and labels["batch.kubernetes.io/job-name"] == "run-1"
    assert owners(pod) == ["Job"]
    assert sim.exit_pod(pod["metadata"]["name"], 0)
    complete = sim.wait_for(lambda: condition(sim.get("jobs", "run-1"), "Complete"))
    job = sim.get("jobs", "run-1")
    assert job is not None and job["status"]["succeeded"] == 1
    assert job["status"]["completionTime"] == complete["lastTransitionTime"]
    sim.wait_for(lambda: sim.get("jobs", "run-1") is None, timeout=10, message="TTL")
    sim.wait_for(lambda: not sim.objects("pods"), message="the job's pods deleted with it")


@pytest.mark.parametrize("failure_policy,reason", [
    (None, "BackoffLimitExceeded"),
    ({"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]},
     "PodFailurePolicy")])
def test_a_failed_pod_fails_a_job_with_backoff_limit_0(
        fake_kubesim: KubeSim, failure_policy: dict[str, Any] | None, reason: str) -> None:
    sim = fake_kubesim
    manifest = job_manifest("run-2")
    if failure_policy:
        manifest["spec"]["podFailurePolicy"] = failure_policy
    post(sim, JOBS, manifest)
    sim.exit_pod(job_pod(sim, "run-2")["metadata"]["name"], 3)
    failed = sim.wait_for(lambda: condition(sim.get("jobs", "run-2"), "Failed"))
    assert failed["reason"] == reason
    job = sim.get("jobs", "run-2")
    assert job is not None and job["status"]["failed"] == 1
    assert len(sim.objects("pods")) == 1  # no retry
    terminated = sim.objects("pods")[0]["status"]["containerStatuses"][0]["state"]
    assert terminated["terminated"]["exitCode"] == 3


def test_a_job_past_its_active_deadline_fails_and_loses_its_pod(
        fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    post(sim, JOBS, job_manifest("slow", deadline=1))
    job_pod(sim, "slow")
    failed = sim.wait_for(lambda: condition(sim.get("jobs", "slow"), "Failed"), timeout=10)
    assert failed["reason"] == "DeadlineExceeded"
    sim.wait_for(lambda: not sim.objects("pods"), message="active pods deleted")


@pytest.mark.parametrize("policy", ["Background", None])
def test_deleting_a_job_deletes_or_orphans_its_pods(fake_kubesim: KubeSim,
                                                    policy: str | None) -> None:
    sim = fake_kubesim
    post(sim, JOBS, job_manifest("run-3"))
    name = job_pod(sim, "run-3")["metadata"]["name"]
    with http(sim) as client:
        body = {"propagationPolicy": policy} if policy else {}
        response = client.request("DELETE", f"{JOBS}/run-3", json=body)
    assert response.status_code == 200 and response.json()["status"] == "Success"
    assert sim.get("jobs", "run-3") is None
    if policy == "Background":
        sim.wait_for(lambda: sim.get("pods", name) is None, message="pod deleted")
    else:  # batch/v1's default is to orphan: the pod stays, without its owner
        assert owners(sim.get("pods", name)) == [] and pod_ready(sim.get("pods", name))


def test_readiness_and_start_failure_hooks(fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    post(sim, f"{NS}/pods", pod_manifest("slow", {}, annotations={
        "kubesim.k8si.io/ready": "false"}))
    post(sim, f"{NS}/pods", pod_manifest("broken", {}, annotations={
        "kubesim.k8si.io/fail-start": "true"}))
    sim.wait_for(lambda: (sim.get("pods", "slow") or {}).get("status", {}).get(
        "phase") == "Running")
    sim.call(sim.manager.reconcile_once)
    assert not pod_ready(sim.get("pods", "slow"))
    with http(sim) as client:
        client.patch(f"{NS}/pods/slow", headers=MERGE, content=json.dumps(
            {"metadata": {"annotations": {"kubesim.k8si.io/ready": None}}}))
    sim.wait_for(lambda: pod_ready(sim.get("pods", "slow")))
    broken = sim.wait_for(lambda: (sim.get("pods", "broken") or {}).get("status", {}).get(
        "phase") == "Failed")
    assert broken


def test_a_pods_executor_runs_on_its_ip_and_sees_its_name(kubesim: KubeSim) -> None:
    post(kubesim, f"{NS}/pods", pod_manifest("runner-1", {}, lang="bash"))
    pod = kubesim.wait_for(lambda: kubesim.get("pods", "runner-1")
                           if pod_ready(kubesim.get("pods", "runner-1")) else None,
                           timeout=60, message="the executor ready")
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and "running" in status["state"]
    response = httpx.post(f"http://{ip}:8080/execute", timeout=30, json={
        "lang": "bash", "code": "echo $HOSTNAME", "args": [], "timeout": 5})
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "runner-1\n"
    with http(kubesim) as client:
        deleted = client.delete(f"{NS}/pods/runner-1")
    assert deleted.status_code == 200
    kubesim.wait_for(lambda: kubesim.get("pods", "runner-1") is None, timeout=30)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{ip}:8080/health", timeout=2)


def test_a_claim_lease_in_active_deadline_seconds_kills_the_pod(
        fake_kubesim: KubeSim) -> None:
    sim = fake_kubesim
    post(sim, f"{NS}/pods", pod_manifest("leased", POOL))
    sim.wait_for(lambda: pod_ready(sim.get("pods", "leased")))
    with http(sim) as client:
        client.patch(f"{NS}/pods/leased", headers=JSON_PATCH, content=json.dumps(
            [{"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 1}]))
    pod = sim.wait_for(lambda: (p := sim.get("pods", "leased")) and p["status"].get(
        "phase") == "Failed" and p, timeout=10, message="the deadline")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert not pod_ready(pod)
