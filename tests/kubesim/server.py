"""``KubeSim``: the emulator assembled and served over real HTTP on 127.0.0.1.

Two ways to run it:

- in a background thread with its own event loop (tests): ``with KubeSim(...) as
  sim:`` or ``sim.start()`` / ``sim.stop()``; the thread-side helpers (``objects``,
  ``get``, ``wait_for``, ``requests``, ``exit_pod``, ``compact``...) run their work on
  the emulator's loop, so they are safe to call from the test thread;
- in the current event loop (``python -m tests.kubesim``): ``await sim.serve()``.

State lives in memory only; the work dir holds the sandboxes' directories and is
removed on stop when the emulator created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from .api import KubeApi, RequestRecord
from .controllers import ControllerManager, DeploymentController, ReplicaSetController
from .jobs import JobController
from .kubelet import Kubelet
from .kubelet_runtime import SandboxFactory
from .operations import Cluster
from .resources import RESOURCES, ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import Store
from .watch import Watcher, WatchOptions

__all__ = ["KubeSim", "default_runtime_dir"]

T = TypeVar("T")
Obj = dict[str, Any]
_REPO = Path(__file__).resolve().parents[2]


def default_runtime_dir() -> Path:
    """Where the tests keep the sandbox Python runtime (as ``tests/conftest.py`` does)."""
    return Path(os.environ.get("K8SI_TEST_RUNTIME_DIR",
                               _REPO / ".k8si-test" / "runtime")).absolute()


def _resource(name: str | ResourceType) -> ResourceType:
    if isinstance(name, ResourceType):
        return name
    for resource in RESOURCES:
        if name in (resource.plural, resource.singular, resource.kind, *resource.short_names):
            return resource
    raise KeyError(f"kubesim serves no resource {name!r}")


class KubeSim:
    """An emulated Kubernetes API with its controllers and a kubelet."""

    def __init__(self, *, namespace: str = "k8si", port: int = 0,
                 kubeconfig_path: Path | None = None, runtime_dir: Path | None = None,
                 work_dir: Path | None = None, run_executors: bool = True,
                 node_name: str = "kubesim-node", history_limit: int = 10_000,
                 bookmark_interval: float = 1.0) -> None:
        self.namespace = namespace
        self.port = port
        self._own_work_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="kubesim-")) if work_dir is None \
            else work_dir
        self.kubeconfig_path = kubeconfig_path or self.work_dir / "kubeconfig"
        self.store = Store({"default", "kube-system", namespace}, history_limit)
        self.cluster = Cluster(self.store)
        self.watch_options = WatchOptions(bookmark_interval=bookmark_interval)
        self.app = KubeApi(self.cluster, self.watch_options)
        self.sandboxes = SandboxFactory(runtime_dir or default_runtime_dir(), self.work_dir,
                                        enabled=run_executors)
        self.kubelet = Kubelet(self.cluster, self.sandboxes, node_name)
        self.manager = ControllerManager(self.cluster, [
            DeploymentController(self.cluster), ReplicaSetController(self.cluster),
            JobController(self.cluster), self.kubelet])
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: Set once the server listens (and the kubeconfig is written).
        self.ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- serving (any event loop) -------------------------------------------------

    def write_kubeconfig(self) -> Path:
        """A kubeconfig (JSON is YAML) whose context points at this emulator's namespace."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url}}],
            "users": [{"name": "kubesim", "user": {"token": "kubesim-token"}}],
            "contexts": [{"name": "kubesim", "context": {
                "cluster": "kubesim", "user": "kubesim", "namespace": self.namespace}}],
            "current-context": "kubesim"}
        self.kubeconfig_path.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig_path.write_text(json.dumps(config, indent=2) + "\n")
        return self.kubeconfig_path

    async def serve(self) -> None:
        """Serve until ``shutdown()``; then stop the controllers and every sandbox."""
        self._loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", self.port))
        self.port = int(listener.getsockname()[1])
        self.app.server_address = f"127.0.0.1:{self.port}"
        self.write_kubeconfig()
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, timeout_keep_alive=60)
        self._server = uvicorn.Server(config)
        manager = asyncio.create_task(self.manager.run())
        try:
            serving = asyncio.create_task(self._server.serve(sockets=[listener]))
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            self.ready.set()
            await serving
        finally:
            manager.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await manager
            await self.kubelet.stop()
            await self.sandboxes.close()
            listener.close()

    def shutdown(self) -> None:
        """Ask ``serve()`` to return (call on the emulator's loop)."""
        self.store.close_sinks()
        if self._server is not None:
            self._server.should_exit = True

    # -- serving in a thread (tests) ----------------------------------------------

    def start(self, timeout: float = 30) -> KubeSim:
        loop = asyncio.new_event_loop()
        self._loop = loop

        def main() -> None:
            try:
                loop.run_until_complete(self.serve())
            except BaseException as exc:
                self._failure = exc
                self.ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="kubesim", daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout) or self._failure is not None:
            raise RuntimeError(f"kubesim did not start: {self._failure!r}")
        return self

    def stop(self, timeout: float = 60) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(self.shutdown)
            thread.join(timeout)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KubeSim:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for the test thread ----------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the emulator's loop and wait for its result."""
        assert self._loop is not None, "kubesim is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def call(self, function: Callable[[], T], timeout: float = 60) -> T:
        """Run a plain function on the emulator's loop (no write races with it)."""
        async def wrapper() -> T:
            return function()
        return self.run(wrapper(), timeout)

    def objects(self, resource: str | ResourceType = "pods", *, namespace: str | None = "",
                label_selector: str | None = None,
                field_selector: str | None = None) -> list[Obj]:
        """Copies of the stored objects (``namespace=None``: all namespaces)."""
        kind = _resource(resource)
        where = self.namespace if namespace == "" else namespace
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, kind)
        return self.call(lambda: self.cluster.select(kind, where, labels, fields))

    def get(self, resource: str | ResourceType, name: str,
            namespace: str | None = None) -> Obj | None:
        kind = _resource(resource)
        return self.call(lambda: self.cluster.find(kind, namespace or self.namespace, name))

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 20.0,
                 interval: float = 0.02, message: str = "condition") -> T:
        """Poll ``predicate`` until it returns something truthy (its value)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"kubesim: {message} not met after {timeout}s")
            time.sleep(interval)

    @property
    def requests(self) -> list[RequestRecord]:
        """The request log so far (a copy)."""
        return self.call(lambda: list(self.app.requests))

    def clear_requests(self) -> None:
        self.call(self.app.requests.clear)

    def count_requests(self, *, verb: str | None = None, resource: str | None = None,
                       method: str | None = None) -> int:
        return sum(1 for r in self.requests
                   if (verb is None or r.verb == verb)
                   and (resource is None or r.resource == resource)
                   and (method is None or r.method == method))

    def inject_failures(self, status: int, count: int) -> None:
        """The next ``count`` API requests answer ``status`` (429 or 5xx) with a Status body."""
        def set_faults() -> None:
            self.app.failure_status = status
            self.app.failures_left = count
        self.call(set_faults)

    def compact(self) -> int:
        """Drop the watch history: resuming from any older version answers 410."""
        return self.call(self.store.compact)

    def close_watches(self) -> int:
        """End every open watch stream cleanly (clients must resume)."""
        return self.call(self.store.close_sinks)

    def expire_watches(self) -> int:
        """Compact, and end every open watch with an in-stream ERROR 410 event."""
        def expire() -> int:
            self.store.compact()
            sinks = [s for s in self.store.sinks() if isinstance(s, Watcher)]
            for sink in sinks:
                sink.expire()
            return len(sinks)
        return self.call(expire)

    def bookmark(self) -> None:
        """Send a BOOKMARK now to every watch that allowed bookmarks."""
        def send() -> None:
            for sink in self.store.sinks():
                if isinstance(sink, Watcher):
                    sink.bookmark(self.store.rv)
        self.call(send)

    def exit_pod(self, name: str, code: int = 0, namespace: str | None = None) -> bool:
        """Make the pod's container exit with ``code`` (as if its process ended)."""
        return self.call(lambda: self.kubelet.exit_container(namespace or self.namespace,
                                                             name, code))

    def add_namespace(self, name: str) -> None:
        self.call(lambda: self.store.namespaces.add(name))
