"""An acquire that gives up on its claim leaves no pod claimed by nobody (real apiserver).

A streaming or keep-alive client going away cancels its run task, so ``acquire`` may be
cancelled at any point: while it lists, while its claim PATCH is on its way (sent or
not yet, applied or not), while it probes the claimed pod's executor. And a claim
whose every attempt failed may have been applied by the first (its answer lost). In
every case the claim's outcome is learnt, a pod it won is deleted at once (the reaper
is off here: nothing else would delete it before its lease ends), and the execution
slot is given back; the cancellation itself still reaches the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.backends.base import SandboxLease
from app.backends.kubernetes import KubernetesBackend
from app.backends.kubernetes.client import PODS, KubeError, Resource
from app.errors import ServiceUnavailable
from tests.cluster import Namespace
from tests.conftest import RunningApp
from tests.k8s.conftest import AppFactory, ready_warm

SESSION = "C" * 21
SLOTS = 2


def backend_of(app: RunningApp) -> KubernetesBackend:
    backend = app.app.state.backend
    assert isinstance(backend, KubernetesBackend)
    return backend


def orphans(kube: Namespace, backend: KubernetesBackend) -> list[str]:
    """Claimed pods, not being deleted, that the replica does not hold: held by nobody."""
    return [pod["metadata"]["name"]
            for pod in kube.objects("pods", label_selector="k8si.io/state=claimed")
            if not pod["metadata"].get("deletionTimestamp")
            and f"pod/{pod['metadata']['name']}" not in backend._held]


class Gate:
    """Stands in for the client's one request (``KubeClient._once``): a request of
    ``method`` on pods (a GET: the warm pods' list) sets ``reached`` and waits for
    ``go``, before it is sent
    (``applied=False``) or after the apiserver applied it (``applied=True``: its answer
    still on its way)."""

    def __init__(self, backend: KubernetesBackend, method: str, *, applied: bool) -> None:
        assert backend.client is not None
        self.real = backend.client._once
        self.method, self.applied = method, applied
        self.reached = asyncio.Event()
        self.go = asyncio.Event()
        self.names: list[str] = []

    async def __call__(self, method: str, resource: Resource, path: str,
                       **kwargs: Any) -> dict[str, Any]:
        listing = method == "GET" and not path and "state=warm" in str(kwargs.get("params"))
        if (method != self.method or resource != PODS
                or (method == "GET" and not listing)):  # not the reaper's list
            return await self.real(method, resource, path, **kwargs)
        self.names.append(path)
        if not self.applied:
            self.reached.set()
            await self.go.wait()
        answer = await self.real(method, resource, path, **kwargs)
        if self.applied:
            self.reached.set()
            await self.go.wait()
        return answer


async def cancel_at(backend: KubernetesBackend, reached: asyncio.Event,
                    delay: float = 0.0) -> SandboxLease | None:
    """Cancel an acquire ``delay`` after ``reached``; its lease if it won first."""
    task = asyncio.create_task(backend.acquire("bash", SESSION, "acme"))
    await reached.wait()
    await asyncio.sleep(delay)
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        assert task.cancelled(), "the cancellation reaches the caller"
        assert backend.free_slots == SLOTS, "the slot is given back at once"
        return None


def settled(kube: Namespace, backend: KubernetesBackend, *deleted: str) -> None:
    """No pod held by nobody, the named ones deleted, every slot free."""
    kube.wait_for(lambda: not orphans(kube, backend), timeout=20,
                  message="no claimed pod held by nobody")
    for name in deleted:
        def gone(name: str = name) -> bool:
            return kube.get("pods", name) is None

        kube.wait_for(gone, timeout=20, message=f"{name} deleted")
    assert backend.free_slots == SLOTS and not backend._held


@pytest.fixture
def replica(kube: Namespace, k8s_app_factory: AppFactory) -> RunningApp:
    return k8s_app_factory({"bash": 3}, reap_interval=3600, lease_seconds=300,
                           app_settings={"max_concurrent_executions": SLOTS})


def warm(kube: Namespace) -> None:
    kube.wait_for(lambda: ready_warm(kube) >= 2, timeout=90, message="warm pods")


def test_cancelled_while_the_claim_is_on_its_way(
        kube: Namespace, replica: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_of(replica)
    assert backend.client is not None
    for method, applied in (("GET", False), ("PATCH", False), ("PATCH", True)):
        warm(kube)

        async def scenario(method: str = method, applied: bool = applied) -> Gate:
            gate = Gate(backend, method, applied=applied)
            monkeypatch.setattr(backend.client, "_once", gate)
            assert await cancel_at(backend, gate.reached) is None
            gate.go.set()  # the request goes on: sent now, or its answer received
            return gate

        gate = replica.run(scenario())
        monkeypatch.undo()
        if method == "GET":  # cancelled during the list: nothing was claimed
            assert gate.names == [""]
            settled(kube, backend)
        else:  # the PATCH applied (after the cancel, or before): the pod was ours
            [name] = gate.names
            settled(kube, backend, name)


def test_cancelled_at_moments_after_the_claim_is_sent(
        kube: Namespace, replica: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's timing: cancelled a few ms after the PATCH left (some applied, some
    not, some answered before the cancel)."""
    backend = backend_of(replica)
    assert backend.client is not None
    real = backend.client._once
    won = 0
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.05):
        warm(kube)

        async def scenario(delay: float = delay) -> SandboxLease | None:
            sent = asyncio.Event()

            async def once(method: str, resource: Resource, path: str,
                           **kwargs: Any) -> dict[str, Any]:
                if method == "PATCH" and resource == PODS:
                    sent.set()
                return await real(method, resource, path, **kwargs)

            monkeypatch.setattr(backend.client, "_once", once)
            lease = await cancel_at(backend, sent, delay)
            if lease is not None:  # answered before the cancel: an ordinary lease
                await backend.release(lease)
            return lease

        won += replica.run(scenario()) is not None
        monkeypatch.undo()
        settled(kube, backend)
    assert won < 6, "at least one acquire was cancelled mid-claim"


