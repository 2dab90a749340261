"""The test cluster: the real control plane, our node agent, and per-test namespaces.

``KubeCluster`` starts the control plane (``control_plane.py``), applies the
project's own ``manifests/namespaces.yaml`` and ``manifests/rbac.yaml`` as they are,
and runs the node agent in a background thread with its own event loop.
``KubeCluster.namespace()`` makes a fresh namespace for one test, labelled for Pod
Security ``restricted`` like ``k8si-sandbox``, holding a copy of the project's Role
(same rules) bound to the ``k8si-api`` ServiceAccount, and writes a kubeconfig whose
user is that ServiceAccount's token: the API under test can do exactly what the Role
allows, nothing more. ``Namespace`` has the helpers tests use to look at the real
objects (``objects``, ``get``, ``wait_for``) and the audit log of the API's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import yaml

from tests.conftest import REPO

from .control_plane import ControlPlane, build_binaries, write_kubeconfig
from .node_agent import NodeAgent
from .sandboxes import SandboxFactory

__all__ = ["API_USER", "AuditRecord", "KubeCluster", "Namespace"]

T = TypeVar("T")
Obj = dict[str, Any]
API_NAMESPACE, API_ACCOUNT = "k8si", "k8si-api"
API_USER = f"system:serviceaccount:{API_NAMESPACE}:{API_ACCOUNT}"
_GROUPS = {"pods": "api/v1", "events": "api/v1", "serviceaccounts": "api/v1",
           "deployments": "apis/apps/v1", "replicasets": "apis/apps/v1",
           "jobs": "apis/batch/v1", "roles": "apis/rbac.authorization.k8s.io/v1",
           "rolebindings": "apis/rbac.authorization.k8s.io/v1"}


@attrs.frozen
class AuditRecord:
    """One request of the API's ServiceAccount, from the apiserver's audit log."""

    verb: str
    resource: str
    subresource: str
    name: str
    code: int
    received: float  # requestReceivedTimestamp, epoch seconds


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class _AgentThread:
    """The node agent on its own event loop in a daemon thread."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="node-agent")

    def start(self) -> None:
        self.thread.start()
        self.call(self.agent.start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.agent.stop(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class KubeCluster:
    """The whole test cluster; ``start()`` then ``stop()`` (or use it as a context)."""

    def __init__(self, directory: Path, runtime_dir: Path) -> None:
        self.directory = directory
        self.control_plane = ControlPlane(directory, build_binaries())
        self.sandboxes = SandboxFactory(runtime_dir, directory / "node")
        self.node_name = "k8si-node-0"
        self._agent: _AgentThread | None = None
        self._context = ssl.create_default_context(cafile=str(self.control_plane.pki.ca_cert))
        self.admin = httpx.Client(base_url=self.control_plane.url, verify=self._context,
                                  timeout=30, headers={"Authorization": "Bearer "
                                                       + self.control_plane.pki.admin_token})
        self.api_token = ""

    @property
    def url(self) -> str:
        return self.control_plane.url

    @property
    def kubectl(self) -> Path:
        return self.control_plane.bin_dir / "kubectl"

    @property
    def agent(self) -> NodeAgent:
        assert self._agent is not None, "the cluster is not started"
        return self._agent.agent

    def start(self) -> KubeCluster:
        self.control_plane.start()
        try:
            for manifest in ("namespaces.yaml", "rbac.yaml"):
                self.run_kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / manifest))
            self._wait_default_account(API_NAMESPACE)
            self.api_token = self._request_token()
            agent = NodeAgent(self.url, self.control_plane.pki.admin_token,
                              str(self.control_plane.pki.ca_cert), self.node_name, self.sandboxes)
            self._agent = _AgentThread(agent)
            self._agent.start()
            self._wait_schedulable()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> KubeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._agent is not None:
            self._agent.stop()
            self._agent = None
        self.admin.close()
        self.control_plane.stop()

    def call_agent(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._agent is not None
        return self._agent.call(coroutine)

    # -- admin helpers ------------------------------------------------------------------

    def run_kubectl(self, *args: str, kubeconfig: Path | None = None,
                    check: bool = True, input_text: str | None = None
                    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.control_plane.admin_kubeconfig
        done = subprocess.run([str(self.kubectl), "--kubeconfig", str(config), *args],
                              capture_output=True, text=True, check=False, input=input_text,
                              timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done

    def _wait_default_account(self, namespace: str, timeout: float = 60) -> None:
        """Pods are refused until the ServiceAccount controller made ``default``."""
        deadline = time.monotonic() + timeout
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
        while self.admin.get(path).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no default ServiceAccount in {namespace}")
            time.sleep(0.1)

    def _wait_schedulable(self, timeout: float = 60) -> None:
        """Admission taints a new Node ``not-ready``; the node-lifecycle controller lifts
        the taint once the agent's Lease and Ready condition are seen."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.admin.get(f"/api/v1/nodes/{self.node_name}").json()
            if not [t for t in node.get("spec", {}).get("taints", [])
                    if t.get("effect") in ("NoSchedule", "NoExecute")]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.node_name} still tainted: {node['spec']}")
            time.sleep(0.1)

    def _request_token(self) -> str:
        response = self.admin.post(
            f"/api/v1/namespaces/{API_NAMESPACE}/serviceaccounts/{API_ACCOUNT}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": 86400}})
        response.raise_for_status()
        token: str = response.json()["status"]["token"]
        return token

    def namespace(self, directory: Path, name: str | None = None) -> Namespace:
        """A fresh namespace with the project's Role bound to the API's ServiceAccount."""
        name = name or f"k8si-t-{secrets.token_hex(4)}"
        labels = {"pod-security.kubernetes.io/enforce": "restricted",
                  "pod-security.kubernetes.io/enforce-version": "latest",
                  "k8si.io/role": "execution"}
        self.admin.post("/api/v1/namespaces", json={
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}).raise_for_status()
        for document in yaml.safe_load_all((REPO / "manifests/rbac.yaml").read_text()):
            if document["kind"] in ("Role", "RoleBinding"):
                document["metadata"]["namespace"] = name
                plural = document["kind"].lower() + "s"
                self.admin.post(f"/{_GROUPS[plural]}/namespaces/{name}/{plural}",
                                json=document).raise_for_status()
        self._wait_default_account(name)
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = write_kubeconfig(directory / "kubeconfig", self.url,
                                      self.control_plane.pki.ca_cert, self.api_token, name,
                                      API_ACCOUNT)
        return Namespace(self, name, kubeconfig)


class Namespace:
    """One test's namespace: the API's kubeconfig and the helpers to look at objects."""

    def __init__(self, cluster: KubeCluster, name: str, kubeconfig_path: Path) -> None:
        self.cluster = cluster
        self.namespace = name
        self.kubeconfig_path = kubeconfig_path

    def path(self, resource: str, name: str = "") -> str:
        base = f"/{_GROUPS[resource]}/namespaces/{self.namespace}/{resource}"
        return f"{base}/{name}" if name else base

    def objects(self, resource: str, label_selector: str = "",
                field_selector: str = "") -> list[Obj]:
        params = {k: v for k, v in (("labelSelector", label_selector),
                                    ("fieldSelector", field_selector)) if v}
        response = self.cluster.admin.get(self.path(resource), params=params)
        response.raise_for_status()
        items: list[Obj] = response.json()["items"]
        return items

    def get(self, resource: str, name: str) -> Obj | None:
        response = self.cluster.admin.get(self.path(resource, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        found: Obj = response.json()
        return found

    def create(self, resource: str, body: Obj, *, as_api: bool = False) -> httpx.Response:
        """Create an object as the admin, or as the API's ServiceAccount."""
        headers = {"Authorization": f"Bearer {self.cluster.api_token}"} if as_api else None
        return self.cluster.admin.post(self.path(resource), json=body, headers=headers)

    def delete(self, resource: str, name: str) -> None:
        self.cluster.admin.request("DELETE", self.path(resource, name), json={
            "propagationPolicy": "Background"})

    def wait_for(self, check: Callable[[], Any], timeout: float = 30,
                 message: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {message}")
            time.sleep(0.1)

    def exit_pod(self, name: str, code: int) -> bool:
        """Make the pod's container exit with ``code`` (the node agent's test hook)."""
        async def exit_it() -> bool:
            return self.cluster.agent.exit_container(self.namespace, name, code)
        return self.cluster.call_agent(exit_it())

    def audit(self, since: float = 0.0, until: float = float("inf")) -> list[AuditRecord]:
        """The API's requests in this namespace, received within [since, until]."""
        records = []
        with contextlib.suppress(FileNotFoundError), \
                self.cluster.control_plane.audit_log.open() as log:
            for line in log:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if (event.get("stage") != "ResponseComplete"
                        or event.get("user", {}).get("username") != API_USER
                        or ref.get("namespace") != self.namespace):
                    continue
                received = _epoch(event["requestReceivedTimestamp"])
                if since <= received <= until:
                    records.append(AuditRecord(
                        verb=event["verb"], resource=ref.get("resource", ""),
                        subresource=ref.get("subresource", ""), name=ref.get("name", ""),
                        code=int(event.get("responseStatus", {}).get("code", 0)),
                        received=received))
        return records

    def close(self) -> None:
        self.cluster.admin.delete(f"/api/v1/namespaces/{self.namespace}")
