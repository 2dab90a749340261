"""The node agent: a minimal kubelet of our own, for a machine with no container runtime.

It registers a Node with the real apiserver, watches the pods the real scheduler binds
to it, and runs each pod's executor container as a local sandbox (nsjail, as the
local backend makes them) listening on the pod's own loopback IP (``127.A.B.C``,
never 127.0.0.1) at the container's port, with ``HOSTNAME`` set to the pod's name.
It reports through the pods' status subresource as a kubelet does: ``Pending`` with
``ContainerCreating``, ``Running`` with ``podIP`` once the process exists, the
``Ready`` condition once the executor answers its ``/health`` (the template's
readiness probe), and ``terminated`` with the exit code when the container ends
(``Succeeded``/``Failed`` under ``restartPolicy: Never``, restarted with a fresh
sandbox under ``Always``/``OnFailure``), which is what the Job controller reads. It
honours graceful deletion (stop, report, then the final delete with the pod's UID as
precondition), force deletion, and ``activeDeadlineSeconds`` (``DeadlineExceeded``).

What it does not do, and says so: it pulls no image (the sandbox runs this
checkout's executor and toolchains, whatever ``image`` names), mounts nothing but
``emptyDir`` (sized from ``sizeLimit``), runs one container per pod (no init or
sidecar containers), and runs no probes but the executor's own readiness. A pod it
cannot run is failed at once with reason ``UnsupportedPodSpec`` and a Warning event
that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import orjson

from .node import AGENT, NodeRegistration, now
from .podspec import PodSpecError, check_runnable, executor_spec
from .sandboxes import SandboxFactory

__all__ = ["NodeAgent", "PodRefused"]

logger = logging.getLogger(__name__)
Obj = dict[str, Any]
_TERMINAL = ("Succeeded", "Failed")
_STRATEGIC = "application/strategic-merge-patch+json"


class PodRefused(Exception):
    """The node agent cannot run this pod (the message says why)."""


@attrs.define
class _Pod:
    """One pod this node runs: its container's sandbox and how it must stop."""

    namespace: str
    name: str
    uid: str
    ip: str = ""
    restarts: int = 0
    started_at: str = ""
    task: asyncio.Task[None] | None = None
    #: Set to stop the container: deletion, deadline, force deletion, agent shutdown.
    stop: asyncio.Event = attrs.Factory(asyncio.Event)
    deleting: bool = False  # graceful deletion: report, then the final delete
    gone: bool = False  # the object is gone (force deleted): nothing more to write
    deadline_exceeded: bool = False
    exit_requested: int | None = None  # test hook: the container "exits" with this code