def test_cancelled_while_the_claimed_pod_is_probed(
        kube: Namespace, replica: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_of(replica)
    warm(kube)

    async def scenario() -> None:
        probing = asyncio.Event()

        async def learn(language: str, executor: Any) -> None:
            probing.set()
            await asyncio.Event().wait()  # until cancelled

        monkeypatch.setattr(backend, "_learn_version", learn)
        assert await cancel_at(backend, probing) is None

    replica.run(scenario())
    settled(kube, backend)


def test_a_claim_applied_whose_every_answer_was_lost_is_deleted(
        kube: Namespace, replica: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempt 1 applied, its answer lost; every retry answered 503: the client gets a
    503, and the pod its first attempt won is deleted (not left until its lease ends)."""
    backend = backend_of(replica)
    assert backend.client is not None
    real = backend.client._once
    warm(kube)
    patched: list[str] = []

    async def once(method: str, resource: Resource, path: str,
                   **kwargs: Any) -> dict[str, Any]:
        if method == "PATCH" and resource == PODS:
            if not patched:
                await real(method, resource, path, **kwargs)
            patched.append(path)
            raise KubeError(503, "ServiceUnavailable", "the answer was lost")
        return await real(method, resource, path, **kwargs)

    monkeypatch.setattr(backend.client, "_once", once)
    with pytest.raises(ServiceUnavailable):
        replica.run(backend.acquire("bash", SESSION, "acme"))
    assert len(patched) > 1 and set(patched) == {patched[0]}, "one pod, retried"
    claimed = kube.get("pods", patched[0])
    assert claimed is None or claimed["metadata"]["labels"]["k8si.io/state"] == "claimed"
    monkeypatch.undo()
    settled(kube, backend, patched[0])
