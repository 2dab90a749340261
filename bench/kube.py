"""The Kubernetes path against a real control plane (``tests/cluster``).

``KubeCluster`` runs etcd, kube-apiserver (TLS, RBAC, an audit log of every request
made by a ServiceAccount), kube-controller-manager and kube-scheduler built from
the official Go modules, and our node agent in the kubelet's place (each pod's
executor is a local sandbox on its own loopback IP). API replicas run as
``k8si serve`` child processes with ``EXECUTION_BACKEND=kubernetes``, the kubeconfig
of the project's ServiceAccount and Role in a fresh namespace, and a Valkey server
of their own, as in a cluster.

Measured, with the apiserver's audit log as the count (never the API's own log):
the apiserver requests on the critical path of a warm claim and in all per
execution; the warm claim's time (the replica's ``acquire`` phase from ``/metrics``,
scraped around each execution) against one plain list of the same pods by the same
ServiceAccount, interleaved with the claims in the same run; the claim race across
two replicas (double-served pods by hostname, and the apiserver's word: successful
claim patches per pod); the replica's cold start to its first ``/health`` 200; and
the control plane's own start time and memory.

``python -m bench --kubernetes-only`` runs this part alone. A benchmark, not a test:
nothing here asserts.
"""

from __future__ import annotations

import concurrent.futures
import ssl
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from app.valkey import server_binary

from .figures import HEADERS, phase_means, scrape
from .load import percentile
from .report import Row, ms
from .service import Process, cold_start, free_port, runtime_dir, start_service

if TYPE_CHECKING:
    from tests.cluster import AuditRecord, KubeCluster, Namespace

__all__ = ["KubeResult", "measure", "rows"]

LANGUAGE = "bash"
WARM = f"k8si.io/pool={LANGUAGE},k8si.io/state=warm"
#: The claim's own list: the same selectors as ``claims.warm_selector``.
CLAIM_LIST = {"labelSelector": WARM, "fieldSelector": "status.phase=Running"}
_P50 = 0.5


@dataclass
class KubeResult:
    """What the Kubernetes path measured."""

    critical: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    critical_kinds: Counter[str] = field(default_factory=Counter)
    off_path_kinds: Counter[str] = field(default_factory=Counter)
    #: Per warm claim: the replica's ``acquire`` phase (``/metrics``, scraped around
    #: each execution); the first also learns the language's version from the executor.
    claim_seconds: list[float] = field(default_factory=list)
    #: Per warm claim, from the audit log: the list received to the patch received.
    list_to_patch: list[float] = field(default_factory=list)
    list_seconds: list[float] = field(default_factory=list)
    race_executions: int = 0
    race_double_served: int = 0
    race_errors: int = 0
    race_pods_won: int = 0
    race_max_wins: int = 0
    race_lost_patches: int = 0
    cold_starts: list[float] = field(default_factory=list)
    control_plane_seconds: float = float("nan")
    cluster_seconds: float = float("nan")
    control_plane_rss: dict[str, int] = field(default_factory=dict)


