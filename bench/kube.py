"""The Kubernetes path against the in-repo API emulator (``tests/kubesim``).

The emulator runs in this process (its request log is the measurement); API
replicas run as ``k8si serve`` child processes with ``EXECUTION_BACKEND=kubernetes``
and a Valkey server of their own, as in a cluster. Measured: the apiserver
requests on the critical path of a warm claim and in all per execution, the claim
(acquire) time as the replica's ``/metrics`` reports it against one apiserver
round trip, the claim race across two replicas, and the replica's cold start.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.valkey import server_binary

from .figures import HEADERS, phase_means, scrape
from .load import percentile
from .service import Process, cold_start, free_port, runtime_dir, start_service

__all__ = ["KubeResult", "measure"]

WARM = "k8si.io/pool=bash,k8si.io/state=warm"


@dataclass
class KubeResult:
    """What the Kubernetes path measured."""

    critical: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    critical_kinds: Counter[str] = field(default_factory=Counter)
    claim_seconds: float = float("nan")
    round_trip: float = float("nan")
    race_executions: int = 0
    race_double_served: int = 0
    race_errors: int = 0
    cold_starts: list[float] = field(default_factory=list)


def _ready_warm(sim: Any) -> int:
    return sum(1 for pod in sim.objects("pods", label_selector=WARM)
               if any(c.get("type") == "Ready" and c.get("status") == "True"
                      for c in pod.get("status", {}).get("conditions", []))
               and not pod["metadata"].get("deletionTimestamp"))


def _valkey(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    directory = work / "valkey-k8s"
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([str(server_binary()), "--port", str(port), "--bind",
                                "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                                str(directory)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return process, f"valkey://127.0.0.1:{port}/0"


def _claims(sim: Any, replica: Process, runs: int, result: KubeResult) -> None:
    """Sequential warm executions, each with the pool full; requests counted per run."""
    before = scrape(replica)
    with httpx.Client(base_url=replica.base_url, headers=HEADERS, timeout=120) as client:
        for _ in range(runs):
            sim.wait_for(lambda: _ready_warm(sim) >= 2, timeout=60, message="warm pods")
            sim.clear_requests()
            began = time.time()
            response = client.post("/exec", json={"lang": "bash", "code": "echo hi"})
            ended = time.time()
            if response.status_code != 200:
                continue
            time.sleep(0.5)  # the release (a delete) runs in the background
            records = sim.requests
            # Off the path by construction: the release (delete) and the pool's last-use
            # record (a patch of the Deployment), both background tasks of the backend.
            on_path = [r for r in records if began <= r.started <= ended
                       and r.verb not in {"delete", "watch"}
                       and not (r.verb == "patch" and r.resource == "deployments")]
            result.critical.append(len(on_path))
            result.critical_kinds.update(f"{r.verb} {r.resource}" for r in on_path)
            result.total.append(sum(1 for r in records if r.verb != "watch"))
    means = phase_means(before, scrape(replica))
    result.claim_seconds = means.get("acquire", float("nan"))
    namespace = sim.namespace
    times = []
    with httpx.Client(base_url=sim.url, timeout=10,
                      headers={"Authorization": "Bearer kubesim-token"}) as api:
        for _ in range(20):
            began = time.perf_counter()
            api.get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": WARM})
            times.append(time.perf_counter() - began)
    result.round_trip = percentile(times, 0.5)


def _race(sim: Any, replicas: list[Process], executions: int, result: KubeResult) -> None:
    """Concurrent executions spread over the replicas; each must get a pod of its own."""
    sim.wait_for(lambda: _ready_warm(sim) >= 4, timeout=90, message="4 warm pods")

    def run(index: int) -> str | None:
        replica = replicas[index % len(replicas)]
        response = httpx.post(f"{replica.base_url}/exec", headers=HEADERS, timeout=180,
                              json={"lang": "bash", "code": "echo $HOSTNAME; sleep 0.2"})
        return str(response.json()["stdout"]).strip() if response.status_code == 200 else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=executions) as pool:
        hosts = list(pool.map(run, range(executions)))
    served = Counter(h for h in hosts if h)
    result.race_executions = executions
    result.race_errors = sum(1 for h in hosts if h is None)
    result.race_double_served = sum(n - 1 for n in served.values() if n > 1)


def measure(work: Path, *, claims: int, race: int, cold_runs: int) -> KubeResult:
    """All Kubernetes-path figures (the emulator and replicas are stopped afterwards)."""
    from tests.kubesim import KubeSim

    result = KubeResult()
    valkey, url = _valkey(work)
    replicas: list[Process] = []
    try:
        with KubeSim(namespace="k8si", runtime_dir=runtime_dir(),
                     work_dir=work / "kubesim") as sim:
            env = {"EXECUTION_BACKEND": "kubernetes", "KUBECONFIG": str(sim.kubeconfig_path),
                   "K8S_NAMESPACE": sim.namespace, "VALKEY_URL": url, "POD_POOL_PY": "0",
                   "POD_POOL_BASH": "4", "REAP_INTERVAL": "3600",
                   "RATE_LIMIT_TENANT": "1000000", "RATE_LIMIT_KEY": "1000000",
                   "TENANT_EXECUTIONS_PER_WINDOW": "1000000",
                   "TENANT_CONCURRENT_EXECUTIONS": "0"}
            result.cold_starts = cold_start(work, cold_runs, **env)
            for index in range(2):
                replicas.append(start_service(work, f"replica-{index}", **env))
                replicas[-1].wait_health()
            _claims(sim, replicas[0], claims, result)
            _race(sim, replicas, race, result)
            for replica in replicas:
                replica.stop()
    finally:
        for replica in replicas:
            replica.stop()
        valkey.terminate()
        valkey.wait(10)
    return result
