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

import logging
import time
from collections.abc import Callable

import attrs

from ..base import KeptInfo, RuntimeKey, SandboxLease
from .sandbox import LocalSandbox
from .timed import Held, TimedSandboxes

__all__ = ["KeptSandboxes"]

logger = logging.getLogger(__name__)


@attrs.frozen
class _Kept(Held):
    key: RuntimeKey
    kept_since: float
    idle_until: float
    ends_at: float


class KeptSandboxes(TimedSandboxes[_Kept]):
    """Kept sandboxes by id."""

    def __init__(self, on_expire: Callable[[LocalSandbox], None]) -> None:
        super().__init__(on_expire)
        self._since: dict[str, float] = {}  # sandbox id -> first kept (survives reclaims)

    def keep(self, sandbox: LocalSandbox, lease: SandboxLease, key: RuntimeKey,
             idle_seconds: float, ends_at: float) -> None:
        now = time.time()
        idle_until = min(now + idle_seconds, ends_at)
        since = self._since.setdefault(sandbox.id, now)
        self._entries[sandbox.id] = _Kept(
            sandbox=sandbox, lease=lease, timer=self._timer(sandbox.id, idle_until - now),
            key=key, kept_since=since, idle_until=idle_until, ends_at=ends_at)

    def _expired(self, sandbox_id: str, entry: _Kept) -> None:
        self._since.pop(sandbox_id, None)
        reason = "max_age" if time.time() >= entry.ends_at else "idle"
        logger.info("kept sandbox released: its lease ended", extra={
            "sandbox_id": sandbox_id, "tenant": entry.key.tenant, "reason": reason,
            "runtime_session_id": entry.key.runtime_session_id})

    def take(self, sandbox_id: str, key: RuntimeKey) -> tuple[LocalSandbox, SandboxLease] | None:
        """The kept sandbox and its lease, no longer kept; None unless it is this key's
        (tenant, runtime session and session all match) and its lease has not ended."""
        kept = self._entries.get(sandbox_id)
        if kept is None or kept.key != key:
            return None
        self._pop(sandbox_id)
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
        self._since.pop(sandbox_id, None)
        kept = self._pop(sandbox_id)
        return kept.sandbox if kept is not None else None

    def infos(self, tenant: str | None = None) -> list[KeptInfo]:
        return [KeptInfo(location=sandbox_id, key=kept.key, language=kept.lease.language,
                         kept_since=kept.kept_since, idle_until=kept.idle_until,
                         ends_at=kept.ends_at)
                for sandbox_id, kept in self._entries.items()
                if tenant is None or kept.key.tenant == tenant]

    def clear(self) -> list[LocalSandbox]:
        """Forget every kept sandbox (shutdown); they are returned for destruction."""
        self._since.clear()
        return super().clear()
