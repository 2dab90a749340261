"""The local backend: warm pools of namespace sandboxes on this machine.

Per language, ``POD_POOL_<LANG>`` sandboxes are kept started and ready (for Python
with the libraries already imported). ``acquire`` takes a warm one (a pool hit) or
starts one on demand (a miss); the pool refills in the background. A sandbox
serves one execution and is destroyed after it, off the request's critical path,
unless a runtime session keeps it (``keep``/``reclaim``, ``kept.py``).
At most ``MAX_CONCURRENT_EXECUTIONS`` sandboxes are claimed at once; a request
that waits longer than ``QUEUE_TIMEOUT`` for a slot gets a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs

from sidecar.contract import LANGUAGES

from ...after_response import defer
from ...errors import NoCapacity, ServiceUnavailable
from ...executor import ExecutorError
from ...executor.programmatic import cancel_run
from ...metrics import SandboxObserver
from ...settings import Settings
from ..base import KeptInfo, LanguageStatus, PoolStatus, RuntimeKey, SandboxLease, take_slot
from ..tasks import BackgroundTasks
from .factory import SandboxFactory
from .generations import Generation, ZygoteGenerations
from .kept import KeptSandboxes
from .paused import PausedSandboxes
from .probe import probe_language
from .sandbox import LocalSandbox, SandboxStartError

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)


class _Pool:
    """Warm sandboxes of one language."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.ready: list[LocalSandbox] = []
        self.starting = 0
        #: Whom refills are forked for: the last tenant served from this pool (None:
        #: nobody yet; the zygote's spare generation, bound by the first claim).
        self.tenant: str | None = None


