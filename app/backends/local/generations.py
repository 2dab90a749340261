"""Zygote generations: which zygote a tenant's sandboxes are forked from.

Every sandbox forked from one zygote inherits its address-space layout (where libc,
the heap and the stack are) and its ``str`` hash secret. To bound what sandboxes
share, a zygote (a *generation*) serves one tenant only, and is replaced by a fresh
one after ``ZYGOTE_GENERATION_SANDBOXES`` forks or ``ZYGOTE_GENERATION_SECONDS`` of
service. At most ``ZYGOTE_MAX_GENERATIONS`` tenants have a generation in service at
once: binding one more retires the least recently used. One spare zygote, bound to
no tenant yet, is kept started (imports and calibration done), so that a new tenant
or a replacement takes it at once while the next spare starts in the background.
Warm sandboxes forked before any tenant asked belong to the spare's generation: the
first tenant to claim one binds that generation.

A retired generation forks nothing more and its zygote exits once its last sandbox
is gone (sandboxes die with their zygote, so it cannot go earlier without harming
work in flight). Pure bookkeeping over a start function: the backend supplies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from .zygote import ZygoteError, ZygoteFactory

__all__ = ["Generation", "ZygoteGenerations"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class Generation:
    """One zygote and the sandboxes forked from it."""

    factory: ZygoteFactory
    number: int
    #: The tenant it serves (None: the spare, bound to nobody yet).
    tenant: str | None = None
    #: When it forked its first sandbox (its age counts from there).
    first_fork: float | None = None
    last_used: float = 0.0
    forks: int = 0
    #: Sandboxes forked from it and not destroyed yet.
    live: int = 0
    #: Forks nothing more; its zygote exits when ``live`` reaches 0.
    retired: bool = False


class ZygoteGenerations:
    """The zygotes in service, per tenant, and the spare."""

    def __init__(self, start: Callable[[], Awaitable[ZygoteFactory]], *, max_sandboxes: int,
                 max_age: float, max_tenants: int,
                 on_retired: Callable[[Generation], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self.max_sandboxes = max_sandboxes
        self.max_age = max_age
        self.max_tenants = max_tenants
        self._on_retired = on_retired
        self._clock = clock
        self._numbers = itertools.count(1)
        self._current: dict[str, Generation] = {}  # tenant -> the generation forking for it
        self._draining: list[Generation] = []  # retired, sandboxes still alive
        self._spare: asyncio.Task[Generation] | None = None
        self._stopping = False
        self._stopping_zygotes: set[asyncio.Future[None]] = set()
        self._binding = asyncio.Lock()
        self.stats = {"generations_started": 0, "generations_retired": 0,
                      "generations_failed": 0}

    async def start(self) -> Generation:
        """Start the first spare and wait for it (raises ZygoteError if it cannot start)."""
        self._spare = asyncio.create_task(self._new())
        return await asyncio.shield(self._spare)

    async def _new(self) -> Generation:
        try:
            factory = await self._start()
        except (ZygoteError, OSError):
            self.stats["generations_failed"] += 1
            raise
        self.stats["generations_started"] += 1
        generation = Generation(factory=factory, number=next(self._numbers))
        logger.info("zygote started", extra={"generation": generation.number})
        return generation

    def _next_spare(self) -> asyncio.Task[Generation]:
        """The spare task, a new one if there is none or the last one failed."""
        task = self._spare
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            if self._stopping:
                raise ZygoteError("the zygotes are stopping")
            task = self._spare = asyncio.create_task(self._new())
        return task

    async def _take_spare(self) -> Generation:
        """The spare, for binding (at once, by the caller); the next starts meanwhile."""
        while True:
            task = self._next_spare()
            spare = await asyncio.shield(task)
            if self._spare is task and spare.tenant is None and not spare.retired:
                self._spare = None
                if not self._stopping:
                    self._next_spare()
                return spare
            # another request took it while this one waited: wait for the next spare

    async def _unbound(self) -> Generation:
        """The spare, left unbound (a warm sandbox for whoever claims it first)."""
        while True:
            task = self._next_spare()
            spare = await asyncio.shield(task)
            if self._spare is not task or spare.tenant is not None:
                continue
            if not self._expired(spare):
                return spare
            self._spare = None
            self._retire(spare)

    def _expired(self, generation: Generation) -> bool:
        if not generation.factory.running or generation.forks >= self.max_sandboxes:
            return True
        first = generation.first_fork
        return first is not None and self._clock() - first >= self.max_age

    async def checkout(self, tenant: str | None) -> Generation:
        """The generation to fork one sandbox for ``tenant`` from, counted as forked.

        ``None``: a warm sandbox for whoever claims it first (from the spare)."""
        generation = await self._unbound() if tenant is None else await self._bound(tenant)
        now = self._clock()
        if generation.first_fork is None:
            generation.first_fork = now
        generation.forks += 1
        generation.live += 1
        generation.last_used = now
        return generation

    async def _bound(self, tenant: str) -> Generation:
        """The tenant's generation in service, the spare bound to it if it has none."""
        current = self._current.get(tenant)
        if current is not None and not self._expired(current):
            return current
        async with self._binding:  # one binding at a time: never two for one tenant
            current = self._current.get(tenant)
            if current is not None and not self._expired(current):
                return current
            generation = await self._take_spare()
            self._bind(generation, tenant)
            return generation

    def claim(self, generation: Generation, tenant: str) -> bool:
        """May ``tenant`` take a warm sandbox of ``generation``? Binds the spare's."""
        if generation.tenant is None:
            if generation.retired or self._spare_generation() is not generation:
                return False
            self._spare = None
            self._bind(generation, tenant)
            if not self._stopping:
                self._next_spare()
        if generation.tenant != tenant:
            return False
        generation.last_used = self._clock()
        return True

    def _spare_generation(self) -> Generation | None:
        task = self._spare
        if task is None or not task.done() or task.cancelled() or task.exception():
            return None
        return task.result()

    def _bind(self, generation: Generation, tenant: str) -> None:
        previous = self._current.pop(tenant, None)
        if previous is not None:
            self._retire(previous)
        generation.tenant = tenant
        generation.last_used = self._clock()
        self._current[tenant] = generation
        while len(self._current) > self.max_tenants:
            oldest = min(self._current.values(), key=lambda g: g.last_used)
            logger.info("zygote retired: least recently used tenant",
                        extra={"generation": oldest.number})
            self._retire(oldest)
        logger.info("zygote bound", extra={"generation": generation.number,
                                           "generations_in_service": len(self._current)})

    def _retire(self, generation: Generation) -> None:
        if generation.retired:
            return
        generation.retired = True
        self.stats["generations_retired"] += 1
        if generation.tenant is not None and self._current.get(generation.tenant) is generation:
            del self._current[generation.tenant]
        self._draining.append(generation)
        if self._on_retired is not None:
            self._on_retired(generation)
        self._stop_if_drained(generation)

    def sandbox_gone(self, generation: Generation) -> None:
        """A sandbox forked from ``generation`` was destroyed."""
        generation.live -= 1
        if generation.tenant is not None and self._expired(generation) \
                and self._current.get(generation.tenant) is generation:
            self._retire(generation)
        self._stop_if_drained(generation)

    def _stop_if_drained(self, generation: Generation) -> None:
        if generation.retired and generation.live <= 0 and generation in self._draining:
            self._draining.remove(generation)
            task = asyncio.ensure_future(generation.factory.stop())
            self._stopping_zygotes.add(task)
            task.add_done_callback(self._stopping_zygotes.discard)
            logger.info("zygote stopped: retired and drained",
                        extra={"generation": generation.number})

    def any_factory(self) -> ZygoteFactory | None:
        """A running zygote (the spare first), for what any one of them can tell."""
        spare = self._spare_generation()
        if spare is not None:
            return spare.factory
        return next((g.factory for g in self._current.values()), None)

    def health(self) -> dict[str, Any]:
        return {"generations_in_service": len(self._current),
                "generations_draining": len(self._draining),
                "generation_limit_sandboxes": self.max_sandboxes,
                "generation_limit_seconds": self.max_age, **self.stats}

    async def stop(self) -> None:
        self._stopping = True
        generations = [*self._current.values(), *self._draining]
        await asyncio.gather(*self._stopping_zygotes, return_exceptions=True)
        self._current.clear()
        self._draining.clear()
        if self._spare is not None:
            if self._spare.done():
                spare = self._spare_generation()
                if spare is not None and spare not in generations:
                    generations.append(spare)
            else:
                self._spare.cancel()
                with contextlib.suppress(asyncio.CancelledError, ZygoteError, OSError):
                    await self._spare
            self._spare = None
        await asyncio.gather(*(g.factory.stop() for g in generations))
