"""The node agent's Node: registration, status and the heartbeat Lease.

The Node gets a capacity large enough for the suite, addresses on loopback, a Ready
condition, and a Lease in ``kube-node-lease`` renewed every 5 s (its status every
20 s), which is what the real node-lifecycle controller reads before it lifts the
``node.kubernetes.io/not-ready`` taint that admission puts on every new Node.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

import httpx
import orjson

__all__ = ["AGENT", "NodeRegistration", "now"]

logger = logging.getLogger(__name__)
AGENT = "k8si-node-agent"
_STRATEGIC = "application/strategic-merge-patch+json"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeRegistration:
    """Registers ``node_name`` and keeps it alive through ``http`` (an admin client)."""

    def __init__(self, http: httpx.AsyncClient, node_name: str) -> None:
        self._http = http
        self.node_name = node_name

    async def register(self) -> None:
        await self._register()
        await self._renew_lease()

    async def _register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.node_name,
            "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                       "k8si.io/node-agent": "true"}}}
        response = await self._http.post("/api/v1/nodes", json=node)
        if response.status_code not in (201, 409):
            response.raise_for_status()
        await self._node_status()

    async def _node_status(self) -> None:
        stamp = now()
        resources = {"cpu": "32", "memory": "64Gi", "pods": "500",
                     "ephemeral-storage": "100Gi"}
        conditions = [{"type": kind, "status": "False", "reason": f"KubeletHasNo{kind}",
                       "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                      for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": f"{AGENT} is posting ready status",
                           "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        status = {"capacity": resources, "allocatable": resources, "conditions": conditions,
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                {"type": "Hostname", "address": self.node_name}],
                  "nodeInfo": {"kubeletVersion": f"v0.0.0-{AGENT}", "kubeProxyVersion": "",
                               "operatingSystem": "linux", "architecture": "amd64",
                               "containerRuntimeVersion": "k8si-sandbox://nsjail",
                               "osImage": "", "kernelVersion": "", "machineID": "",
                               "systemUUID": "", "bootID": ""}}
        response = await self._http.patch(f"/api/v1/nodes/{self.node_name}/status",
                                          content=orjson.dumps({"status": status}),
                                          headers={"Content-Type": _STRATEGIC})
        response.raise_for_status()

    async def _renew_lease(self) -> None:
        """The node's heartbeat Lease, which the node-lifecycle controller reads."""
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                "renewTime": stamp}
        response = await self._http.patch(f"{path}/{self.node_name}",
                                          content=orjson.dumps({"spec": spec}),
                                          headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code == 404:
            response = await self._http.post(path, json={
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node_name}, "spec": spec})
        response.raise_for_status()

    async def heartbeat(self) -> None:
        """Forever: the Lease every 5 s, the status every 20 s."""
        beats = 0
        while True:
            try:
                await self._renew_lease()
                if beats % 4 == 3:
                    await self._node_status()
            except httpx.HTTPError as exc:
                logger.warning("node heartbeat failed", extra={"error": repr(exc)})
            beats += 1
            await asyncio.sleep(5)
