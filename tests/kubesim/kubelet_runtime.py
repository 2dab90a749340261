"""One pod's container on the emulated node, and the factory of its sandboxes.

``SandboxFactory`` builds what ``LocalBackend.start()`` builds (the Python runtime
via ``ensure_runtime``, nsjail via ``locate_nsjail``, a ``CgroupManager`` of its
own instance, a range of sandbox uids) lazily, on the first pod that needs a real
executor, so emulators that only run fake pods never touch them.
``PodRuntime.run_container`` starts one ``LocalSandbox`` bound to the pod's IP and
port and returns when the container exits.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

import sidecar
from app.backends.local.cgroups import CgroupManager
from app.backends.local.nsjail import locate_nsjail
from app.backends.local.runtime import ensure_runtime
from app.backends.local.sandbox import LocalSandbox, SandboxConfig
from app.paths import socket_dir

from .podspec import ExecutorSpec
from .validation import format_time

if TYPE_CHECKING:
    from .kubelet import Kubelet

__all__ = ["DEFAULT_PRELOAD", "PodRuntime", "SandboxFactory"]

Obj = dict[str, Any]
#: The executor's default warm imports for Python (``PYTHON_PRELOAD``'s default).
DEFAULT_PRELOAD = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot")
_MiB = 1024 * 1024


class SandboxFactory:
    """Everything the node's sandboxes share."""

    def __init__(self, runtime_dir: Path, work_dir: Path, *, enabled: bool = True,
                 parallel_starts: int = 4) -> None:
        self.enabled = enabled
        self.runtime_dir = runtime_dir
        self.root = work_dir / "sandboxes"
        instance = f"kubesim-{secrets.token_hex(4)}"
        self.cgroups = CgroupManager(instance)
        if os.geteuid() == 0:
            base = 3_000_000 + secrets.randbelow(100_000) * 1000
            self._uids = collections.deque(range(base, base + 1000))
        else:
            self._uids = collections.deque([os.getuid()] * 100_000)
        self.gate = asyncio.Semaphore(parallel_starts)
        self._config: SandboxConfig | None = None
        self._lock = asyncio.Lock()
        self._prepared = False

    async def config(self) -> SandboxConfig:
        async with self._lock:
            if self._config is None:
                runtime = await asyncio.to_thread(ensure_runtime, self.runtime_dir)
                await asyncio.to_thread(self._prepare)
                self._config = SandboxConfig(
                    nsjail=locate_nsjail(), root_dir=self.root,
                    sidecar_dir=Path(sidecar.__file__).parent, runtime=runtime,
                    memory_bytes=512 * _MiB, max_processes=128, workdir_bytes=64 * _MiB,
                    tmp_bytes=64 * _MiB, max_output_bytes=_MiB, compile_timeout=60,
                    preload=DEFAULT_PRELOAD, socket_dir=socket_dir(self.root),
                    setpriv=Path(found) if (found := shutil.which("setpriv")) else None)
            return self._config

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.cgroups.available:
            self.cgroups.prepare()
        self._prepared = True

    async def new_sandbox(self, sandbox_id: str, spec: ExecutorSpec, ip: str,
                          env: dict[str, str]) -> LocalSandbox:
        base = await self.config()
        changes: dict[str, Any] = {}
        for field in ("memory_bytes", "workdir_bytes", "tmp_bytes", "max_output_bytes",
                      "compile_timeout", "preload"):
            value = getattr(spec, field)
            if value is not None:
                changes[field] = value
        if not self._uids:
            raise RuntimeError("no sandbox uids left")
        return LocalSandbox(sandbox_id, spec.language, attrs.evolve(base, **changes),
                            self.cgroups, self._uids.popleft(), tcp_address=(ip, spec.port),
                            extra_env=env)

    def release_uid(self, uid: int) -> None:
        self._uids.append(uid)

    async def close(self) -> None:
        if self._prepared and self.cgroups.available:
            await asyncio.to_thread(self.cgroups.close)


class PodRuntime:
    """The container of one pod: its sandbox, restarts and exit."""

    def __init__(self, kubelet: Kubelet, namespace: str, name: str, uid: str) -> None:
        self.kubelet = kubelet
        self.namespace, self.name, self.uid = namespace, name, uid
        self.ip = ""
        self.container, self.image = "executor", ""
        self.container_id = secrets.token_hex(8)
        self.restarts = 0
        self.last_state: Obj = {}
        self.started_at: str | None = None
        self.healthy = False
        self.hold_unready = False
        self.fake = False
        self.terminating = False
        self.start_failed = False
        self.kill_reason: str | None = None
        self.kill_message: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.sandbox: LocalSandbox | None = None
        self._exit = asyncio.Event()
        self._exit_code = 0

    def request_exit(self, code: int, reason: str | None = None,
                     message: str | None = None) -> None:
        if reason is not None and self.kill_reason is None:
            self.kill_reason, self.kill_message = reason, message
        self._exit_code = code
        self._exit.set()

    def refresh(self) -> None:
        """Report the running state again (readiness changed)."""
        if self.started_at is not None and self.healthy:
            self.kubelet.report(self, {"running": {"startedAt": self.started_at}})

    async def run_container(self, spec: ExecutorSpec) -> tuple[int, str, str | None]:
        """Run the container once: (exit code, reason, message) when it ends."""
        self.start_failed, self.healthy = False, False
        self.started_at = format_time()
        running = {"running": {"startedAt": self.started_at}}
        if self.fake:
            self.kubelet.report(self, running, phase="Running")
            self.healthy = True
            self.kubelet.report(self, running)
            await self._exit.wait()
            return self._collect(None)
        env = {"HOSTNAME": self.name, **spec.env}
        sandbox_id = f"{self.name[:40]}-{secrets.token_hex(3)}"
        try:
            self.sandbox = await self.kubelet.sandboxes.new_sandbox(sandbox_id, spec,
                                                                    self.ip, env)
            self.kubelet.report(self, running, phase="Running")
            async with self.kubelet.sandboxes.gate:
                await self.sandbox.start()
        except Exception as exc:
            await self.destroy_sandbox()
            self.start_failed = True
            return 1, "StartError", f"{type(exc).__name__}: {exc}"
        self.healthy = True
        self.kubelet.report(self, running)
        process = self.sandbox._process  # LocalSandbox exposes no wait(): see the report
        assert process is not None
        exited = asyncio.ensure_future(process.wait())
        requested = asyncio.ensure_future(self._exit.wait())
        try:
            await asyncio.wait({exited, requested}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            requested.cancel()
        returncode = process.returncode
        await self.destroy_sandbox()
        return self._collect(returncode)

    def _collect(self, returncode: int | None) -> tuple[int, str, str | None]:
        self.healthy = False
        if self._exit.is_set() or returncode is None:
            code = self._exit_code
            self._exit.clear()
        else:
            code = returncode if returncode >= 0 else 128 - returncode
        return code, "Completed" if code == 0 else "Error", self.kill_message

    async def destroy_sandbox(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is None:
            return
        try:
            await asyncio.shield(sandbox.destroy())
        finally:
            self.kubelet.sandboxes.release_uid(sandbox.uid)
