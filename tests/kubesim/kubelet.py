"""The scheduler and the kubelet of the emulator's single node.

Each pod is bound to the node (``spec.nodeName``, ``PodScheduled``), then its
executor starts as a real local sandbox (``LocalSandbox``, nsjail) listening on
the pod's own loopback address ``127.A.B.C:<port>`` (never 127.0.0.1; allocated
upwards from a random point so that emulators in other processes rarely meet, and
only where the port is free), with the user environment's ``HOSTNAME`` set to the
pod's name. Status follows a real kubelet: ``Pending`` (container
``ContainerCreating``), ``Running`` with
``podIP`` as soon as the process exists, ``Ready``/``ContainersReady`` True once
the executor answers ``GET /health`` with 200, and ``terminated`` with the exit
code when the process ends (``Succeeded``/``Failed`` under ``restartPolicy:
Never``; ``Always``/``OnFailure`` restart the container with a fresh sandbox). A
sandbox that cannot start fails the pod. ``spec.activeDeadlineSeconds`` kills
the pod (``DeadlineExceeded``). A terminating pod (``deletionTimestamp``) has its
sandbox destroyed, is reported terminated, then removed.

Test hooks (annotations): ``kubesim.k8si.io/ready: "false"`` keeps the pod
unready (changeable while it runs); ``kubesim.k8si.io/fail-start: "true"`` fails
it at start; ``kubesim.k8si.io/executor: "fake"`` skips the process (the pod
still gets an IP and goes Ready), as does ``KubeSim(run_executors=False)``.
``Kubelet.exit_container`` makes a running container exit with a given code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from typing import Any

from .controllers import set_condition
from .kubelet_runtime import PodRuntime, SandboxFactory
from .operations import Cluster
from .podspec import ExecutorSpec, PodSpecError, executor_spec
from .resources import PODS
from .validation import format_time, parse_time

__all__ = ["ANNOTATION_EXECUTOR", "ANNOTATION_FAIL_START", "ANNOTATION_READY", "Kubelet"]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
ANNOTATION_READY = "kubesim.k8si.io/ready"
ANNOTATION_FAIL_START = "kubesim.k8si.io/fail-start"
ANNOTATION_EXECUTOR = "kubesim.k8si.io/executor"
_TERMINAL = ("Succeeded", "Failed")


class Kubelet:
    """Runs the pods of one node; ``reconcile`` is called by the controller manager."""

    def __init__(self, cluster: Cluster, sandboxes: SandboxFactory, node_name: str) -> None:
        self.cluster = cluster
        self.sandboxes = sandboxes
        self.node_name = node_name
        self._pods: dict[str, PodRuntime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pod IPs count up from a random point of 127.16.0.0-127.245.255.255, so that
        #: emulators running side by side (other test processes) rarely meet.
        self._next_ip = secrets.randbelow(230 * 65536)

    # -- addresses ----------------------------------------------------------------

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
                continue  # taken (another emulator, or a wildcard listener on the port)
            return address
        raise OSError(f"no loopback address with a free port {port}")

    # -- status writes ------------------------------------------------------------

    def _update(self, runtime: PodRuntime, change: Any) -> Obj | None:
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is None or pod["metadata"]["uid"] != runtime.uid:
            return None
        return self.cluster.mutate(PODS, runtime.namespace, runtime.name, change)

    def _container_status(self, runtime: PodRuntime, state: Obj, ready: bool) -> list[Obj]:
        return [{"name": runtime.container, "state": state, "lastState": runtime.last_state,
                 "ready": ready, "restartCount": runtime.restarts, "image": runtime.image,
                 "imageID": "", "containerID": f"kubesim://{runtime.container_id}",
                 "started": "running" in state}]

    def report(self, runtime: PodRuntime, state: Obj, phase: str | None = None,
                reason: str | None = None, message: str | None = None) -> None:
        ready = "running" in state and runtime.healthy and not runtime.hold_unready

        def change(pod: Obj) -> None:
            status = pod.setdefault("status", {})
            status["containerStatuses"] = self._container_status(runtime, state, ready)
            if phase is not None:
                status["phase"] = phase
            if runtime.ip and phase != "Pending":
                status.update(podIP=runtime.ip, podIPs=[{"ip": runtime.ip}])
            for field, value in (("reason", reason), ("message", message)):
                if value is not None:
                    status[field] = value
            set_condition(status, "ContainersReady", ready)
            set_condition(status, "Ready", ready)
        self._update(runtime, change)

    # -- reconcile ----------------------------------------------------------------

    def reconcile(self, now: float) -> float | None:
        wakes: list[float] = []
        live: set[str] = set()
        for pod in self.cluster.store.objects(PODS):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            uid = meta["uid"]
            live.add(uid)
            if not spec.get("nodeName"):
                self._bind(pod)
                continue
            if spec["nodeName"] != self.node_name:
                continue
            runtime = self._pods.get(uid)
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp"):
                if runtime is None:
                    self.cluster.finalize_pod(meta["namespace"], meta["name"])
                elif not runtime.terminating:
                    runtime.terminating = True
                    self._spawn(self._terminate(runtime))
                continue
            if runtime is None:
                if phase not in _TERMINAL:
                    self._admit(pod)
                continue
            annotations = meta.get("annotations") or {}
            hold = annotations.get(ANNOTATION_READY) == "false"
            if hold != runtime.hold_unready:
                runtime.hold_unready = hold
                runtime.refresh()
            deadline = spec.get("activeDeadlineSeconds")
            started = (pod.get("status") or {}).get("startTime")
            if deadline is not None and started and phase not in _TERMINAL:
                due = parse_time(started) + int(deadline)
                if now >= due:
                    runtime.request_exit(137, "DeadlineExceeded",
                                         "Pod was active on the node longer than the "
                                         "specified deadline")
                else:
                    wakes.append(due)
        for uid in set(self._pods) - live:  # force-deleted: just stop it
            runtime = self._pods[uid]
            if not runtime.terminating:
                runtime.terminating = True
                self._spawn(self._terminate(runtime))
        return min(wakes) if wakes else None

    def _bind(self, pod: Obj) -> None:
        def bind(obj: Obj) -> None:
            obj["spec"]["nodeName"] = self.node_name
            set_condition(obj.setdefault("status", {}), "PodScheduled", True)
        self.cluster.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], bind)

    def _admit(self, pod: Obj) -> None:
        meta = pod["metadata"]
        annotations = meta.get("annotations") or {}
        runtime = PodRuntime(self, meta["namespace"], meta["name"], meta["uid"])
        runtime.hold_unready = annotations.get(ANNOTATION_READY) == "false"
        runtime.fake = annotations.get(ANNOTATION_EXECUTOR) == "fake" or \
            not self.sandboxes.enabled
        self._pods[meta["uid"]] = runtime
        runtime.task = self._spawn(self._run(runtime, fail=annotations.get(
            ANNOTATION_FAIL_START) == "true"))

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- a pod's life -------------------------------------------------------------

    async def _run(self, runtime: PodRuntime, fail: bool) -> None:
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is None:
            return
        restart_policy = (pod.get("spec") or {}).get("restartPolicy", "Always")

        def start(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status.update(phase="Pending", hostIP="127.0.0.1",
                          hostIPs=[{"ip": "127.0.0.1"}], startTime=format_time())
            for kind in ("PodReadyToStartContainers", "Initialized"):
                set_condition(status, kind, True)
        self._update(runtime, start)
        spec: ExecutorSpec | None = None
        fail_message = "the pod asked to fail (kubesim.k8si.io/fail-start)"
        try:
            port = executor_spec(pod).port
            runtime.ip = self._allocate_ip(port)
            spec = executor_spec({**pod, "status": {"podIP": runtime.ip}})
            runtime.container, runtime.image = spec.container, spec.image
        except (PodSpecError, OSError) as exc:
            fail_message = str(exc)
        self.report(runtime, {"waiting": {"reason": "ContainerCreating"}})
        if fail or spec is None:
            self._finish(runtime, 1, "Error", "Failed", fail_message)
            return
        while True:
            code, reason, message = await runtime.run_container(spec)
            if runtime.start_failed:
                self._finish(runtime, code, "StartError", "Failed", message)
                return
            restart = runtime.kill_reason is None and (
                restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0))
            if not restart:
                phase = "Succeeded" if code == 0 and runtime.kill_reason is None else "Failed"
                self._finish(runtime, code, reason, phase, message, runtime.kill_reason)
                return
            runtime.restarts += 1
            runtime.last_state = {"terminated": {"exitCode": code, "reason": reason,
                                                 "finishedAt": format_time()}}
            self.report(runtime, {"waiting": {"reason": "CrashLoopBackOff"}})
            await asyncio.sleep(0.5)

    def _finish(self, runtime: PodRuntime, code: int, reason: str, phase: str,
                message: str | None = None, pod_reason: str | None = None) -> None:
        state = {"terminated": {"exitCode": code, "reason": reason,
                                "startedAt": runtime.started_at or format_time(),
                                "finishedAt": format_time()}}
        if message and pod_reason is None:
            state["terminated"]["message"] = message
        self.report(runtime, state, phase=phase, reason=pod_reason,
                     message=message if pod_reason else None)

    async def _terminate(self, runtime: PodRuntime) -> None:
        """Stop a deleted pod's container, report it terminated, remove the object."""
        task = runtime.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runtime.destroy_sandbox()
        pod = self.cluster.store.get(PODS, runtime.namespace, runtime.name)
        if pod is not None and pod["metadata"]["uid"] == runtime.uid:
            if (pod.get("status") or {}).get("phase") not in _TERMINAL:
                self._finish(runtime, 137, "Error", "Failed")
            self.cluster.finalize_pod(runtime.namespace, runtime.name)
        self._pods.pop(runtime.uid, None)

    # -- hooks and shutdown -------------------------------------------------------

    def exit_container(self, namespace: str, name: str, code: int) -> bool:
        """Make the pod's running container exit with ``code`` (False if not running)."""
        pod = self.cluster.store.get(PODS, namespace, name)
        runtime = None if pod is None else self._pods.get(pod["metadata"]["uid"])
        if runtime is None or runtime.terminating:
            return False
        runtime.request_exit(code)
        return True

    async def stop(self) -> None:
        for runtime in list(self._pods.values()):
            runtime.terminating = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(r.destroy_sandbox() for r in self._pods.values()),
                             return_exceptions=True)
        self._pods.clear()
