"""The backend seam: what the API needs from any execution plane.

A backend hands out sandboxes for (language, session) and takes them back. The
local backend (namespace sandboxes on this machine) and the Kubernetes backend
(warm pods, Jobs) both implement ``SandboxBackend``; the API layer knows nothing
else about them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..executor import ExecutorClient

__all__ = ["LanguageStatus", "PoolStatus", "SandboxBackend", "SandboxLease"]


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


@runtime_checkable
class SandboxBackend(Protocol):
    """An execution plane."""

    name: str

    async def start(self) -> None:
        """Prepare the plane (probe toolchains, fill pools); called at app start-up."""

    async def stop(self) -> None:
        """Destroy every sandbox this process owns."""

    async def languages(self) -> Mapping[str, LanguageStatus]:
        """Availability and version of every language of the table."""

    async def acquire(self, language: str, session_id: str, tenant: str = "") -> SandboxLease:
        """A fresh sandbox, ready to execute; raises ``NoCapacity`` when none can be had."""

    async def release(self, lease: SandboxLease) -> None:
        """Give a sandbox back: it is destroyed (off the caller's critical path)."""

    async def health(self) -> dict[str, Any]:
        """What the plane reports about itself; ``ok`` says whether it can serve."""

    async def pools(self) -> Mapping[str, PoolStatus]:
        """Warm-pool counts per language, as the execution plane reports them."""