def _ready_warm(kube: Namespace) -> int:
    """Warm pods the apiserver reports Ready and not terminating."""
    return sum(1 for pod in kube.objects("pods", label_selector=WARM)
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


def _kind(record: AuditRecord) -> str:
    sub = f"/{record.subresource}" if record.subresource else ""
    return f"{record.verb} {record.resource}{sub}"


def _off_path(record: AuditRecord) -> bool:
    """Background work of the backend by construction: the release (a delete) and the
    pool's last-use record (a patch of the Deployment); watches are long-lived."""
    return (record.verb in {"delete", "watch"}
            or (record.verb == "patch" and record.resource == "deployments"))


def _api_client(cluster: KubeCluster) -> httpx.Client:
    """The API's own identity (its ServiceAccount token), one keep-alive connection."""
    context = ssl.create_default_context(cafile=str(cluster.control_plane.pki.ca_cert))
    return httpx.Client(base_url=cluster.url, verify=context, timeout=10,
                        headers={"Authorization": f"Bearer {cluster.api_token}"})


def _wait_release(kube: Namespace, since: float, timeout: float = 15.0) -> None:
    """Until the apiserver logged the release's delete (bounded; it may never come)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.verb == "delete" for r in kube.audit(since)):
            return
        time.sleep(0.05)


def _claims(kube: Namespace, replica: Process, runs: int, result: KubeResult) -> None:
    """Sequential warm executions, each with the pool full; requests counted per run
    from the audit log. Before each, two plain lists of the same pods (the baseline),
    so claim and baseline share the run's conditions."""
    pods = kube.path("pods")
    with httpx.Client(base_url=replica.base_url, headers=HEADERS, timeout=120) as client, \
            _api_client(kube.cluster) as api:
        api.get(pods, params=CLAIM_LIST).raise_for_status()  # TLS handshake, token cache
        for _ in range(runs):
            kube.wait_for(lambda: _ready_warm(kube) >= 2, timeout=60, message="warm pods")
            for _ in range(2):
                began = time.perf_counter()
                api.get(pods, params=CLAIM_LIST).raise_for_status()
                result.list_seconds.append(time.perf_counter() - began)
            before = scrape(replica)
            began_at = time.time()
            response = client.post("/exec", json={"lang": LANGUAGE, "code": "echo hi"})
            ended_at = time.time()
            if response.status_code != 200:
                continue
            acquire = phase_means(before, scrape(replica)).get("acquire")
            if acquire is not None:
                result.claim_seconds.append(acquire)
            # The release (a delete) runs in the background: wait until the apiserver
            # logged it, so "all requests" of this execution are complete.
            _wait_release(kube, began_at)
            records = [r for r in kube.audit(began_at) if r.verb != "watch"]
            window = [r for r in records if r.received <= ended_at]
            on_path = [r for r in window if not _off_path(r)]
            result.critical.append(len(on_path))
            result.critical_kinds.update(_kind(r) for r in on_path)
            result.off_path_kinds.update(_kind(r) for r in window if _off_path(r))
            received = {(r.verb, r.resource): r.received for r in on_path}
            if {("list", "pods"), ("patch", "pods")} <= received.keys():
                result.list_to_patch.append(received["patch", "pods"]
                                            - received["list", "pods"])
            result.total.append(len(records))


def _race(kube: Namespace, replicas: list[Process], executions: int,
          result: KubeResult) -> None:
    """Concurrent executions spread over the replicas; each must get a pod of its own."""
    kube.wait_for(lambda: _ready_warm(kube) >= 4, timeout=90, message="4 warm pods")
    started = time.time()

    def run(index: int) -> str | None:
        replica = replicas[index % len(replicas)]
        response = httpx.post(f"{replica.base_url}/exec", headers=HEADERS, timeout=180,
                              json={"lang": LANGUAGE, "code": "echo $HOSTNAME; sleep 0.2"})
        return str(response.json()["stdout"]).strip() if response.status_code == 200 else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=executions) as pool:
        hosts = list(pool.map(run, range(executions)))
    served = Counter(h for h in hosts if h)
    result.race_executions = executions
    result.race_errors = sum(1 for h in hosts if h is None)
    result.race_double_served = sum(n - 1 for n in served.values() if n > 1)
    # The apiserver's word: of N concurrent claim patches on a pod, exactly one got 200.
    claims = [r for r in kube.audit(started) if (r.verb, r.resource) == ("patch", "pods")]
    wins = Counter(r.name for r in claims if r.code == 200)
    result.race_pods_won = len(wins)
    result.race_max_wins = max(wins.values(), default=0)
    result.race_lost_patches = sum(1 for r in claims if r.code in (404, 409, 422))


