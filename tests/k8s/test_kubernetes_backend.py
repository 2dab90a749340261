"""The Kubernetes backend against the real control plane: claims, races, Jobs with the
real Job controller, crashes, scale to zero through the real Deployment, and the count
of apiserver requests on the critical path read from the apiserver's audit log."""

from __future__ import annotations

import collections
import concurrent.futures
import time
from typing import Any

import httpx

from app.backends.base import SandboxLease
from app.backends.kubernetes import KubernetesBackend
from tests.cluster import Namespace
from tests.conftest import RunningApp
from tests.k8s.conftest import WARM, AppFactory, ready_warm


def backend_of(app: RunningApp) -> KubernetesBackend:
    backend = app.app.state.backend
    assert isinstance(backend, KubernetesBackend)
    return backend


def test_warm_execution_in_a_pod(kube: Namespace, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 2})
    kube.wait_for(lambda: ready_warm(kube) == 2, timeout=60, message="2 warm pods")
    with app.client() as client:
        body = client.post("/exec", json={"lang": "bash", "code": "echo $HOSTNAME; id -u"})
        assert body.status_code == 200, body.text
        result = body.json()
    hostname = result["stdout"].split()[0]
    assert hostname.startswith("k8si-pool-bash-"), "user code sees the pod's name"
    assert result["status"] == "ok" and result["language"] == "bash"
    # the used pod is deleted (never relabelled warm) and the ReplicaSet refills the pool
    kube.wait_for(lambda: kube.get("pods", hostname) is None, message="pod deleted")
    kube.wait_for(lambda: ready_warm(kube) == 2, timeout=60, message="pool refilled")
    assert not kube.objects("pods", label_selector="k8si.io/state=claimed")


def test_critical_path_is_at_most_two_apiserver_requests(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1})
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
    backend = backend_of(app)

    async def claim() -> tuple[SandboxLease, float, float]:
        started = time.time()
        lease = await backend.acquire("bash", "S" * 21, "acme")
        # Stamped before this loop runs anything else: the bookkeeping that acquire
        # leaves to a background task (off the critical path) is received later.
        return lease, started, time.time()

    lease, started, claimed_at = app.run(claim())
    name = lease.sandbox_id.split("/", 1)[1]
    on_path = kube.wait_for(lambda: kube.audit(started, claimed_at), timeout=10,
                            message="the audit log")
    app.run(backend.release(lease))
    assert lease.pool_hit
    assert [(r.verb, r.resource, r.code) for r in on_path] == [("list", "pods", 200),
                                                               ("patch", "pods", 200)]
    assert on_path[1].name == name
    claimed = kube.get("pods", name)
    assert claimed is None or claimed["metadata"]["labels"]["k8si.io/state"] == "claimed"


def test_race_two_replicas_every_execution_in_its_own_pod(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    replicas = [k8s_app_factory({"bash": 4}), k8s_app_factory({"bash": 4})]
    kube.wait_for(lambda: ready_warm(kube) == 4, timeout=90, message="4 warm pods")
    started = time.time()

    def run(index: int) -> dict[str, Any]:
        app = replicas[index % 2]
        response = httpx.post(f"{app.base_url}/exec", timeout=180,
                              headers={"X-API-Key": "test-key-0123456789"},
                              json={"lang": "bash", "code": "echo $HOSTNAME; sleep 0.2"})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(run, range(32)))
    hostnames = [r["stdout"].strip() for r in results]
    assert all(r["status"] == "ok" for r in results)
    assert len(set(hostnames)) == 32, "no pod served two executions"
    assert sum(backend_of(app).stats["pool_hits"] for app in replicas) >= 4
    # The apiserver's word: each warm pod was won by exactly one successful claim
    # patch, the losers got 422, and every pod that served was deleted by the API.
    kube.wait_for(lambda: not kube.objects("pods", label_selector="k8si.io/state=claimed"),
                  timeout=60, message="claimed pods deleted")
    kube.wait_for(lambda: not kube.objects("jobs"), timeout=60, message="jobs deleted")
    audit = kube.audit(started)
    wins = collections.Counter(r.name for r in audit
                               if (r.verb, r.resource, r.code) == ("patch", "pods", 200))
    assert wins and max(wins.values()) == 1, "no pod was claimed twice"
    assert all(r.code in (200, 404, 422) for r in audit if (r.verb, r.resource) ==
               ("patch", "pods"))
    deleted = {r.name for r in audit if (r.verb, r.resource) == ("delete", "pods")}
    pooled = {h for h in hostnames if h.startswith("k8si-pool-bash-")}
    assert pooled == set(wins) and pooled <= deleted
    kube.wait_for(lambda: ready_warm(kube) == 4, timeout=90, message="pool back to 4")
    # A cold-path Job's pod goes with its Job through the garbage collector: soon after.
    kube.wait_for(lambda: all(kube.get("pods", name) is None for name in hostnames),
                  timeout=60, message="every pod that served is gone")


