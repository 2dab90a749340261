"""Runtime sessions on the Kubernetes backend, against the real control plane: a kept pod
(claimed, labelled with its runtime session, its idle lease in ``expires-at``) created
by one replica is reused by another (found by its location, reached at its pod IP); the
pod deleted, the next call is restored from the checkpoint in the shared object store;
a kept pod whose idle lease ends is reaped like any expired claim."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.backends.kubernetes import KubernetesBackend
from app.settings import RuntimeSessionSettings
from tests.cluster import Namespace
from tests.conftest import RunningApp
from tests.k8s.conftest import AppFactory, ready_warm
from tests.runtime.conftest import run

RUNTIME = "k8si.io/runtime"


ADMIN_KEY = "admin-key-k8s-runtime-0123456789"


def _replica(factory: AppFactory, store: Path, idle_ttl: int = 600,
             pools: dict[str, int] | None = None) -> RunningApp:
    return factory({"bash": 2} if pools is None else pools, app_settings={
        "admin_api_keys": (ADMIN_KEY,),
        "execution_profiles": ("default", "stateful"),
        "object_store_url": f"file://{store}",  # the deployment's one object store
        "runtime_sessions": RuntimeSessionSettings(idle_ttl=idle_ttl, max_age=3600,
                                                   per_tenant=4, total=8)})


def _two_replicas(kube: Namespace, factory: AppFactory,
                  store: Path) -> tuple[RunningApp, RunningApp]:
    """Two replicas sharing one object store, once both have a warm pod."""
    first, second = _replica(factory, store), _replica(factory, store)
    kube.wait_for(lambda: ready_warm(kube) >= 2, timeout=90, message="warm pods")
    return first, second


def _kept_pods(kube: Namespace) -> list[dict[str, Any]]:
    return [pod for pod in kube.objects("pods", label_selector=RUNTIME)
            if not pod["metadata"].get("deletionTimestamp")]


def test_a_runtime_session_moves_between_replicas_and_survives_its_pod(
        kube: Namespace, k8s_app_factory: AppFactory, tmp_path: Path) -> None:
    first, second = _two_replicas(kube, k8s_app_factory, tmp_path / "objects")

    made = run(first, "k8s-conv", "echo 'x,y' > /mnt/data/a.csv; echo $HOSTNAME", lang="bash")
    assert made["runtime_status"] == "created", made
    pod_name = made["stdout"].strip()
    [kept] = _kept_pods(kube)
    assert kept["metadata"]["name"] == pod_name
    labels, annotations = kept["metadata"]["labels"], kept["metadata"]["annotations"]
    assert labels["k8si.io/state"] == "claimed"
    assert labels[RUNTIME] == f"r{made['runtime_session_id']}x"
    assert annotations["k8si.io/runtime-session"] == made["runtime_session_id"]
    assert annotations["k8si.io/paused"] == "false"
    assert float(annotations["k8si.io/expires-at"]) <= float(
        annotations["k8si.io/runtime-ends-at"])
    assert kept["spec"]["activeDeadlineSeconds"] >= 3600  # the maximum age's hard end

    # another replica reuses it: the same pod, the file in place
    reused = run(second, "k8s-conv", "cat /mnt/data/a.csv; echo $HOSTNAME", lang="bash")
    assert reused["runtime_status"] == "reused", reused
    assert reused["stdout"].split() == ["x,y", pod_name]
    backend = second.app.state.backend
    assert isinstance(backend, KubernetesBackend)
    infos = second.run(backend.runtime_sandboxes("default"))
    assert [i.key.runtime_session_id for i in infos] == [made["runtime_session_id"]]

    # the pod is lost: the next call, on the first replica, restores the workspace
    kube.delete("pods", pod_name)
    kube.wait_for(lambda: kube.get("pods", pod_name) is None, timeout=60,
                  message="the kept pod gone")
    restored = run(first, "k8s-conv", "cat /mnt/data/a.csv; echo $HOSTNAME", lang="bash")
    assert restored["runtime_status"] == "restored", restored
    assert restored["stdout"].split()[0] == "x,y"
    assert restored["stdout"].split()[1] != pod_name
    assert restored["runtime_session_id"] == made["runtime_session_id"]


def test_a_kept_pod_past_its_idle_lease_is_reaped(
        kube: Namespace, k8s_app_factory: AppFactory, tmp_path: Path) -> None:
    app = _replica(k8s_app_factory, tmp_path / "objects", idle_ttl=3)
    kube.wait_for(lambda: ready_warm(kube) >= 1, timeout=90, message="a warm pod")
    made = run(app, "k8s-idle", "echo kept > /mnt/data/k.txt; echo $HOSTNAME", lang="bash")
    pod_name = made["stdout"].strip()
    kube.wait_for(lambda: kube.get("pods", pod_name) is None, timeout=60,
                  message="the idle kept pod reaped")
    again = run(app, "k8s-idle", "cat /mnt/data/k.txt", lang="bash")
    assert (again["runtime_status"], again["stdout"]) == ("restored", "kept\n")


def test_a_programmatic_run_in_a_runtime_session_spans_replicas(
        kube: Namespace, k8s_app_factory: AppFactory, tmp_path: Path) -> None:
    first, second = _two_replicas(kube, k8s_app_factory, tmp_path / "objects")
    made = run(first, "k8s-ptc", "echo 40 > /mnt/data/n.txt; echo $HOSTNAME", lang="bash")
    pod_name = made["stdout"].strip()
    headers = {"X-CodeAPI-Expected-Profile": "stateful"}
    with first.client() as http:
        paused = http.post("/exec/programmatic", headers=headers, json={
            "lang": "bash", "runtime_session_hint": "k8s-ptc",
            "tools": [{"name": "add", "parameters": {"type": "object"}}],
            "code": "n=$(cat /mnt/data/n.txt)\nx=$(add \"{\\\"a\\\": $n, \\\"b\\\": 2}\")\n"
                    "echo $x > /mnt/data/x.txt; echo $x $HOSTNAME"}).json()
    assert paused["status"] == "tool_call_required", paused
    with second.client() as http:  # the next round on another replica
        done = http.post("/exec/programmatic", headers=headers, json={
            "continuation_token": paused["continuation_token"],
            "tool_results": [{"call_id": paused["tool_calls"][0]["id"], "result": 42}]}).json()
    assert done["status"] == "completed", done
    assert done["stdout"].split() == ["42", pod_name]  # in the kept pod
    assert done["runtime_status"] == "reused"
    after = run(second, "k8s-ptc", "cat /mnt/data/x.txt", lang="bash")
    assert (after["runtime_status"], after["stdout"]) == ("reused", "42\n")


def test_a_runtime_session_kept_on_a_cold_start_job_is_seen_and_reused(
        kube: Namespace, k8s_app_factory: AppFactory, tmp_path: Path) -> None:
    """No pool: the runtime session's sandbox is a Job's pod, kept through the Job's
    labels. Operators see it kept (at the pod), and the next call reuses it."""
    app = _replica(k8s_app_factory, tmp_path / "objects", pools={})
    made = run(app, "k8s-cold", "echo kept > /mnt/data/k.txt; echo $HOSTNAME", lang="bash")
    assert made["runtime_status"] == "created", made
    [job] = [j for j in kube.objects("jobs", label_selector=RUNTIME)
             if not j["metadata"].get("deletionTimestamp")]
    backend = app.app.state.backend
    assert isinstance(backend, KubernetesBackend)
    [info] = app.run(backend.runtime_sandboxes("default"))
    assert info.key.runtime_session_id == made["runtime_session_id"]
    assert info.location.startswith(f"job/{job['metadata']['name']}/")
    assert info.language == "bash"
    with app.client(ADMIN_KEY) as admin:
        rows = admin.get("/admin/runtime-sessions", params={"tenant": "default"}).json()
    [row] = [r for r in rows if r["runtime_session_id"] == made["runtime_session_id"]]
    assert row["kept"] is True and row["location"] == info.location
    again = run(app, "k8s-cold", "cat /mnt/data/k.txt; echo $HOSTNAME", lang="bash")
    assert again["runtime_status"] == "reused", again
    assert again["stdout"].split() == ["kept", made["stdout"].strip()]


def test_a_reused_pod_is_leased_for_the_longest_run(
        kube: Namespace, k8s_app_factory: AppFactory, tmp_path: Path) -> None:
    """A reclaimed kept pod gets the lease a fresh claim gets (the longest run it may
    serve), not ``SANDBOX_LEASE_SECONDS``: else the reaper deleted it under a long run."""
    app = k8s_app_factory({"bash": 1}, lease_seconds=10, app_settings={
        "execution_profiles": ("default", "stateful"),
        "object_store_url": f"file://{tmp_path / 'objects'}",
        "max_execution_time": 40,
        "runtime_sessions": RuntimeSessionSettings(idle_ttl=600, max_age=3600,
                                                   per_tenant=4, total=8)})
    kube.wait_for(lambda: ready_warm(kube) >= 1, timeout=90, message="a warm pod")
    made = run(app, "k8s-long", "echo made", lang="bash")
    assert made["runtime_status"] == "created", made
    [kept] = _kept_pods(kube)
    idle_until = float(kept["metadata"]["annotations"]["k8si.io/expires-at"])
    leases: list[float] = []

    def claimed_lease() -> bool:
        [pod] = _kept_pods(kube)
        annotations = pod["metadata"]["annotations"]
        if annotations.get("k8si.io/expires-at") and float(
                annotations["k8si.io/expires-at"]) != idle_until \
                and pod["metadata"]["labels"].get("k8si.io/state") == "claimed":
            leases.append(float(annotations["k8si.io/expires-at"]))
            return True
        return False

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run, app, "k8s-long", "sleep 4; echo done", lang="bash")
        kube.wait_for(claimed_lease, timeout=60, message="the reclaim's lease")
        claimed_at = time.time()
        reused = running.result(timeout=120)
    assert reused["runtime_status"] == "reused" and reused["stdout"] == "done\n", reused
    # at least the longest run (40 s) past the claim, far more than the 10 s lease
    assert leases[0] - claimed_at >= 40, (leases[0], claimed_at)
