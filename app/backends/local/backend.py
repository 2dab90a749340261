"""The local backend: warm pools of namespace sandboxes on this machine.

Per language, ``POD_POOL_<LANG>`` sandboxes are kept started and ready (for Python
with the libraries already imported). ``acquire`` takes a warm one (a pool hit) or
starts one on demand (a miss); the pool refills in the background. A sandbox
serves one execution and is destroyed after it, off the request's critical path.
At most ``MAX_CONCURRENT_EXECUTIONS`` sandboxes are claimed at once; a request
that waits longer than ``QUEUE_TIMEOUT`` for a slot gets a 503.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sidecar
from sidecar.languages import LANGUAGES

from ...after_response import defer
from ...errors import NoCapacity, ServiceUnavailable
from ...executor import ExecutorError, StateCapture
from ...executor.programmatic import cancel_run
from ...metrics import SandboxObserver, note_phase
from ...paths import socket_dir
from ...settings import Settings
from ..base import LanguageStatus, PoolStatus, SandboxLease
from ..tasks import BackgroundTasks
from .calibration import calibrate
from .cgroups import CgroupManager
from .nsjail import locate_nsjail
from .paused import PausedSandboxes
from .probe import probe_language
from .runtime import ensure_runtime
from .sandbox import LocalSandbox, SandboxConfig, SandboxStartError
from .zygote import ZygoteError, ZygoteFactory, unavailable_reason

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

_MAX_PARALLEL_STARTS = 2
#: Starts from the zygote cost a fork each: more may be under way at once.
_MAX_PARALLEL_ZYGOTE_STARTS = 8


class _Pool:
    """Warm sandboxes of one language."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.ready: list[LocalSandbox] = []
        self.starting = 0