class NodeAgent:
    """Runs the pods bound to ``node_name``; ``await start()``, ``await stop()``."""

    def __init__(self, url: str, token: str, ca_file: str, node_name: str,
                 sandboxes: SandboxFactory) -> None:
        self.node_name = node_name
        self.sandboxes = sandboxes
        context = ssl.create_default_context(cafile=ca_file)
        headers = {"Authorization": f"Bearer {token}"}
        self._http = httpx.AsyncClient(base_url=url, verify=context, headers=headers,
                                       timeout=httpx.Timeout(30, read=None))
        self.node = NodeRegistration(self._http, node_name)
        self._pods: dict[str, _Pod] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_ip = secrets.randbelow(230 * 65536)
        self.started_pods = 0

    # -- the node ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.node.register()
        self._spawn(self._watch_pods())
        self._spawn(self.node.heartbeat())

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- list, then watch -------------------------------------------------------------

    async def _watch_pods(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        version = ""
        while True:
            try:
                if not version:
                    listed = await self._get_json("/api/v1/pods", selector)
                    seen = {p["metadata"]["uid"] for p in listed.get("items", [])}
                    for uid in set(self._pods) - seen:
                        self._forget(uid)
                    for pod in listed.get("items", []):
                        self._observe(pod)
                    version = listed["metadata"]["resourceVersion"]
                async for event in self._events(selector, version):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":  # 410 Gone: relist
                        version = ""
                        break
                    version = obj["metadata"].get("resourceVersion", version)
                    if kind == "DELETED":
                        self._forget(obj["metadata"]["uid"])
                    elif kind in ("ADDED", "MODIFIED"):
                        self._observe(obj)
            except (httpx.HTTPError, KeyError, orjson.JSONDecodeError) as exc:
                logger.warning("pod watch failed; relisting", extra={"error": repr(exc)})
                version = ""
                await asyncio.sleep(0.5)

    async def _get_json(self, path: str, params: dict[str, str]) -> Obj:
        response = await self._http.get(path, params=params)
        response.raise_for_status()
        data: Obj = response.json()
        return data

    async def _events(self, params: dict[str, str], version: str) -> AsyncIterator[Obj]:
        query = {**params, "watch": "true", "resourceVersion": version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
        async with self._http.stream("GET", "/api/v1/pods", params=query) as response:
            if response.status_code == 410:
                yield {"type": "ERROR", "object": {"code": 410}}
                return
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.strip():
                    yield orjson.loads(line)

    def _observe(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        known = self._pods.get(uid)
        if meta.get("deletionTimestamp"):
            if known is None:
                self._spawn(self._final_delete(meta["namespace"], meta["name"], uid))
            elif not known.deleting:
                known.deleting = True
                known.stop.set()
            return
        if known is None and (pod.get("status") or {}).get("phase") not in _TERMINAL:
            record = _Pod(meta["namespace"], meta["name"], uid)
            self._pods[uid] = record
            record.task = self._spawn(self._run_pod(record, pod))

    def _forget(self, uid: str) -> None:
        record = self._pods.get(uid)
        if record is not None:
            record.gone = True
            record.stop.set()

    # -- a pod's life -----------------------------------------------------------------

    async def _run_pod(self, record: _Pod, pod: Obj) -> None:
        try:
            await self._live(record, pod)
        except PodRefused as exc:
            await self._refuse(record, pod, str(exc))
        except Exception:
            logger.exception("pod failed in the node agent",
                             extra={"pod": f"{record.namespace}/{record.name}"})
        finally:
            self._pods.pop(record.uid, None)
            if record.deleting and not record.gone:
                await self._final_delete(record.namespace, record.name, record.uid)

    async def _live(self, record: _Pod, pod: Obj) -> None:
        try:
            check_runnable(pod)
            port = executor_spec(pod).port
        except PodSpecError as exc:
            raise PodRefused(str(exc)) from exc
        record.ip = self._allocate_ip(port)
        spec = executor_spec({**pod, "status": {"podIP": record.ip}})
        container = {"name": spec.container, "image": spec.image,
                     "imageID": f"k8si-node-agent://{spec.image}"}
        record.started_at = now()
        await self._status(record, {
            "phase": "Pending", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": record.started_at,
            "conditions": self._conditions(initialized=True, ready=False),
            "containerStatuses": [{**container, "ready": False, "restartCount": 0,
                                   "state": {"waiting": {"reason": "ContainerCreating"}}}]})
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            self._spawn(self._enforce_deadline(record, float(deadline)))
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        code, backoff = 0, 0.5
        while True:
            code = await self._run_container(record, spec, container)
            if record.stop.is_set():
                break
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                record.restarts += 1
                await self._status(record, {"containerStatuses": [{
                    **container, "ready": False, "restartCount": record.restarts,
                    "lastState": {"terminated": {"exitCode": code, "finishedAt": now(),
                                                 "reason": "Error" if code else "Completed"}},
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                    "conditions": self._conditions(initialized=True, ready=False)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(record.stop.wait(), backoff)
                backoff = min(backoff * 2, 10)
                if record.stop.is_set():
                    break
                continue
            break
        if record.gone:
            return
        terminated: Obj = {"exitCode": code, "startedAt": record.started_at,
                           "finishedAt": now(), "reason": "Completed" if code == 0 else "Error"}
        final: Obj = {"phase": "Succeeded" if code == 0 else "Failed",
                      "conditions": self._conditions(initialized=True, ready=False),
                      "containerStatuses": [{**container, "ready": False, "started": False,
                                             "restartCount": record.restarts,
                                             "state": {"terminated": terminated}}]}
        if record.deadline_exceeded:
            final.update(phase="Failed", reason="DeadlineExceeded",
                         message="Pod was active on the node longer than the specified "
                                 "deadline")
        await self._status(record, final)

    async def _run_container(self, record: _Pod, spec: Any, container: Obj) -> int:
        """Run the container once; its exit code (137 when it was stopped)."""
        sandbox_id = f"{record.name[:40]}-{secrets.token_hex(3)}"
        env = {"HOSTNAME": record.name, **spec.env}
        sandbox = await self.sandboxes.new_sandbox(sandbox_id, spec, record.ip, env)
        started = now()
        running = {**container, "restartCount": record.restarts, "started": True,
                   "state": {"running": {"startedAt": started}}}
        try:
            await self._status(record, {
                "phase": "Running", "podIP": record.ip, "podIPs": [{"ip": record.ip}],
                "containerStatuses": [{**running, "ready": False}]})
            async with self.sandboxes.gate:
                starting = asyncio.ensure_future(sandbox.start())
                stopped = asyncio.ensure_future(record.stop.wait())
                await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not starting.done():
                    starting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await starting
                    return 137
                if starting.exception() is not None:
                    logger.warning("container failed to start",
                                   extra={"pod": record.name, "error": repr(starting.exception())})
                    return 128
            self.started_pods += 1
            await self._status(record, {
                "containerStatuses": [{**running, "ready": True}],
                "conditions": self._conditions(initialized=True, ready=True)})
            exited = asyncio.ensure_future(sandbox.wait())
            stopped = asyncio.ensure_future(record.stop.wait())
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if record.exit_requested is not None:  # the test hook, not a stop
                exited.cancel()
                code, record.exit_requested = record.exit_requested, None
                if not (record.deleting or record.gone or record.deadline_exceeded):
                    record.stop.clear()
                return code
            if not exited.done():
                exited.cancel()
                return 137
            returncode = exited.result()
            if returncode is None:
                return 0
            return returncode if returncode >= 0 else 128 - returncode
        finally:
            try:
                await asyncio.shield(sandbox.destroy())
            finally:
                self.sandboxes.release_uid(sandbox.uid)

    async def _enforce_deadline(self, record: _Pod, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.stop.wait(), seconds)
            return
        record.deadline_exceeded = True
        record.stop.set()

    def _conditions(self, *, initialized: bool, ready: bool) -> list[Obj]:
        stamp = now()
        states = {"PodReadyToStartContainers": initialized, "Initialized": initialized,
                  "ContainersReady": ready, "Ready": ready}
        return [{"type": kind, "status": "True" if value else "False",
                 "lastTransitionTime": stamp, "lastProbeTime": None}
                for kind, value in states.items()]

    async def _status(self, record: _Pod, status: Obj) -> None:
        if record.gone:
            return
        path = f"/api/v1/namespaces/{record.namespace}/pods/{record.name}/status"
        body = {"metadata": {"uid": record.uid}, "status": status}
        response = await self._http.patch(path, content=orjson.dumps(body),
                                          headers={"Content-Type": _STRATEGIC})
        if response.status_code == 404:
            record.gone = True
            record.stop.set()
            return
        if response.status_code >= 400:
            logger.warning("pod status refused", extra={
                "pod": record.name, "status": response.status_code, "body": response.text[:500]})

    async def _refuse(self, record: _Pod, pod: Obj, why: str) -> None:
        logger.warning("pod refused", extra={"pod": record.name, "reason": why})
        await self._status(record, {"phase": "Failed", "reason": "UnsupportedPodSpec",
                                    "message": why})
        stamp = now()
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": f"{record.name}.", "namespace": record.namespace},
                 "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": record.name,
                                    "namespace": record.namespace, "uid": record.uid},
                 "reason": "UnsupportedPodSpec", "message": why, "type": "Warning",
                 "source": {"component": AGENT, "host": self.node_name},
                 "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
                 "reportingComponent": AGENT, "reportingInstance": self.node_name}
        response = await self._http.post(f"/api/v1/namespaces/{record.namespace}/events",
                                         json=event)
        if response.status_code >= 400:
            logger.warning("event refused", extra={"status": response.status_code})

    async def _final_delete(self, namespace: str, name: str, uid: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}
        response = await self._http.request(
            "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", json=body)
        if response.status_code not in (200, 202, 404, 409):
            logger.warning("final delete refused", extra={"pod": name,
                                                          "status": response.status_code})

    # -- addresses --------------------------------------------------------------------

    def _allocate_ip(self, port: int) -> str:
        """A fresh loopback address whose ``port`` is free (never 127.0.0.1)."""
        for _ in range(64):
            self._next_ip = (self._next_ip + 1) % (230 * 65536)
            if self._next_ip % 256 in (0, 255):
                continue
            address = str(ipaddress.IPv4Address((127 << 24) + (16 << 16) + self._next_ip))
            try:
                socket.create_server((address, port)).close()
            except OSError:
                continue
            return address
        raise PodRefused(f"no loopback address with a free port {port}")

    # -- test hooks and shutdown ------------------------------------------------------

    def running(self) -> list[tuple[str, str]]:
        """(namespace, name) of the pods whose containers this agent runs now."""
        return [(p.namespace, p.name) for p in self._pods.values()]

    def exit_container(self, namespace: str, name: str, code: int) -> bool:
        """Make a running container exit with ``code`` (as if its process ended)."""
        for record in self._pods.values():
            if (record.namespace, record.name) == (namespace, name):
                record.exit_requested = code
                record.stop.set()
                return True
        return False

    async def stop(self) -> None:
        for record in self._pods.values():
            record.gone = True
            record.stop.set()
        pods = [r.task for r in self._pods.values() if r.task is not None]
        await asyncio.gather(*pods, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
        await self.sandboxes.close()
