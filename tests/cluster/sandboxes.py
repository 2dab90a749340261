"""The node agent's containers: local sandboxes, as the local backend makes them.

``SandboxFactory`` builds what ``LocalBackend.start()`` builds (the Python runtime
via ``ensure_runtime``, nsjail via ``locate_nsjail``, a ``CgroupManager`` of its
own instance, a range of sandbox uids) lazily, on the first pod that needs it, and
makes one ``LocalSandbox`` per container, listening on the pod's own IP and port.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import attrs

import sidecar
from app.backends.local.cgroups import CgroupManager
from app.backends.local.nsjail import locate_nsjail
from app.backends.local.runtime import ensure_runtime
from app.backends.local.sandbox import LocalSandbox, SandboxConfig
from app.paths import scratch_dir

from .podspec import ExecutorSpec

__all__ = ["DEFAULT_PRELOAD", "SandboxFactory"]

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
        instance = f"k8si-node-{secrets.token_hex(4)}"
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
                    preload=DEFAULT_PRELOAD, socket_dir=scratch_dir(self.root),
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