class LocalBackend:
    """Namespace sandboxes (nsjail) on this machine; the embedded default."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        instance = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:8]
        self._cgroups = CgroupManager(instance)
        self._root = settings.data_dir / "sandboxes"
        if os.geteuid() == 0:
            # Root maps each sandbox to a uid of its own, so RLIMIT_NPROC is per sandbox.
            base = 2_000_000 + (int(instance, 16) % 100_000) * 1000
            self._free_uids = collections.deque(range(base, base + 1000))
        else:
            self._free_uids = collections.deque([os.getuid()] * 100_000)
        self._pools = {code: _Pool(settings.pool_size(code)) for code in LANGUAGES}
        self._claimed: dict[str, LocalSandbox] = {}
        self._sessions: dict[str, str] = {}  # claimed or paused sandbox id -> its session
        self._paused = PausedSandboxes(self._expired)  # programmatic runs between steps
        self._slots = asyncio.Semaphore(settings.max_concurrent_executions)
        self._start_gate = asyncio.Semaphore(_MAX_PARALLEL_STARTS)
        self._tasks = BackgroundTasks(logger)
        self._config: SandboxConfig | None = None
        self._probe: asyncio.Task[dict[str, LanguageStatus]] | None = None
        self._stopping = False
        self.stats = {"pool_hits": 0, "pool_misses": 0, "sandbox_starts": 0,
                      "sandbox_start_failures": 0}
        #: Told about every sandbox start and its duration (the app's metrics).
        self.observer: SandboxObserver | None = None
        #: The sandbox factory (``zygote.py``) where it can run; else nsjail.
        self._zygote: ZygoteFactory | None = None
        #: Why sandboxes start with nsjail instead of the zygote (None: not decided, or zygote).
        self.factory_fallback: str | None = None
        self._zygote_started: asyncio.Task[None] | None = None
        self._zygote_gate = asyncio.Semaphore(_MAX_PARALLEL_ZYGOTE_STARTS)

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        runtime = await asyncio.to_thread(ensure_runtime, settings.runtime_dir)
        await asyncio.to_thread(self._prepare_dirs)
        self._config = SandboxConfig(
            nsjail=locate_nsjail(), root_dir=self._root,
            sidecar_dir=Path(sidecar.__file__).parent, runtime=runtime,
            memory_bytes=settings.max_memory_mb * 1024 * 1024,
            max_processes=settings.max_processes,
            workdir_bytes=settings.sandbox_workdir_mb * 1024 * 1024,
            tmp_bytes=settings.sandbox_tmp_mb * 1024 * 1024,
            max_output_bytes=settings.max_output_size,
            compile_timeout=settings.compile_timeout, preload=settings.python_preload,
            setpriv=Path(found) if (found := shutil.which("setpriv")) else None,
            socket_dir=socket_dir(settings.data_dir),
        )
        if self._config.setpriv is None:
            logger.warning("setpriv not found: sandboxes outlive a crash of this process "
                           "until the next start cleans them up")
        self._probe = asyncio.create_task(self._probe_languages())
        self._zygote_started = asyncio.create_task(self._start_zygote())
        if settings.pool_warmup_on_startup:
            self._tasks.spawn(self._warm_up())

    async def _start_zygote(self) -> None:
        """Start the sandbox factory, in the background (``/health`` never waits)."""
        assert self._config is not None
        reason = (unavailable_reason(self._cgroups) if self.settings.sandbox_factory == "zygote"
                  else "SANDBOX_FACTORY=nsjail")
        if reason is not None:
            self.factory_fallback = reason
            logger.info("sandboxes start with nsjail", extra={"reason": reason})
            return
        runtime = self._config.runtime
        factory = ZygoteFactory(venv=runtime.venv, sidecar_dir=self._config.sidecar_dir,
                                mpl_cache=runtime.mpl_cache, preload=self._config.preload,
                                log_path=self._root.parent / "zygote.log",
                                setpriv=self._config.setpriv)
        try:
            await factory.start()
        except (ZygoteError, OSError) as exc:
            self.factory_fallback = f"the zygote did not start: {exc}"
            logger.warning("the sandbox zygote did not start: sandboxes start with nsjail",
                           extra={"error": str(exc)})
            return
        self._zygote = factory
        if self.settings.sandbox_prefault:
            await self._calibrate(factory)

    async def _calibrate(self, factory: ZygoteFactory) -> None:
        """Learn the pages sandboxes write while serving (``calibration.py``)."""
        assert self._config is not None
        uid = self._free_uids.popleft()
        try:
            sandbox = LocalSandbox(secrets.token_hex(8), "py", self._config, self._cgroups,
                                   uid, factory=factory, calibrate=True)
            factory.prefault = await calibrate(sandbox,
                                               StateCapture.configured(self.settings.state))
        finally:
            self._free_uids.append(uid)

    def _prepare_dirs(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)  # leftovers of a previous run
        self._root.mkdir(parents=True, mode=0o700)
        if self._cgroups.available:
            self._cgroups.prepare()

    async def stop(self) -> None:
        self._stopping = True
        if self._zygote_started is not None:
            self._zygote_started.cancel()
        self._tasks.cancel()
        await self._tasks.wait()
        sandboxes = [*self._claimed.values(), *self._paused.clear()]
        for pool in self._pools.values():
            sandboxes += pool.ready
            pool.ready = []
        self._claimed.clear()
        results = await asyncio.gather(*(s.destroy() for s in sandboxes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.error("sandbox teardown failed", exc_info=result)
        if self._zygote is not None:
            await self._zygote.stop()
            # what every zygote sandbox shared: the root's mount point, identity files
            for shared in ("mnt", "etc"):
                await asyncio.to_thread(shutil.rmtree, self._root / shared, True)
        await asyncio.to_thread(self._cgroups.close)

    # -- languages ----------------------------------------------------------------

    async def languages(self) -> Mapping[str, LanguageStatus]:
        if self._probe is None:
            raise ServiceUnavailable("the local backend has not started")
        return await asyncio.shield(self._probe)

    async def _probe_languages(self) -> dict[str, LanguageStatus]:
        gate = asyncio.Semaphore(4)

        async def probe(code: str) -> LanguageStatus:
            async with gate:
                return await self._probe_one(code)

        results = await asyncio.gather(*(probe(code) for code in LANGUAGES))
        statuses = {status.code: status for status in results}
        unavailable = [s.code for s in results if not s.available]
        logger.info("languages probed", extra={"unavailable": unavailable})
        return statuses

    async def _probe_one(self, code: str) -> LanguageStatus:
        assert self._config is not None
        uid = self._free_uids.popleft()
        try:
            return await probe_language(self._config, self._root, uid, code)
        finally:
            self._free_uids.append(uid)

    # -- pools --------------------------------------------------------------------

    async def _warm_up(self) -> None:
        statuses = await self.languages()
        if self._zygote_started is not None:  # the first sandboxes come from it
            await asyncio.shield(self._zygote_started)
        for code, pool in self._pools.items():
            if pool.target > 0 and statuses[code].available:
                self._refill(code)

    def _refill(self, code: str) -> None:
        pool = self._pools[code]
        while not self._stopping and len(pool.ready) + pool.starting < pool.target:
            pool.starting += 1
            self._tasks.spawn(self._add_warm(code))

    async def _add_warm(self, code: str) -> None:
        pool = self._pools[code]
        try:
            sandbox = await self._start_sandbox(code)
        except SandboxStartError:
            logger.exception("warm sandbox failed to start", extra={"language": code})
            return
        finally:
            pool.starting -= 1
        if self._stopping:
            await self._destroy(sandbox)
            return
        pool.ready.append(sandbox)

    async def _start_sandbox(self, code: str) -> LocalSandbox:
        if self._config is None:
            raise ServiceUnavailable("the local backend has not started")
        if not self._free_uids:
            raise NoCapacity("no sandbox identities left", retry_after=1)
        factory = self._zygote if self._zygote is not None and self._zygote.running else None
        sandbox = LocalSandbox(secrets.token_hex(8), code, self._config, self._cgroups,
                               self._free_uids.popleft(), factory=factory)
        self.stats["sandbox_starts"] += 1
        try:
            async with self._zygote_gate if factory is not None else self._start_gate:
                began = time.perf_counter()
                await sandbox.start()
        except BaseException:
            self.stats["sandbox_start_failures"] += 1
            self._free_uids.append(sandbox.uid)
            if self.observer is not None:
                self.observer.sandbox_started(code, 0.0, ok=False)
            raise
        if self.observer is not None:
            self.observer.sandbox_started(code, time.perf_counter() - began, ok=True)
        return sandbox

    async def _destroy(self, sandbox: LocalSandbox) -> None:
        try:
            await sandbox.destroy()
        finally:
            self._free_uids.append(sandbox.uid)

    # -- the seam -----------------------------------------------------------------

    async def acquire(self, language: str, session_id: str, tenant: str = "",
                      lease_seconds: int | None = None) -> SandboxLease:
        queued = time.perf_counter()
        try:
            if self._slots.locked():  # a free slot is taken at once (no timer, no task)
                async with asyncio.timeout(self.settings.queue_timeout):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
        except TimeoutError as exc:
            raise NoCapacity("all execution slots are busy; try again shortly",
                             retry_after=2) from exc
        finally:
            note_phase("queue", time.perf_counter() - queued)
        try:
            pool = self._pools[language]
            sandbox = None
            while pool.ready and sandbox is None:
                candidate = pool.ready.pop(0)
                if candidate.alive:
                    sandbox = candidate
                else:
                    logger.warning("warm sandbox died while idle", extra={"language": language})
                    self._tasks.spawn(self._destroy(candidate))
            hit = sandbox is not None
            self.stats["pool_hits" if hit else "pool_misses"] += 1
            if not (hit and pool.ready):
                # Running low: refill now. Otherwise once this execution is answered
                # (``release``), so the new sandbox's start does not compete with it.
                self._refill(language)
            if sandbox is None:
                sandbox = await self._start_sandbox(language)
        except SandboxStartError as exc:
            self._slots.release()
            raise ServiceUnavailable(f"could not start a {language} sandbox: {exc}",
                                     retry_after=2) from exc
        except BaseException:
            self._slots.release()
            raise
        self._claimed[sandbox.id] = sandbox
        self._sessions[sandbox.id] = session_id
        own = self.settings.tenants.limits(tenant).max_memory_mb if tenant else 0
        if 0 < own < self.settings.max_memory_mb:
            try:
                await sandbox.limit_memory(own * 1024 * 1024)  # this tenant's own maximum
            except OSError as exc:  # EBUSY: already using more than that (warm imports)
                self._claimed.pop(sandbox.id, None)
                self._slots.release()
                self._tasks.spawn(self._destroy(sandbox))
                raise ServiceUnavailable(f"cannot hold this tenant's {own} MB memory limit "
                                         f"in a {language} sandbox: {exc}") from exc
        return SandboxLease(sandbox_id=sandbox.id, language=language, session_id=session_id,
                            executor_address=sandbox.address, executor=sandbox.executor,
                            pool_hit=hit)

    async def release(self, lease: SandboxLease) -> None:
        sandbox = self._claimed.pop(lease.sandbox_id, None)
        self._sessions.pop(lease.sandbox_id, None)
        if sandbox is None:
            return
        self._slots.release()
        defer(lambda: self._recycle(sandbox))

    async def hold(self, lease: SandboxLease, seconds: float) -> str:
        sandbox = self._claimed.pop(lease.sandbox_id, None)
        if sandbox is None:
            raise ServiceUnavailable("the paused sandbox is no longer claimed", retry_after=1)
        self._paused.hold(sandbox, lease, seconds)
        return sandbox.id

    def _expired(self, sandbox: LocalSandbox) -> None:
        self._sessions.pop(sandbox.id, None)
        self._slots.release()
        self._recycle(sandbox)

    async def resume(self, location: str, session_id: str, tenant: str,
                     seconds: float) -> SandboxLease | None:
        taken = self._paused.take(location, session_id)
        if taken is None:
            return None
        sandbox, lease = taken
        if not sandbox.alive:
            self._expired(sandbox)
            return None
        self._claimed[sandbox.id] = sandbox
        return lease

    def locate(self, lease: SandboxLease) -> str:
        return lease.sandbox_id

    async def cancel_program(self, location: str, session_id: str, tenant: str) -> bool:
        sandbox = self._claimed.get(location) or self._paused.peek(location, session_id)
        if sandbox is None or self._sessions.get(location) != session_id:
            return False
        try:
            return await cancel_run(sandbox.executor)
        except ExecutorError as exc:
            logger.info("cancel: the executor did not answer", extra={"error": str(exc)})
            return False

    def _recycle(self, sandbox: LocalSandbox) -> None:
        """Destroy a used sandbox and start its replacement (after the answer is sent)."""
        self._tasks.spawn(self._destroy(sandbox))
        self._refill(sandbox.language)

    async def health(self) -> dict[str, Any]:
        ready = self._config is not None
        prefault = self._zygote.prefault if self._zygote is not None else None
        return {"ok": ready, "backend": self.name, "sandbox_tool": "nsjail",
                "sandbox_factory": "zygote" if self._zygote is not None else "nsjail",
                # Why sandboxes start with nsjail (None: the zygote, or not decided yet).
                "sandbox_factory_reason": self.factory_fallback,
                # Pages each zygote sandbox copies ahead (its calibration; 0: none).
                "prefault_pages": sum(count for side in (prefault or {}).values()
                                      for _, count in side),
                "cgroups": f"v{self._cgroups.version}" if self._cgroups.available else None,
                "claimed": len(self._claimed), "paused": len(self._paused), **self.stats}

    async def pools(self) -> Mapping[str, PoolStatus]:
        return self.pool_counts()

    def pool_counts(self) -> Mapping[str, PoolStatus]:
        """The pools as this process holds them (the local backend's truth)."""
        return {code: PoolStatus(target=pool.target, warm=len(pool.ready),
                                 starting=pool.starting,
                                 claimed=sum(1 for s in [*self._claimed.values(),
                                                         *self._paused.sandboxes()]
                                             if s.language == code))
                for code, pool in self._pools.items()}