def measure(work: Path, *, claims: int, race: int, cold_runs: int) -> KubeResult:
    """All Kubernetes-path figures (the cluster and replicas are stopped afterwards)."""
    from tests.cluster import KubeCluster

    result = KubeResult()
    valkey, url = _valkey(work)
    replicas: list[Process] = []
    try:
        (work / "cluster").mkdir(parents=True, exist_ok=True)
        cluster = KubeCluster(work / "cluster", runtime_dir())  # builds nothing when cached
        began = time.perf_counter()
        with cluster:
            result.cluster_seconds = time.perf_counter() - began
            result.control_plane_seconds = cluster.control_plane.start_seconds
            kube = cluster.namespace(work / "cluster-api", name="k8si-bench")
            env = {"EXECUTION_BACKEND": "kubernetes", "KUBECONFIG": str(kube.kubeconfig_path),
                   "K8S_NAMESPACE": kube.namespace, "VALKEY_URL": url, "POD_POOL_PY": "0",
                   f"POD_POOL_{LANGUAGE.upper()}": "4", "REAP_INTERVAL": "3600",
                   "RATE_LIMIT_TENANT": "1000000", "RATE_LIMIT_KEY": "1000000",
                   "TENANT_EXECUTIONS_PER_WINDOW": "1000000",
                   "TENANT_CONCURRENT_EXECUTIONS": "0"}
            result.cold_starts = cold_start(work, cold_runs, **env)
            # One replica while requests are counted: the audit log names the
            # ServiceAccount, which every replica shares.
            replicas.append(start_service(work, "replica-0", **env))
            replicas[-1].wait_health()
            _claims(kube, replicas[0], claims, result)
            replicas.append(start_service(work, "replica-1", **env))
            replicas[-1].wait_health()
            _race(kube, replicas, race, result)
            result.control_plane_rss = cluster.control_plane.rss_bytes()
            for replica in replicas:
                replica.stop()
    finally:
        for replica in replicas:
            replica.stop()
        valkey.terminate()
        valkey.wait(10)
    return result


def _p50(values: list[float]) -> float:
    return percentile(values, _P50) if values else float("nan")


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def rows(result: KubeResult) -> list[Row]:
    """The Kubernetes rows of the table."""
    worst = max(result.critical, default=-1)
    kinds = ", ".join(f"{n}x {kind}" for kind, n in sorted(result.critical_kinds.items()))
    off = ", ".join(f"{n}x {kind}" for kind, n in sorted(result.off_path_kinds.items()))
    mean_total = sum(result.total) / len(result.total) if result.total else float("nan")
    listed = _p50(result.list_seconds)
    claims = result.claim_seconds
    claim50, gap50 = _p50(claims), _p50(result.list_to_patch)
    cold50 = _p50(result.cold_starts)
    cold_max = max(result.cold_starts, default=float("nan"))
    rss = result.control_plane_rss
    race_ok = (result.race_double_served == 0 and result.race_errors == 0
               and result.race_max_wins == 1)
    return [
        Row(f"k8s: control plane start, etcd to kube-apiserver /readyz + controllers "
            f"(whole cluster with RBAC and node agent {result.cluster_seconds:.1f} s)",
            f"{result.control_plane_seconds:.1f} s"),
        Row("k8s: control plane RSS after the run ("
            + ", ".join(f"{name} {_mb(size)}" for name, size in rss.items()) + ")",
            _mb(sum(rss.values()))),
        Row(f"k8s: apiserver requests on the critical path of a warm claim, from the "
            f"apiserver's audit log (max of {len(result.critical)}; {kinds}; off the path "
            f"in the same window: {off or 'none'})", str(worst), "", "", "<= 2",
            0 <= worst <= 2),
        Row("k8s: apiserver requests per execution, all, from the audit log (mean; the "
            "release's delete and the pool's last-use patch run in the background)",
            f"{mean_total:.1f}"),
        Row(f"k8s: warm claim (acquire: list + JSON patch) time, P50 of {len(claims)} (max "
            f"{ms(max(claims, default=float('nan')))}; audit log, list received to patch "
            f"received: P50 {ms(gap50)})", ms(claim50),
            f"one list of the warm pods, P50 of {len(result.list_seconds)} {ms(listed)}",
            f"{claim50 / listed:.1f}x"),
        Row(f"k8s: claim race, {result.race_executions} concurrent executions over 2 replicas "
            f"({result.race_errors} errors; apiserver: {result.race_pods_won} pods won, "
            f"max {result.race_max_wins} successful claim per pod, "
            f"{result.race_lost_patches} lost patches)",
            f"{result.race_double_served} double-served", "", "", "0 double-served",
            race_ok),
        Row(f"API cold start to first /health 200, Kubernetes backend (P50 of "
            f"{len(result.cold_starts)}, max {ms(cold_max)})", ms(cold50), "",
            "", "<= 1 s", cold_max <= 1.0),
    ]
