"""Making and destroying local sandboxes: identities, and the zygote or nsjail.

``SandboxFactory`` owns what every local sandbox is made of: the sandbox
configuration (runtime, limits, paths), the pool of unprivileged uids, the cgroup
manager, and how a sandbox starts: forked from the tenant's zygote generation
(``generations.py``, the default where ``zygote.unavailable_reason`` finds nothing
missing) or as a fresh nsjail process (the reference, and the fallback with its
reason). The backend (``backend.py``) decides which sandbox serves whom; this
module only makes, vets and destroys them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sidecar.contract import EXECUTOR_DIR

from ...errors import NoCapacity, ServiceUnavailable
from ...executor import StateCapture
from ...metrics import SandboxObserver
from ...paths import scratch_dir
from ...settings import Settings
from .calibration import calibrate
from .cgroups import CgroupManager
from .generations import Generation, ZygoteGenerations
from .nsjail import locate_nsjail
from .runtime import ensure_runtime
from .sandbox import LocalSandbox, SandboxConfig
from .zygote import ZygoteError, ZygoteFactory, unavailable_reason

__all__ = ["SandboxFactory"]

logger = logging.getLogger(__name__)

_MAX_PARALLEL_STARTS = 2
#: Starts from the zygote cost a fork each: more may be under way at once.
_MAX_PARALLEL_ZYGOTE_STARTS = 8


class SandboxFactory:
    """Makes sandboxes for the local backend (zygote generations, else nsjail)."""

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.cgroups = CgroupManager(instance)
        #: The sandboxes' directories (and what zygote sandboxes share), in the scratch dir.
        self.scratch = scratch_dir(settings.data_dir, settings.scratch_path)
        self.root = self.scratch / "sandboxes"
        if os.geteuid() == 0:
            # Root maps each sandbox to a uid of its own, so RLIMIT_NPROC is per sandbox.
            base = 2_000_000 + (int(instance, 16) % 100_000) * 1000
            self._free_uids = collections.deque(range(base, base + 1000))
        else:
            self._free_uids = collections.deque([os.getuid()] * 100_000)
        self.config: SandboxConfig | None = None
        #: The zygotes, per tenant (None: sandboxes start with nsjail, or not decided yet).
        self.generations: ZygoteGenerations | None = None
        #: Why sandboxes start with nsjail instead of the zygote (None: not decided, or zygote).
        self.fallback_reason: str | None = None
        self._generation_of: dict[str, Generation] = {}  # sandbox id -> its zygote
        self._start_gate = asyncio.Semaphore(_MAX_PARALLEL_STARTS)
        self._zygote_gate = asyncio.Semaphore(_MAX_PARALLEL_ZYGOTE_STARTS)
        self.stats = {"sandbox_starts": 0, "sandbox_start_failures": 0}
        #: Told about every sandbox start and its duration (the app's metrics).
        self.observer: SandboxObserver | None = None

    async def prepare(self) -> SandboxConfig:
        """The runtime, a clean sandbox root and the configuration every sandbox shares."""
        settings = self.settings
        runtime = await asyncio.to_thread(ensure_runtime, settings.runtime_dir)
        await asyncio.to_thread(self._prepare_dirs)
        self.config = SandboxConfig(
            nsjail=locate_nsjail(), root_dir=self.root,
            sidecar_dir=EXECUTOR_DIR, runtime=runtime,
            memory_bytes=settings.max_memory_mb * 1024 * 1024,
            max_processes=settings.max_processes,
            workdir_bytes=settings.sandbox_workdir_mb * 1024 * 1024,
            tmp_bytes=settings.sandbox_tmp_mb * 1024 * 1024,
            max_output_bytes=settings.max_output_size,
            compile_timeout=settings.compile_timeout, preload=settings.python_preload,
            setpriv=Path(found) if (found := shutil.which("setpriv")) else None,
            socket_dir=self.scratch,
        )
        if self.config.setpriv is None:
            logger.warning("setpriv not found: sandboxes outlive a crash of this process "
                           "until the next start cleans them up")
        return self.config

    def _prepare_dirs(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)  # leftovers of a previous run
        self.root.mkdir(parents=True, mode=0o700)
        if self.cgroups.available:
            self.cgroups.prepare()

    # -- the zygotes -----------------------------------------------------------------

    async def start_zygotes(self,
                            on_retired: Callable[[Generation], None] | None = None) -> None:
        """Start the first zygote, or settle on nsjail with the reason (logged)."""
        settings = self.settings
        reason = (unavailable_reason(self.cgroups) if settings.sandbox_factory == "zygote"
                  else "SANDBOX_FACTORY=nsjail")
        if reason is not None:
            self.fallback_reason = reason
            logger.info("sandboxes start with nsjail", extra={"reason": reason})
            return
        generations = ZygoteGenerations(
            self._new_zygote, max_sandboxes=settings.zygote_generation_sandboxes,
            max_age=settings.zygote_generation_seconds,
            max_tenants=settings.zygote_max_generations, on_retired=on_retired)
        try:
            await generations.start()
        except (ZygoteError, OSError) as exc:
            self.fallback_reason = f"the zygote did not start: {exc}"
            logger.warning("the sandbox zygote did not start: sandboxes start with nsjail",
                           extra={"error": str(exc)})
            await generations.stop()
            return
        except BaseException:  # cancelled (the backend stops): leave no zygote behind
            await generations.stop()
            raise
        self.generations = generations
        logger.info("sandboxes start from the zygote", extra=generations.health())

    async def _new_zygote(self) -> ZygoteFactory:
        """One zygote, started and (if configured) calibrated: a generation's process."""
        assert self.config is not None
        runtime = self.config.runtime
        factory = ZygoteFactory(venv=runtime.venv, sidecar_dir=self.config.sidecar_dir,
                                mpl_cache=runtime.mpl_cache, preload=self.config.preload,
                                log_path=self.settings.data_dir / "zygote.log",
                                setpriv=self.config.setpriv)
        try:
            await factory.start()
            if self.settings.sandbox_prefault:
                async with self.uid() as uid:
                    sandbox = LocalSandbox(secrets.token_hex(8), "py", self.config,
                                           self.cgroups, uid, factory=factory, calibrate=True)
                    plan = await calibrate(sandbox, StateCapture.configured(self.settings.state))
                if plan is not None:
                    await factory.use_prefault(plan)
        except BaseException:
            await factory.stop()
            raise
        return factory

    # -- sandboxes -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def uid(self) -> AsyncIterator[int]:
        """An unprivileged identity for a short-lived helper sandbox (probe, calibration)."""
        if not self._free_uids:
            raise NoCapacity("no sandbox identities left", retry_after=1)
        uid = self._free_uids.popleft()
        try:
            yield uid
        finally:
            self._free_uids.append(uid)

    async def make(self, language: str, tenant: str | None, *,
                   prefault: bool = False) -> LocalSandbox:
        """A started sandbox for ``tenant`` (None: a warm one for whoever claims it).
        ``prefault``: a zygote sandbox copies the calibration's pages before it is ready
        (~1 ms less for its request, a few ms more CPU now)."""
        if self.config is None:
            raise ServiceUnavailable("the local backend has not started")
        if not self._free_uids:
            raise NoCapacity("no sandbox identities left", retry_after=1)
        generation = None
        if self.generations is not None:
            try:
                generation = await self.generations.checkout(tenant)
            except (ZygoteError, OSError) as exc:
                logger.warning("no zygote for this sandbox: it starts with nsjail",
                               extra={"error": str(exc), "language": language})
        factory = generation.factory if generation is not None else None
        sandbox = LocalSandbox(secrets.token_hex(8), language, self.config, self.cgroups,
                               self._free_uids.popleft(), factory=factory, prefault=prefault)
        if generation is not None:
            self._generation_of[sandbox.id] = generation
        self.stats["sandbox_starts"] += 1
        try:
            async with self._zygote_gate if factory is not None else self._start_gate:
                began = time.perf_counter()
                await sandbox.start()
        except BaseException:
            self.stats["sandbox_start_failures"] += 1
            self._forget(sandbox, reuse_uid=not sandbox.retired)
            if self.observer is not None:
                self.observer.sandbox_started(language, 0.0, ok=False)
            raise
        if self.observer is not None:
            self.observer.sandbox_started(language, time.perf_counter() - began, ok=True)
        return sandbox

    def usable_by(self, sandbox: LocalSandbox, tenant: str) -> bool:
        """May ``tenant`` be served by this warm sandbox (never another tenant's zygote)?"""
        generation = self._generation_of.get(sandbox.id)
        if generation is None or self.generations is None:
            return True  # an nsjail sandbox shares nothing with any other
        return self.generations.claim(generation, tenant)

    def generation_of(self, sandbox: LocalSandbox) -> Generation | None:
        return self._generation_of.get(sandbox.id)

    async def destroy(self, sandbox: LocalSandbox) -> None:
        try:
            await sandbox.destroy()
        except OSError:
            logger.exception("sandbox not fully destroyed; its uid is retired",
                             extra={"sandbox_id": sandbox.id, "uid": sandbox.uid})
            raise
        finally:  # something of a retired one may still run: its uid is never reused
            self._forget(sandbox, reuse_uid=not sandbox.retired)

    def _forget(self, sandbox: LocalSandbox, *, reuse_uid: bool = True) -> None:
        if reuse_uid:
            self._free_uids.append(sandbox.uid)
        generation = self._generation_of.pop(sandbox.id, None)
        if generation is not None and self.generations is not None:
            self.generations.sandbox_gone(generation)

    def health(self) -> dict[str, Any]:
        generations = self.generations
        factory = generations.any_factory() if generations is not None else None
        prefault = factory.prefault if factory is not None else None
        return {
            "sandbox_tool": "nsjail",
            "sandbox_factory": "zygote" if generations is not None else "nsjail",
            # Why sandboxes start with nsjail (None: the zygote, or not decided yet).
            "sandbox_factory_reason": self.fallback_reason,
            # Pages each zygote sandbox copies ahead (its calibration; 0: none).
            "prefault_pages": sum(count for side in (prefault or {}).values()
                                  for _, count in side),
            "zygotes": generations.health() if generations is not None else None,
            "cgroups": f"v{self.cgroups.version}" if self.cgroups.available else None,
            **self.stats}

    async def stop(self) -> None:
        """Stop the zygotes; the sandboxes' directory (each sandbox's own are gone by now,
        with their sandboxes; what zygote sandboxes shared with them) is removed."""
        if self.generations is not None:
            await self.generations.stop()
        await asyncio.to_thread(shutil.rmtree, self.root, True)
        await asyncio.to_thread(self.cgroups.close)
