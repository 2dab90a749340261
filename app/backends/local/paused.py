"""The local backend's paused sandboxes (programmatic tool calling), each under a lease.

A sandbox whose program waits for the client's tool results stays claimed (it keeps
its execution slot) and is held here until the next step resumes it or its lease
ends; then ``on_expire`` gets it (the backend frees the slot and destroys it). The
lease is a timer on the event loop: nothing is left behind by a client that never
comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import attrs

from ..base import SandboxLease
from .sandbox import LocalSandbox

__all__ = ["PausedSandboxes"]

logger = logging.getLogger(__name__)


@attrs.frozen
class _Held:
    sandbox: LocalSandbox
    lease: SandboxLease
    timer: asyncio.TimerHandle


class PausedSandboxes:
    """Held sandboxes by id."""

    def __init__(self, on_expire: Callable[[LocalSandbox], None]) -> None:
        self._held: dict[str, _Held] = {}
        self._on_expire = on_expire

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, sandbox: LocalSandbox, lease: SandboxLease, seconds: float) -> None:
        timer = asyncio.get_running_loop().call_later(seconds, self._expire, sandbox.id)
        self._held[sandbox.id] = _Held(sandbox, lease, timer)

    def _expire(self, sandbox_id: str) -> None:
        held = self._held.pop(sandbox_id, None)
        if held is not None:
            logger.info("paused sandbox reaped: its lease ended",
                        extra={"sandbox_id": sandbox_id, "session_id": held.lease.session_id})
            self._on_expire(held.sandbox)

    def take(self, sandbox_id: str, session_id: str) -> tuple[LocalSandbox, SandboxLease] | None:
        """The held sandbox and its lease, no longer held; None unless it is this session's."""
        held = self._held.get(sandbox_id)
        if held is None or held.lease.session_id != session_id:
            return None
        del self._held[sandbox_id]
        held.timer.cancel()
        return held.sandbox, held.lease

    def peek(self, sandbox_id: str, session_id: str) -> LocalSandbox | None:
        """The held sandbox, still held; None unless it is this session's."""
        held = self._held.get(sandbox_id)
        return held.sandbox if held is not None and held.lease.session_id == session_id \
            else None

    def sandboxes(self) -> list[LocalSandbox]:
        return [held.sandbox for held in self._held.values()]

    def clear(self) -> list[LocalSandbox]:
        """Forget every held sandbox (shutdown); they are returned for destruction."""
        for held in self._held.values():
            held.timer.cancel()
        sandboxes = self.sandboxes()
        self._held.clear()
        return sandboxes