def test_crashed_replica_lease_expires_and_the_reaper_deletes_the_pod(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    crashing = k8s_app_factory({"bash": 1}, lease_seconds=2, reap_interval=3600)
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
    lease = crashing.run(backend_of(crashing).acquire("bash", "C" * 21, "t"))
    # the replica "dies" between claim and release: it never releases the lease
    name = lease.sandbox_id.split("/", 1)[1]
    claimed = kube.get("pods", name)
    assert claimed is not None and claimed["metadata"]["labels"]["k8si.io/state"] == "claimed"
    # The ReplicaSet controller releases it (its labels no longer match) on its own time.
    kube.wait_for(lambda: not (kube.get("pods", name) or {"metadata": {}})["metadata"].get(
        "ownerReferences"), timeout=30, message="the ReplicaSet released it")
    k8s_app_factory({"bash": 1}, reap_interval=1)  # any other replica reaps
    kube.wait_for(lambda: kube.get("pods", name) is None, timeout=30,
                  message="the orphaned pod reaped")
    assert not kube.objects("pods", label_selector="k8si.io/state=claimed")


def test_a_run_longer_than_the_lease_claims_for_as_long_as_it_may_take(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """``SANDBOX_LEASE_SECONDS`` is 30 here; a run that may take 900 s claims its pod for
    that long (the reaper's lease and the kubelet's hard end), a short one for 30."""
    app = k8s_app_factory({"bash": 2}, lease_seconds=30, reap_interval=3600)
    kube.wait_for(lambda: ready_warm(kube) == 2, timeout=60, message="two warm pods")
    backend = backend_of(app)
    for wanted, expected in ((900, 900), (5, 30)):
        lease = app.run(backend.acquire("bash", "L" * 21, "t", lease_seconds=wanted))
        pod = kube.get("pods", lease.sandbox_id.split("/", 1)[1])
        assert pod is not None
        left = float(pod["metadata"]["annotations"]["k8si.io/expires-at"]) - time.time()
        assert expected - 10 < left <= expected, (wanted, left)
        assert pod["spec"]["activeDeadlineSeconds"] >= expected
        app.run(backend.release(lease))


def test_cold_path_runs_a_job_with_files_and_cleans_up(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({})  # no pools at all: everything is a Job
    with app.client() as client:
        up = client.post("/upload", files={"file": ("in.txt", b"cold input\n", "text/plain")})
        ref = {"id": up.json()["files"][0]["fileId"], "name": "in.txt",
               "storage_session_id": up.json()["session_id"]}
        result = client.post("/exec", json={"lang": "bash", "files": [ref], "code":
                                            "tr a-z A-Z < /mnt/data/in.txt > /mnt/data/out.txt\n"
                                            "echo $HOSTNAME"}).json()
        assert result["status"] == "ok", result
        assert result["stdout"].startswith("k8si-bash-")
        [out] = result["files"]
        download = client.get(f"/download/{result['session_id']}/{out['id']}")
        assert download.content == b"COLD INPUT\n"
        failing = client.post("/exec", json={"lang": "bash", "code": "echo bad >&2; exit 3"})
        assert failing.status_code == 200
        assert failing.json()["status"] == "error" and failing.json()["code"] == 3
    kube.wait_for(lambda: not kube.objects("jobs"), timeout=60, message="jobs deleted")
    kube.wait_for(lambda: not kube.objects("pods"), timeout=60, message="pods deleted")
    assert backend_of(app).stats["cold_starts"] == 2


def test_an_abandoned_job_is_ended_by_its_deadline_and_removed_by_its_ttl(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """The crash-safe lease of the cold path: the real Job controller ends the Job at
    ``activeDeadlineSeconds`` and the TTL controller deletes it, with no replica alive."""
    app = k8s_app_factory({}, lease_seconds=8, job_ttl_seconds=1, reap_interval=3600)
    backend = backend_of(app)
    lease = app.run(backend.acquire("bash", "J" * 21, "t"))
    job = lease.sandbox_id.split("/", 1)[1]
    assert kube.get("jobs", job) is not None
    # never released: the Job controller fails it at its deadline...
    def failed() -> bool:
        found = kube.get("jobs", job)
        conditions = (found or {}).get("status", {}).get("conditions", [])
        return found is None or any(c["type"] == "Failed" and c["status"] == "True"
                                    and c.get("reason") == "DeadlineExceeded"
                                    for c in conditions)
    kube.wait_for(failed, timeout=60, message="the Job failed with DeadlineExceeded")
    # ...and ttlSecondsAfterFinished removes it, its pod with it
    kube.wait_for(lambda: kube.get("jobs", job) is None, timeout=60, message="TTL deletion")
    kube.wait_for(lambda: not kube.objects("pods", label_selector=f"job-name={job}"),
                  timeout=60, message="the Job's pod deleted")


def test_idle_pool_shrinks_to_zero_and_grows_back(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 2}, pool_idle_seconds=1, pool_min=0, reap_interval=1)

    def replicas() -> int:
        deployment = kube.get("deployments", "k8si-pool-bash")
        assert deployment is not None
        return int(deployment["spec"]["replicas"])

    kube.wait_for(lambda: replicas() == 0, timeout=30, message="the pool shrank to 0")
    kube.wait_for(lambda: not kube.objects("pods", label_selector=WARM), timeout=30,
                  message="warm pods gone")
    with app.client() as client:
        result = client.post("/exec", json={"lang": "bash", "code": "echo served"}).json()
    assert result["stdout"] == "served\n", "a miss is served by the cold path"
    assert backend_of(app).stats["pool_misses"] >= 1
    kube.wait_for(lambda: replicas() == 2, timeout=30, message="the pool grew back")
    kube.wait_for(lambda: ready_warm(kube) == 2, timeout=60,
                  message="the real ReplicaSet made 2 warm pods again")


def test_health_endpoints_report_the_cluster(kube: Namespace,
                                             k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1})
    kube.wait_for(lambda: ready_warm(kube) == 1, timeout=60, message="a warm pod")
    with app.client() as client:
        health = client.get("/health/kubernetes").json()
        assert health["status"] == "healthy" and health["namespace"] == kube.namespace
        pools = client.get("/health/pool").json()
        assert pools["backend"] == "kubernetes"
        assert pools["pools"]["bash"]["warm"] == 1 and pools["pools"]["bash"]["target"] == 1
        ready = client.get("/health/ready").json()
        assert ready["services"]["backend"]["status"] == "healthy"
