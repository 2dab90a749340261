"""``MAX_CONCURRENT_EXECUTIONS`` on the Kubernetes backend, against the real apiserver.

As on the local backend, a replica has that many execution slots: an acquire waits up
to ``QUEUE_TIMEOUT`` for one, then is refused (503 ``no_capacity``), so neither warm
pods nor pool misses (Jobs) put more pods to work at once. A slot goes back when its
pod is released or kept for a runtime session; a paused programmatic run keeps its
slot until it is resumed (here: the slot passes on) or its pause ends. And a burst of
pool misses grows the pool with one request pair, not one per miss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time

import httpx
import pytest

from app.backends.base import RuntimeKey
from app.backends.kubernetes import KubernetesBackend
from app.errors import NoCapacity
from tests.cluster import Namespace
from tests.conftest import API_KEY, RunningApp
from tests.k8s.conftest import AppFactory, ready_warm

SESSION = "S" * 21


def backend_of(app: RunningApp) -> KubernetesBackend:
    backend = app.app.state.backend
    assert isinstance(backend, KubernetesBackend)
    return backend


def post(app: RunningApp, code: str) -> httpx.Response:
    return httpx.post(f"{app.base_url}/exec", timeout=180, headers={"X-API-Key": API_KEY},
                      json={"lang": "bash", "code": code})


def claimed(kube: Namespace) -> list[str]:
    return [pod["metadata"]["name"]
            for pod in kube.objects("pods", label_selector="k8si.io/state=claimed")
            if not pod["metadata"].get("deletionTimestamp")]


def test_pool_misses_run_at_most_the_slots_at_once(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """No pool: six executions, each a Job, two slots: two run at once, never more."""
    app = k8s_app_factory({"bash": 0}, app_settings={"max_concurrent_executions": 2,
                                                     "queue_timeout": 150})
    code = "date +%s.%N; sleep 3; date +%s.%N"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(app, code), range(6)))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    runs = [tuple(float(stamp) for stamp in answer.json()["stdout"].split())
            for answer in answers]
    at_once = max(sum(1 for start, end in runs if start <= moment < end)
                  for moment, _ in runs)
    assert at_once == 2, runs
    assert backend_of(app).free_slots == 2


def test_over_the_slots_an_execution_waits_then_is_refused(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """One slot, warm pods to spare: a second execution waits for the slot (served when
    it frees in time), else gets 503 ``no_capacity`` after ``QUEUE_TIMEOUT`` and claims
    nothing."""
    app = k8s_app_factory({"bash": 3}, app_settings={"max_concurrent_executions": 1,
                                                     "queue_timeout": 3})
    backend = backend_of(app)
    kube.wait_for(lambda: ready_warm(kube) == 3, timeout=90, message="3 warm pods")

    def holding(first: concurrent.futures.Future[httpx.Response]) -> bool:
        return backend.free_slots == 0 or first.done()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for first_runs, served in ((1, True), (8, False)):
            kube.wait_for(lambda: ready_warm(kube) >= 2, timeout=90, message="warm pods")
            first = pool.submit(post, app, f"sleep {first_runs}; echo first")
            kube.wait_for(functools.partial(holding, first), timeout=30,
                          message="the first execution holds the slot")
            assert not first.done()
            started = time.monotonic()
            second = post(app, "echo second")
            waited = time.monotonic() - started
            if served:
                assert second.status_code == 200 and second.json()["stdout"] == "second\n"
                assert waited < 3
            else:
                assert second.status_code == 503, second.text
                assert second.json()["error"] == "no_capacity"
                assert second.headers["Retry-After"] == "2"
                assert 3 <= waited < first_runs
                assert len(claimed(kube)) == 1, "the refused one claimed no pod"
            assert first.result().json()["stdout"] == "first\n"
    assert backend.free_slots == 1


def test_a_paused_run_keeps_its_slot_a_kept_sandbox_does_not(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    """The local backend's rule: ``hold`` keeps the slot (``resume`` here passes it on;
    another replica's resume takes one there, and the pause's ends with its lease);
    ``keep`` gives it back, ``reclaim`` takes one (waiting like ``acquire``)."""
    one, other = (k8s_app_factory({"bash": 4}, reap_interval=3600, app_settings={
        "max_concurrent_executions": 2, "queue_timeout": 1}) for _ in range(2))
    a, b = backend_of(one), backend_of(other)

    def warm(count: int) -> None:
        kube.wait_for(lambda: ready_warm(kube) >= count, timeout=90, message="warm pods")

    async def paused_and_resumed_here() -> None:
        lease = await a.acquire("bash", SESSION, "acme")
        location = await a.hold(lease, 60)
        assert a.free_slots == 1, "a paused run keeps its slot"
        resumed = await a.resume(location, SESSION, "acme", 60)
        assert resumed is not None and a.free_slots == 1, "the same slot passes on"
        await a.release(resumed)
        assert a.free_slots == 2

    warm(1)
    one.run(paused_and_resumed_here())

    warm(1)
    location = one.run(a.hold(one.run(a.acquire("bash", SESSION, "acme")), 3))
    resumed = other.run(b.resume(location, SESSION, "acme", 60))
    assert resumed is not None
    assert (a.free_slots, b.free_slots) == (1, 1), "resumed elsewhere: a slot there"
    other.run(b.release(resumed))
    assert b.free_slots == 2
    kube.wait_for(lambda: a.free_slots == 2, timeout=10, message="the pause's lease ended")

    warm(3)
    key = RuntimeKey("acme", "R" * 21, SESSION)
    kept = one.run(a.acquire("bash", SESSION, "acme"))
    location = one.run(a.keep(kept, key, 60, time.time() + 600))
    assert a.free_slots == 2, "a kept pod holds no slot"
    busy = [one.run(a.acquire("bash", "B" * 21, "acme")) for _ in range(2)]
    assert a.free_slots == 0
    with pytest.raises(NoCapacity):
        one.run(a.reclaim(location, key))
    pod = kube.get("pods", location.split("/")[1])
    assert pod is not None and "k8si.io/runtime" in pod["metadata"]["labels"], "still kept"
    one.run(a.release(busy.pop()))
    reclaimed = one.run(a.reclaim(location, key))
    assert reclaimed is not None and a.free_slots == 0
    for lease in (reclaimed, *busy):
        one.run(a.release(lease))
    assert a.free_slots == 2 and not a._held


def test_a_burst_of_misses_grows_the_pool_once(
        kube: Namespace, k8s_app_factory: AppFactory) -> None:
    app = k8s_app_factory({"bash": 1}, reap_interval=3600)
    scaler = backend_of(app)._scaler
    assert scaler is not None

    async def burst(misses: int) -> None:
        await asyncio.gather(*(scaler.grow("bash") for _ in range(misses)))

    def requests(since: float) -> list[str]:
        time.sleep(1)  # the audit log is written in batches
        return sorted(record.verb for record in kube.audit(since, time.time())
                      if record.resource == "deployments" and record.verb in ("get", "patch"))

    for misses in (5, 1):  # one grow at a time; once over, the next one goes ahead
        started = time.time()
        app.run(burst(misses))
        assert kube.wait_for(functools.partial(requests, started), timeout=10,
                             message="the audit log") == ["get", "patch"]
