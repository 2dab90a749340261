"""Pods held by a claim: released, paused between programmatic steps, kept for a
runtime session — and found again, by any replica, from a location alone.

``HeldPods`` is the part of ``KubernetesBackend`` (``backend.py``) that deals with a
sandbox after its claim: ``release`` deletes it after the answer; ``hold``/``resume``
pause and resume a programmatic run (the pod's lease annotations, ``k8si.io/paused``);
``keep``/``reclaim``/``runtime_sandboxes``/``drop`` keep a runtime session's pod
(labels and patches of ``runtime.py``). A location names the pod's kind, name, IP
and UID, and ``_live`` checks all of them (and the labels, phase and deletion) against
the apiserver before a replica talks to the pod.

Every pod this replica holds has one of its execution slots (``slots.py``), given back,
kept over a pause and taken again as the local backend does. A pod given up while it
is being paused or kept (the patch failed, or the caller was cancelled) is deleted: no
continuation token or runtime-session record would ever name it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Any

import attrs

from ...after_response import defer
from ...errors import ServiceUnavailable
from ...executor import ExecutorClient, ExecutorError
from ...executor.programmatic import cancel_run
from ...settings import KubernetesSettings
from ..base import KeptInfo, RuntimeKey, SandboxLease
from ..tasks import BackgroundTasks
from .claims import LABEL_SESSION, LABEL_TENANT, label_value, lease_patch
from .client import JOBS, PODS, KubeClient, KubeError
from .reaper import lease_expired
from .runtime import keep_patch, kept_info, kept_selector, runtime_matches
from .slots import ExecutionSlots
from .templates import LABEL_LANGUAGE, LABEL_STATE

__all__ = ["Held", "HeldPods", "executor_port", "executor_url", "unavailable"]

logger = logging.getLogger(__name__)

#: Job names per ``job-name in (...)`` selector when kept Jobs' pods are listed.
_NAMES_PER_SELECTOR = 40


@attrs.frozen
class Held:
    """What this replica must delete when a lease is released."""

    kind: str  # "pod" or "job"
    name: str
    executor: ExecutorClient
    #: The sandbox pod's UID (a Job's pod's): a location names it, not just its IP.
    uid: str = ""

    def location(self) -> str:
        host = str(self.executor.address).removeprefix("http://").rpartition(":")[0]
        return f"{self.kind}/{self.name}/{host.strip('[]')}/{self.uid}"


def executor_port(kind: str, obj: dict[str, Any], default: int) -> int:
    """The port a claimed pod's (or Job's pod's) executor listens on: its container port
    named ``executor``, so pods made before a ``K8S_EXECUTOR_PORT`` change are still
    reached on theirs; ``default`` when it names none."""
    pod = obj if kind == "pod" else obj.get("spec", {}).get("template", {})
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if port.get("name") == "executor" and isinstance(number, int):
                return number
    return default


def executor_url(ip: str, port: int) -> str:
    """The executor's address in a pod: ``http://10.0.0.7:8080``, ``http://[fd00::7]:8080``."""
    return f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"


