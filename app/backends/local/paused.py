"""The local backend's paused sandboxes (programmatic tool calling), each under a lease.

A sandbox whose program waits for the client's tool results stays claimed (it keeps
its execution slot) and is held here until the next step resumes it or its lease
ends; then ``on_expire`` gets it (the backend frees the slot and destroys it). The
lease is a timer on the event loop: nothing is left behind by a client that never
comes back.
"""

from __future__ import annotations

import logging

from ..base import SandboxLease
from .sandbox import LocalSandbox
from .timed import Held, TimedSandboxes

__all__ = ["PausedSandboxes"]

logger = logging.getLogger(__name__)


class PausedSandboxes(TimedSandboxes[Held]):
    """Held sandboxes by id."""

    def hold(self, sandbox: LocalSandbox, lease: SandboxLease, seconds: float) -> None:
        self._entries[sandbox.id] = Held(sandbox, lease, self._timer(sandbox.id, seconds))

    def _expired(self, sandbox_id: str, entry: Held) -> None:
        logger.info("paused sandbox reaped: its lease ended",
                    extra={"sandbox_id": sandbox_id, "session_id": entry.lease.session_id})

    def take(self, sandbox_id: str, session_id: str) -> tuple[LocalSandbox, SandboxLease] | None:
        """The held sandbox and its lease, no longer held; None unless it is this session's."""
        if self.peek(sandbox_id, session_id) is None:
            return None
        held = self._pop(sandbox_id)
        assert held is not None
        return held.sandbox, held.lease

    def peek(self, sandbox_id: str, session_id: str) -> LocalSandbox | None:
        """The held sandbox, still held; None unless it is this session's."""
        held = self._entries.get(sandbox_id)
        return held.sandbox if held is not None and held.lease.session_id == session_id \
            else None