class LocalBackend:
    """Namespace sandboxes on this machine (zygote or nsjail); the embedded default."""

    name = "local"
    #: Whether ``keep``/``reclaim`` work here (runtime sessions, the ``stateful`` profile).
    keeps_sandboxes = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        instance = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:8]
        #: Makes and destroys the sandboxes (``factory.py``).
        self.factory = SandboxFactory(settings, instance)
        self._pools = {code: _Pool(settings.pool_size(code)) for code in LANGUAGES}
        self._claimed: dict[str, LocalSandbox] = {}
        self._sessions: dict[str, str] = {}  # claimed or paused sandbox id -> its session
        self._paused = PausedSandboxes(self._expired)  # programmatic runs between steps
        self._kept = KeptSandboxes(self._kept_expired)  # runtime sessions between runs
        self._slots = asyncio.Semaphore(settings.max_concurrent_executions)
        self._cores = len(os.sched_getaffinity(0))
        self._tasks = BackgroundTasks(logger)
        self._probe: asyncio.Task[dict[str, LanguageStatus]] | None = None
        self._stopping = False
        self.stats = {"pool_hits": 0, "pool_misses": 0}
        self._zygote_started: asyncio.Task[None] | None = None

    @property
    def observer(self) -> SandboxObserver | None:
        """Told about every sandbox start and its duration (the app's metrics)."""
        return self.factory.observer

    @observer.setter
    def observer(self, observer: SandboxObserver | None) -> None:
        self.factory.observer = observer

    @property
    def generations(self) -> ZygoteGenerations | None:
        """The zygote generations (None: sandboxes start with nsjail, or not yet decided)."""
        return self.factory.generations

    def warm(self, language: str) -> tuple[LocalSandbox, ...]:
        """The warm sandboxes of a language, oldest first (read-only view)."""
        return tuple(self._pools[language].ready)

    def claimed(self) -> tuple[LocalSandbox, ...]:
        """The sandboxes serving an execution now (read-only view)."""
        return tuple(self._claimed.values())

    def paused(self) -> tuple[LocalSandbox, ...]:
        """The sandboxes of programmatic runs paused between rounds (read-only view)."""
        return tuple(self._paused.sandboxes())

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        await self.factory.prepare()
        self._probe = asyncio.create_task(self._probe_languages())
        # The first zygote starts in the background (``/health`` never waits for it).
        self._zygote_started = asyncio.create_task(
            self.factory.start_zygotes(on_retired=self._evict_warm))
        if self.settings.pool_warmup_on_startup:
            self._tasks.spawn(self._warm_up())

    async def stop(self) -> None:
        self._stopping = True
        if self._zygote_started is not None:
            self._zygote_started.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._zygote_started  # its clean-up stops a zygote still starting
        self._tasks.cancel()
        await self._tasks.wait()
        sandboxes = [*self._claimed.values(), *self._paused.clear(), *self._kept.clear()]
        for pool in self._pools.values():
            sandboxes += pool.ready
            pool.ready = []
        self._claimed.clear()
        results = await asyncio.gather(*(self.factory.destroy(s) for s in sandboxes),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.error("sandbox teardown failed", exc_info=result)
        await self.factory.stop()

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
        assert self.factory.config is not None
        async with self.factory.uid() as uid:
            return await probe_language(self.factory.config, self.factory.root, uid, code)

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
            sandbox = await self.factory.make(code, pool.tenant, prefault=self._cpu_to_spare())
        except (SandboxStartError, NoCapacity, ServiceUnavailable):
            logger.exception("warm sandbox failed to start", extra={"language": code})
            return
        finally:
            pool.starting -= 1
        if self._stopping:
            await self.factory.destroy(sandbox)
            return
        pool.ready.append(sandbox)

    def _cpu_to_spare(self) -> bool:
        """Fewer executions running than cores: a warm sandbox may spend CPU now (its
        pre-faulting) to answer faster later. With every core busy that CPU would be
        taken from the executions themselves (throughput before latency)."""
        return len(self._claimed) < self._cores

    def _take_warm(self, pool: _Pool, tenant: str) -> LocalSandbox | None:
        """A live warm sandbox this tenant may use; else, if the warm ones are all other
        tenants' (their zygotes), the oldest gives its place to one for this tenant."""
        for candidate in list(pool.ready):
            if not candidate.alive:
                logger.warning("warm sandbox died while idle",
                               extra={"language": candidate.language})
                pool.ready.remove(candidate)
                self._tasks.spawn(self.factory.destroy(candidate))
            elif self.factory.usable_by(candidate, tenant):
                pool.ready.remove(candidate)
                return candidate
        if pool.ready:
            self._tasks.spawn(self.factory.destroy(pool.ready.pop(0)))
        return None

    def _evict_warm(self, generation: Generation) -> None:
        """A zygote generation retired: its warm sandboxes leave the pools (refilled)."""
        for code, pool in self._pools.items():
            stale = [s for s in pool.ready if self.factory.generation_of(s) is generation]
            for sandbox in stale:
                pool.ready.remove(sandbox)
                self._tasks.spawn(self.factory.destroy(sandbox))
            if stale:
                self._refill(code)

    # -- the seam -----------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        """Execution slots free now (of ``MAX_CONCURRENT_EXECUTIONS``)."""
        return self._slots._value

    async def _take_slot(self) -> None:
        """One of ``MAX_CONCURRENT_EXECUTIONS`` slots (``NoCapacity`` after ``QUEUE_TIMEOUT``)."""
        await take_slot(self._slots, self.settings.queue_timeout)

    async def acquire(self, language: str, session_id: str, tenant: str = "",
                      lease_seconds: int | None = None,
                      deadline_seconds: int | None = None) -> SandboxLease:
        await self._take_slot()
        try:
            pool = self._pools[language]
            sandbox = self._take_warm(pool, tenant)
            pool.tenant = tenant
            hit = sandbox is not None
            self.stats["pool_hits" if hit else "pool_misses"] += 1
            if not (hit and pool.ready):
                # Running low: refill now. Otherwise once this execution is answered
                # (``release``), so the new sandbox's start does not compete with it.
                self._refill(language)
            if sandbox is None:
                sandbox = await self.factory.make(language, tenant)
        except SandboxStartError as exc:
            self._slots.release()
            raise ServiceUnavailable(f"could not start a {language} sandbox", retry_after=2,
                                     detail=str(exc)) from exc
        except BaseException:
            self._slots.release()
            raise
        self._claimed[sandbox.id] = sandbox
        self._sessions[sandbox.id] = session_id
        own = self.settings.tenants.limits(tenant).max_memory_mb if tenant else 0
        if 0 < own < self.settings.max_memory_mb:
            try:
                await sandbox.limit_memory(own * 1024 * 1024)  # this tenant's own maximum
            except BaseException as exc:  # EBUSY: already using more (warm imports); cancelled
                self._claimed.pop(sandbox.id, None)
                self._sessions.pop(sandbox.id, None)
                self._slots.release()
                self._tasks.spawn(self.factory.destroy(sandbox))
                if not isinstance(exc, OSError):
                    raise
                raise ServiceUnavailable(f"cannot hold this tenant's {own} MB memory limit "
                                         f"in a {language} sandbox: {exc}") from exc
        return SandboxLease(sandbox_id=sandbox.id, language=language, session_id=session_id,
                            executor_address=sandbox.address, executor=sandbox.executor,
                            pool_hit=hit)

    async def release(self, lease: SandboxLease) -> None:
        self._kept.forget(lease.sandbox_id)  # a reclaimed kept one ends with this run
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

    async def keep(self, lease: SandboxLease, key: RuntimeKey, idle_seconds: float,
                   ends_at: float) -> str:
        sandbox = self._claimed.pop(lease.sandbox_id, None)
        self._sessions.pop(lease.sandbox_id, None)
        if sandbox is None:
            raise ServiceUnavailable("the sandbox to keep is no longer claimed", retry_after=1)
        self._slots.release()  # a kept sandbox holds memory, not an execution slot
        self._kept.keep(sandbox, lease, key, idle_seconds, ends_at)
        return sandbox.id

    async def reclaim(self, location: str, key: RuntimeKey,
                      lease_seconds: int | None = None) -> SandboxLease | None:
        if not any(info.location == location for info in self._kept.infos(key.tenant)):
            return None  # not kept (here): no slot is taken for nothing
        await self._take_slot()
        taken = self._kept.take(location, key)
        if taken is None or not taken[0].alive:
            self._slots.release()
            if taken is not None:
                logger.warning("kept sandbox died while idle", extra={
                    "sandbox_id": location, "runtime_session_id": key.runtime_session_id})
                self._kept.forget(location)
                self._tasks.spawn(self.factory.destroy(taken[0]))
            return None
        sandbox, lease = taken
        self._claimed[sandbox.id] = sandbox
        self._sessions[sandbox.id] = key.session_id
        return attrs.evolve(lease, pool_hit=True)

    async def runtime_sandboxes(self, tenant: str | None = None) -> list[KeptInfo]:
        return self._kept.infos(tenant)

    async def drop(self, location: str) -> bool:
        sandbox = self._kept.drop(location)
        if sandbox is None:
            return False
        self._tasks.spawn(self.factory.destroy(sandbox))
        return True

    def _kept_expired(self, sandbox: LocalSandbox) -> None:
        self._tasks.spawn(self.factory.destroy(sandbox))  # its slot was given back at keep

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
        self._tasks.spawn(self.factory.destroy(sandbox))
        self._refill(sandbox.language)

    async def health(self) -> dict[str, Any]:
        return {"ok": self.factory.config is not None, "backend": self.name,
                **self.factory.health(), "claimed": len(self._claimed),
                "paused": len(self._paused), "kept": len(self._kept), **self.stats}

    async def pools(self) -> Mapping[str, PoolStatus]:
        return self.pool_counts()

    def pool_counts(self) -> Mapping[str, PoolStatus]:
        """The pools as this process holds them (the local backend's truth)."""
        return {code: PoolStatus(target=pool.target, warm=len(pool.ready),
                                 starting=pool.starting,
                                 claimed=sum(1 for s in [*self._claimed.values(),
                                                         *self._paused.sandboxes(),
                                                         *self._kept.sandboxes()]
                                             if s.language == code))
                for code, pool in self._pools.items()}