def executor_token(key: bytes, kind: str, name: str, uid: str) -> str:
    """The token of the sandbox ``kind/name`` with this UID: what its executor is bound to
    once the API first shows it (``sidecar/server.py``). Derived from the replicas'
    shared secret, so any replica that finds the pod again from its location can talk
    to it without reading a copy from anywhere."""
    digest = hmac.new(key, f"{kind}/{name}/{uid}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def unavailable(action: str, exc: KubeError) -> ServiceUnavailable:
    """A plain 503 for the client; the apiserver's own words go to the log only."""
    logger.warning("Kubernetes API call failed", extra={"action": action, "error": str(exc)})
    return ServiceUnavailable("the Kubernetes API is unavailable", retry_after=2)


class HeldPods:
    """Releasing, pausing, keeping and finding again the pods this backend claimed."""

    client: KubeClient | None
    config: KubernetesSettings
    replica: str
    #: Every entry holds one execution slot of ``_slots``.
    _held: dict[str, Held]
    _slots: ExecutionSlots
    _tasks: BackgroundTasks
    #: What the sandboxes' executor tokens are derived from (``executor_token``).
    _token_key: bytes

    def executor_client(self, kind: str, name: str, uid: str, url: str) -> ExecutorClient:
        """A client of the executor of ``kind/name`` (UID ``uid``) at ``url``, with the
        sandbox's token."""
        return ExecutorClient(url, token=executor_token(self._token_key, kind, name, uid))

    def _lease(self, wanted: int | None) -> int:
        """A claim's lease: ``SANDBOX_LEASE_SECONDS``, or what the run needs if longer
        (the reaper must not end a run the service allowed)."""
        return max(wanted or 0, self.config.lease_seconds)

    async def release(self, lease: SandboxLease) -> None:
        held = self._held.pop(lease.sandbox_id, None)
        if held is not None:  # deleted once the answer is sent, as the local backend does
            self._slots.give_back()
            defer(lambda: self._tasks.spawn(self._delete(held)))

    # -- paused programmatic runs: any replica resumes them by the pod's UID ----------

    def locate(self, lease: SandboxLease) -> str:
        held = self._held.get(lease.sandbox_id)
        return held.location() if held is not None else ""

    async def hold(self, lease: SandboxLease, seconds: float) -> str:
        assert self.client is not None
        held = self._held.pop(lease.sandbox_id, None)
        if held is None:
            raise ServiceUnavailable("the paused sandbox is no longer claimed", retry_after=1)
        try:
            await self.client.json_patch(PODS if held.kind == "pod" else JOBS, held.name,
                                         lease_patch(seconds, self.replica, paused=True))
        except BaseException as exc:  # failed or cancelled: no token will ever name it
            self._slots.give_back()
            self._tasks.spawn(self._delete(held))
            if isinstance(exc, KubeError):
                raise unavailable("hold", exc) from exc
            raise
        location = held.location()
        self._slots.pause(location, seconds)  # a paused run keeps its slot (local: the same)
        await held.executor.close()
        return location

    async def _live(self, location: str, session_id: str, tenant: str,
                    ) -> tuple[str, str, str, dict[str, Any]] | None:
        """(kind, name, host, the claimed object) when ``location`` still names this
        session's and tenant's sandbox: the very pod (its UID) at that IP, Running, not
        being deleted, under a lease that has not ended; None otherwise."""
        assert self.client is not None
        kind, name, host, uid = [*location.split("/"), "", "", "", ""][:4]
        if kind not in ("pod", "job") or not name or not host or not uid:
            return None
        try:
            obj = await self.client.get(PODS if kind == "pod" else JOBS, name)
            if kind == "pod":
                pods = [obj]
            else:
                listed = await self.client.list_objects(PODS, labelSelector=f"job-name={name}")
                pods = listed.get("items", [])
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise unavailable("resume", exc) from exc
        metadata = obj.get("metadata", {})
        labels = metadata.get("labels") or {}
        if (metadata.get("deletionTimestamp") or lease_expired(obj, time.time())
                or labels.get(LABEL_SESSION) != label_value("s", session_id)
                or labels.get(LABEL_TENANT) != label_value("t", tenant or "default")
                or (kind == "pod" and labels.get(LABEL_STATE) != "claimed")):
            return None
        for pod in pods:
            pod_meta, status = pod.get("metadata", {}), pod.get("status", {})
            if (pod_meta.get("uid") == uid and not pod_meta.get("deletionTimestamp")
                    and status.get("phase") == "Running" and status.get("podIP") == host
                    and (kind == "pod" or (pod_meta.get("labels") or {}).get("job-name")
                         == name)):
                return kind, name, host, obj
        return None

    async def resume(self, location: str, session_id: str, tenant: str,
                     seconds: float) -> SandboxLease | None:
        assert self.client is not None
        live = await self._live(location, session_id, tenant)
        paused_here = self._slots.resume(location)  # its slot passes to this step
        if live is None:
            if paused_here:
                self._slots.give_back()
            return None
        if not paused_here:  # paused by another replica (or before a restart)
            await self._slots.take()
        kind, name, _, _ = live
        try:
            await self.client.json_patch(PODS if kind == "pod" else JOBS, name,
                                         lease_patch(seconds, self.replica, paused=False))
        except BaseException as exc:
            self._slots.give_back()
            if isinstance(exc, KubeError):
                raise unavailable("resume", exc) from exc
            raise
        return self._hold_again(live, location, session_id, pool_hit=kind == "pod")

    def _hold_again(self, live: tuple[str, str, str, dict[str, Any]], location: str,
                    session_id: str, *, pool_hit: bool) -> SandboxLease:
        """This replica holds the object ``_live`` found for ``location`` again (with the
        execution slot the caller took for it)."""
        kind, name, host, obj = live
        uid = location.split("/")[3]
        port = executor_port(kind, obj, self.config.executor_port)
        held = Held(kind, name, self.executor_client(kind, name, uid, executor_url(host, port)),
                    uid)
        previous = self._held.get(f"{kind}/{name}")
        if previous is not None:  # held twice at once: one slot for one pod
            self._slots.give_back()
            self._tasks.spawn(previous.executor.close())
        self._held[f"{kind}/{name}"] = held
        labels = obj.get("metadata", {}).get("labels") or {}
        return SandboxLease(sandbox_id=f"{kind}/{name}", language=labels.get(LABEL_LANGUAGE, ""),
                            session_id=session_id, executor_address=str(held.executor.address),
                            executor=held.executor, pool_hit=pool_hit)

    async def cancel_program(self, location: str, session_id: str, tenant: str) -> bool:
        """Stop the programmatic run in the sandbox at ``location`` once it is verified to
        be that session's pod still; False when it is not (or had no run)."""
        live = await self._live(location, session_id, tenant)
        if live is None:
            return False
        kind, name, host, obj = live
        executor = self.executor_client(kind, name, location.split("/")[3], executor_url(
            host, executor_port(kind, obj, self.config.executor_port)))
        try:
            return await cancel_run(executor)
        except ExecutorError as exc:
            logger.info("cancel: the executor did not answer", extra={"error": str(exc)})
            return False
        finally:
            await executor.close()

    async def _delete(self, held: Held) -> None:
        assert self.client is not None
        await held.executor.close()
        if held.kind == "pod":
            await self.client.delete(PODS, held.name)  # never relabelled back to warm
        else:
            await self.client.delete(JOBS, held.name, propagation="Background")

    # -- runtime sessions (the ``stateful`` profile): kept pods (``runtime.py``) ------

    async def keep(self, lease: SandboxLease, key: RuntimeKey, idle_seconds: float,
                   ends_at: float) -> str:
        assert self.client is not None
        held = self._held.pop(lease.sandbox_id, None)
        if held is None:
            raise ServiceUnavailable("the sandbox to keep is no longer claimed", retry_after=1)
        self._slots.give_back()  # a kept pod holds memory, not an execution slot (local too)
        resource = PODS if held.kind == "pod" else JOBS
        try:
            obj = await self.client.get(resource, held.name)
            await self.client.json_patch(resource, held.name, keep_patch(
                obj, key, min(time.time() + idle_seconds, ends_at), ends_at, self.replica))
        except BaseException as exc:  # failed or cancelled: no record will name it
            self._tasks.spawn(self._delete(held))
            if isinstance(exc, KubeError):
                raise unavailable("keep", exc) from exc
            raise
        await held.executor.close()
        return held.location()

    async def reclaim(self, location: str, key: RuntimeKey,
                      lease_seconds: int | None = None) -> SandboxLease | None:
        assert self.client is not None
        live = await self._live(location, key.session_id, key.tenant)
        if live is None or not runtime_matches(live[3], key):
            return None
        kind, name, _, _ = live
        seconds = self._lease(lease_seconds)
        await self._slots.take()  # found kept first: no slot is taken for nothing (local too)
        try:
            await self.client.json_patch(PODS if kind == "pod" else JOBS, name,
                                         lease_patch(seconds, self.replica, paused=False))
        except BaseException as exc:
            self._slots.give_back()
            if not isinstance(exc, KubeError):
                raise
            if exc.status in (404, 422):  # deleted meanwhile (a reaper, a cap)
                return None
            raise unavailable("reclaim", exc) from exc
        return self._hold_again(live, location, key.session_id, pool_hit=True)

    async def runtime_sandboxes(self, tenant: str | None = None) -> list[KeptInfo]:
        """Kept pods, and kept Jobs (a runtime session that began on a cold start: the
        Job carries the labels, its pod the address)."""
        assert self.client is not None
        try:
            pods = await self.client.list_objects(PODS, labelSelector=kept_selector(tenant))
            jobs = (await self.client.list_objects(
                JOBS, labelSelector=kept_selector(tenant))).get("items", [])
            names = sorted(str(job["metadata"]["name"]) for job in jobs)
            job_pods: list[dict[str, Any]] = []
            for first in range(0, len(names), _NAMES_PER_SELECTOR):  # a bounded URL each
                batch = names[first:first + _NAMES_PER_SELECTOR]
                job_pods += (await self.client.list_objects(
                    PODS, labelSelector=f"job-name in ({','.join(batch)})")).get("items", [])
        except KubeError as exc:
            raise unavailable("list kept", exc) from exc
        now = time.time()
        kept = [info for pod in pods.get("items", [])
                if (info := kept_info(pod, now)) is not None]
        for job in jobs:
            name = job["metadata"]["name"]
            found = [info for pod in job_pods
                     if (pod["metadata"].get("labels") or {}).get("job-name") == name
                     and (info := kept_info(job, now, pod)) is not None]
            kept.extend(found[:1])  # its running pod (a Job of ours has one)
        return kept

    async def drop(self, location: str) -> bool:
        assert self.client is not None
        kind, name = [*location.split("/"), "", ""][:2]
        if kind not in ("pod", "job") or not name:
            return False
        try:
            if kind == "pod":
                await self.client.delete(PODS, name)
            else:
                await self.client.delete(JOBS, name, propagation="Background")
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise unavailable("drop", exc) from exc
        return True

