"""The local backend's kept sandboxes (runtime sessions, the ``stateful`` profile).

A kept sandbox waits for its runtime session's next execution. It holds memory, not an
execution slot (the slot was given back when it was kept; ``reclaim`` takes one
again). Two timers on the event loop end it: the idle lease (renewed by every
``keep``) and the maximum age (fixed when the runtime session was created); either
hands it to ``on_expire`` (the backend destroys it). Nothing is lost then: the runtime
session's workspace was checkpointed after its last execution, and its next call
restores it (``runtime_status: restored``). ``clear`` at shutdown does the same for all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import attrs

from ..base import KeptInfo, RuntimeKey, SandboxLease
from .sandbox import LocalSandbox

__all__ = ["KeptSandboxes"]

logger = logging.getLogger(__name__)


@attrs.frozen
class _Kept:
    sandbox: LocalSandbox
    lease: SandboxLease
    key: RuntimeKey
    kept_since: float
    idle_until: float
    ends_at: float
    timer: asyncio.TimerHandle


class KeptSandboxes:
    """Kept sandboxes by id."""

    def __init__(self, on_expire: Callable[[LocalSandbox], None]) -> None:
        self._kept: dict[str, _Kept] = {}
        self._since: dict[str, float] = {}  # sandbox id -> first kept (survives reclaims)
        self._on_expire = on_expire

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, sandbox: LocalSandbox, lease: SandboxLease, key: RuntimeKey,
             idle_seconds: float, ends_at: float) -> None:
        now = time.time()
        idle_until = min(now + idle_seconds, ends_at)
        timer = asyncio.get_running_loop().call_later(
            max(idle_until - now, 0.0), self._expire, sandbox.id)
        since = self._since.setdefault(sandbox.id, now)
        self._kept[sandbox.id] = _Kept(sandbox, lease, key, since, idle_until, ends_at, timer)

    def _expire(self, sandbox_id: str) -> None:
        kept = self._kept.pop(sandbox_id, None)
        self._since.pop(sandbox_id, None)
        if kept is not None:
            reason = "max_age" if time.time() >= kept.ends_at else "idle"
            logger.info("kept sandbox released: its lease ended", extra={
                "sandbox_id": sandbox_id, "tenant": kept.key.tenant, "reason": reason,
                "runtime_session_id": kept.key.runtime_session_id})
            self._on_expire(kept.sandbox)

    def take(self, sandbox_id: str, key: RuntimeKey) -> tuple[LocalSandbox, SandboxLease] | None:
        """The kept sandbox and its lease, no longer kept; None unless it is this key's
        (tenant, runtime session and session all match) and its lease has not ended."""
        kept = self._kept.get(sandbox_id)
        if kept is None or kept.key != key:
            return None
        del self._kept[sandbox_id]
        kept.timer.cancel()
        if time.time() >= kept.idle_until:  # the timer is due but has not run yet
            self._since.pop(sandbox_id, None)
            self._on_expire(kept.sandbox)
            return None
        return kept.sandbox, kept.lease

    def forget(self, sandbox_id: str) -> None:
        """A reclaimed sandbox that will not be kept again (its run failed)."""
        self._since.pop(sandbox_id, None)

    def drop(self, sandbox_id: str) -> LocalSandbox | None:
        """Stop keeping one; the sandbox is returned for destruction."""
        kept = self._kept.pop(sandbox_id, None)
        self._since.pop(sandbox_id, None)
        if kept is None:
            return None
        kept.timer.cancel()
        return kept.sandbox

    def infos(self, tenant: str | None = None) -> list[KeptInfo]:
        return [KeptInfo(location=sandbox_id, key=kept.key, language=kept.lease.language,
                         kept_since=kept.kept_since, idle_until=kept.idle_until,
                         ends_at=kept.ends_at)
                for sandbox_id, kept in self._kept.items()
                if tenant is None or kept.key.tenant == tenant]

    def sandboxes(self) -> list[LocalSandbox]:
        return [kept.sandbox for kept in self._kept.values()]

    def clear(self) -> list[LocalSandbox]:
        """Forget every kept sandbox (shutdown); they are returned for destruction."""
        for kept in self._kept.values():
            kept.timer.cancel()
        sandboxes = self.sandboxes()
        self._kept.clear()
        self._since.clear()
        return sandboxes
