"""The backend seam: what the API needs from any execution plane.

A backend hands out sandboxes for (language, session) and takes them back. The
local backend (namespace sandboxes on this machine) and the Kubernetes backend
(warm pods, Jobs) both implement ``SandboxBackend``; the API layer knows nothing
else about them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..errors import NoCapacity
from ..executor import ExecutorClient
from ..metrics import note_phase

__all__ = ["KeptInfo", "LanguageStatus", "PoolStatus", "RuntimeKey", "SandboxBackend",
           "SandboxLease", "lease_for_run", "take_slot"]


@attrs.frozen
class LanguageStatus:
    """Whether a language can run here, and which toolchain version it gets."""

    code: str
    available: bool
    version: str | None = None
    reason: str | None = None


@attrs.frozen
class PoolStatus:
    """Warm-pool counts of one language."""

    target: int
    warm: int
    starting: int
    claimed: int


@attrs.frozen
class SandboxLease:
    """A sandbox claimed for one execution; give it back with ``release``."""

    sandbox_id: str
    language: str
    session_id: str
    #: ``unix:/path`` or ``http://ip:port``: where its executor listens.
    executor_address: str
    executor: ExecutorClient
    #: True when it came warm from a pool, False when it was started on demand.
    pool_hit: bool


@attrs.frozen
class RuntimeKey:
    """Whose a kept sandbox is: a runtime session (the ``stateful`` profile) of a tenant,
    and the ordinary session its files and Python state live in."""

    tenant: str
    runtime_session_id: str
    session_id: str


@attrs.frozen
class KeptInfo:
    """A kept sandbox as the backend holds it (caps, the operator's listing)."""

    location: str
    key: RuntimeKey
    language: str
    #: Wall-clock seconds: when it was first kept, when its idle lease ends, and the
    #: hard end of its maximum age.
    kept_since: float
    idle_until: float
    ends_at: float


async def take_slot(slots: asyncio.Semaphore, queue_timeout: float) -> None:
    """One of a replica's ``MAX_CONCURRENT_EXECUTIONS`` slots, both backends' rule:
    ``NoCapacity`` after ``queue_timeout``; the wait is the request's ``queue`` phase."""
    queued = time.perf_counter()
    try:
        if slots.locked():  # a free slot is taken at once (no timer, no task)
            async with asyncio.timeout(queue_timeout):
                await slots.acquire()
        else:
            await slots.acquire()
    except TimeoutError as exc:
        raise NoCapacity("all execution slots are busy; try again shortly",
                         retry_after=2) from exc
    finally:
        note_phase("queue", time.perf_counter() - queued)


def lease_for_run(timeout: float, compile_timeout: int) -> int:
    """The claim a run of ``timeout`` seconds needs: its compile step, the run, and a
    minute for staging files in and out."""
    return math.ceil(timeout) + compile_timeout + 60


@runtime_checkable
class SandboxBackend(Protocol):
    """An execution plane."""

    name: str
    #: Whether ``keep``/``reclaim`` work (runtime sessions); else they raise
    #: ``RuntimeSessionsUnsupported``.
    keeps_sandboxes: bool

    async def start(self) -> None:
        """Prepare the plane (probe toolchains, fill pools); called at app start-up."""

    async def stop(self) -> None:
        """Destroy every sandbox this process owns."""

    async def languages(self) -> Mapping[str, LanguageStatus]:
        """Availability and version of every language of the table."""

    async def acquire(self, language: str, session_id: str, tenant: str = "",
                      lease_seconds: int | None = None,
                      deadline_seconds: int | None = None) -> SandboxLease:
        """A fresh sandbox, ready to execute; raises ``NoCapacity`` when none can be had.
        ``lease_seconds``: the least the claim lasts unless renewed (``lease_for_run``; the
        backend's own if longer): a crashed replica's claim is reaped after it.
        ``deadline_seconds``: the hard end of the sandbox when it may be renewed beyond the
        lease (a runtime session's maximum age, a programmatic run's lifetime)."""

    async def release(self, lease: SandboxLease) -> None:
        """Give a sandbox back: it is destroyed (off the caller's critical path)."""

    async def hold(self, lease: SandboxLease, seconds: float) -> str:
        """Keep a claimed sandbox whose program is paused (programmatic tool calling) for
        ``seconds``; destroyed then unless resumed. Returns where it lives, for ``resume``
        on any replica; this process no longer holds it."""

    async def resume(self, location: str, session_id: str, tenant: str,
                     seconds: float) -> SandboxLease | None:
        """Claim a held sandbox again for ``seconds`` (its next step); None when it is
        gone, its lease ended, or it is not this session's and tenant's."""

    def locate(self, lease: SandboxLease) -> str:
        """Where a claimed sandbox lives (as ``hold`` says it), for ``cancel_program``."""

    async def cancel_program(self, location: str, session_id: str, tenant: str) -> bool:
        """Stop the programmatic run in the sandbox at ``location`` (running or paused)
        once it is verified to be that session's and tenant's still; False otherwise."""

    async def keep(self, lease: SandboxLease, key: RuntimeKey, idle_seconds: float,
                   ends_at: float) -> str:
        """After an execution of a runtime session: keep its sandbox (already asked to
        stay with ``executor.keep()``) for ``idle_seconds`` or until the wall-clock
        ``ends_at``, whichever comes first; then it is destroyed. Returns where it
        lives, for ``reclaim`` on any replica; this process no longer holds it (nor its
        execution slot). ``RuntimeSessionsUnsupported`` on a backend that cannot."""

    async def reclaim(self, location: str, key: RuntimeKey,
                      lease_seconds: int | None = None) -> SandboxLease | None:
        """Claim a kept sandbox for the runtime session's next execution (taking an
        execution slot, like ``acquire``); None when it is gone, dead, its lease ended,
        or it is not that tenant's and runtime session's."""

    async def runtime_sandboxes(self, tenant: str | None = None) -> list[KeptInfo]:
        """The kept sandboxes (of one tenant, or all), for the caps and operators."""

    async def drop(self, location: str) -> bool:
        """Destroy the kept sandbox at ``location``; False when there is none."""

    async def health(self) -> dict[str, Any]:
        """What the plane reports about itself; ``ok`` says whether it can serve."""

    async def pools(self) -> Mapping[str, PoolStatus]:
        """Warm-pool counts per language, as the execution plane reports them."""
