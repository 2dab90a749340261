"""The Kubernetes backend against the emulator over real HTTP: claims, races, Jobs,
crashes, scale to zero, and the count of apiserver requests on the critical path."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx

from app.backends.base import SandboxLease
from app.backends.kubernetes import KubernetesBackend
from tests.conftest import RunningApp
from tests.k8s.conftest import AppFactory
from tests.kubesim import KubeSim, RequestRecord

WARM = "k8si.io/pool=bash,k8si.io/state=warm"


def backend_of(app: RunningApp) -> KubernetesBackend:
    backend = app.app.state.backend
    assert isinstance(backend, KubernetesBackend)
    return backend


def ready_warm(sim: KubeSim, selector: str = WARM) -> int:
    return sum(1 for pod in sim.objects("pods", label_selector=selector)
               if any(c.get("type") == "Ready" and c.get("status") == "True"
                      for c in pod.get("status", {}).get("conditions", []))
               and not pod["metadata"].get("deletionTimestamp"))


def test_warm_execution_in_a_pod(kubesim: KubeSim, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 2})
    kubesim.wait_for(lambda: ready_warm(kubesim) == 2, timeout=60, message="2 warm pods")
    with app.client() as client:
        body = client.post("/exec", json={"lang": "bash", "code": "echo $HOSTNAME; id -u"})
        assert body.status_code == 200, body.text
        result = body.json()
    hostname = result["stdout"].split()[0]
    assert hostname.startswith("k8si-pool-bash-"), "user code sees the pod's name"
    assert result["status"] == "ok" and result["language"] == "bash"
    # the used pod is deleted (never relabelled warm) and the pool refills
    kubesim.wait_for(lambda: kubesim.get("pods", hostname) is None, message="pod deleted")
    kubesim.wait_for(lambda: ready_warm(kubesim) == 2, timeout=60, message="pool refilled")
    assert not kubesim.objects("pods", label_selector="k8si.io/state=claimed")


def test_critical_path_is_at_most_two_apiserver_requests(
        kubesim: KubeSim, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1})
    kubesim.wait_for(lambda: ready_warm(kubesim) == 1, timeout=60, message="a warm pod")
    backend = backend_of(app)
    kubesim.clear_requests()

    async def claim() -> tuple[SandboxLease, list[RequestRecord]]:
        lease = await backend.acquire("bash", "S" * 21, "acme")
        # Read before this loop runs anything else: the bookkeeping that acquire leaves
        # to a background task (off the critical path) must not be counted.
        return lease, kubesim.requests

    lease, on_critical_path = app.run(claim())
    app.run(backend.release(lease))
    assert lease.pool_hit
    assert [(r.verb, r.resource) for r in on_critical_path] == [("list", "pods"),
                                                                 ("patch", "pods")]
    claimed = kubesim.get("pods", lease.sandbox_id.split("/", 1)[1])
    assert claimed is None or claimed["metadata"]["labels"]["k8si.io/state"] == "claimed"


def test_race_two_replicas_every_execution_in_its_own_pod(
        kubesim: KubeSim, k8s_app_factory: AppFactory) -> None:
    replicas = [k8s_app_factory({"bash": 4}), k8s_app_factory({"bash": 4})]
    kubesim.wait_for(lambda: ready_warm(kubesim) == 4, timeout=90, message="4 warm pods")

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
    hits = sum(backend_of(app).stats["pool_hits"] for app in replicas)
    assert hits >= 4
    # every claimed pod and every Job is deleted; the pool is back at its size
    kubesim.wait_for(lambda: not kubesim.objects("pods",
                                                 label_selector="k8si.io/state=claimed"),
                     timeout=60, message="claimed pods deleted")
    kubesim.wait_for(lambda: not kubesim.objects("jobs"), timeout=60, message="jobs deleted")
    kubesim.wait_for(lambda: ready_warm(kubesim) == 4, timeout=90, message="pool back to 4")
    for hostname in hostnames:
        assert kubesim.get("pods", hostname) is None


def test_crashed_replica_lease_expires_and_the_reaper_deletes_the_pod(
        kubesim: KubeSim, k8s_app_factory: AppFactory) -> None:
    crashing = k8s_app_factory({"bash": 1}, lease_seconds=2, reap_interval=3600)
    kubesim.wait_for(lambda: ready_warm(kubesim) == 1, timeout=60, message="a warm pod")
    lease = crashing.run(backend_of(crashing).acquire("bash", "C" * 21, "t"))
    # the replica "dies" between claim and release: it never releases the lease
    name = lease.sandbox_id.split("/", 1)[1]
    claimed = kubesim.get("pods", name)
    assert claimed is not None and claimed["metadata"]["labels"]["k8si.io/state"] == "claimed"
    k8s_app_factory({"bash": 1}, reap_interval=1)  # any other replica reaps
    kubesim.wait_for(lambda: kubesim.get("pods", name) is None, timeout=30,
                     message="the orphaned pod reaped")
    assert not kubesim.objects("pods", label_selector="k8si.io/state=claimed")


def test_cold_path_runs_a_job_with_files_and_cleans_up(
        kubesim: KubeSim, k8s_app_factory: AppFactory) -> None:
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
    kubesim.wait_for(lambda: not kubesim.objects("jobs"), timeout=60, message="jobs deleted")
    kubesim.wait_for(lambda: not kubesim.objects("pods"), timeout=60, message="pods deleted")
    assert backend_of(app).stats["cold_starts"] == 2


def test_idle_pool_shrinks_to_zero_and_grows_back(
        kubesim: KubeSim, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 2}, pool_idle_seconds=1, pool_min=0, reap_interval=1)

    def replicas() -> int:
        deployment = kubesim.get("deployments", "k8si-pool-bash")
        assert deployment is not None
        return int(deployment["spec"]["replicas"])

    kubesim.wait_for(lambda: replicas() == 0, timeout=30, message="the pool shrank to 0")
    kubesim.wait_for(lambda: not kubesim.objects("pods", label_selector=WARM), timeout=30,
                     message="warm pods gone")
    with app.client() as client:
        result = client.post("/exec", json={"lang": "bash", "code": "echo served"}).json()
    assert result["stdout"] == "served\n", "a miss is served by the cold path"
    assert backend_of(app).stats["pool_misses"] >= 1
    kubesim.wait_for(lambda: replicas() == 2, timeout=30, message="the pool grew back")


def test_health_endpoints_report_the_cluster(kubesim: KubeSim,
                                             k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1})
    kubesim.wait_for(lambda: ready_warm(kubesim) == 1, timeout=60, message="a warm pod")
    with app.client() as client:
        kube = client.get("/health/kubernetes").json()
        assert kube["status"] == "healthy" and kube["namespace"] == kubesim.namespace
        pools = client.get("/health/pool").json()
        assert pools["backend"] == "kubernetes"
        assert pools["pools"]["bash"]["warm"] == 1 and pools["pools"]["bash"]["target"] == 1
        ready = client.get("/health/ready").json()
        assert ready["services"]["backend"]["status"] == "healthy"
