"""Sandboxes held by id, each under a timer on the event loop (the base of the paused
and the kept sandboxes of the local backend).

An entry pairs a sandbox with its lease and the timer that ends it. When the timer
fires, the entry is forgotten and ``on_expire`` gets the sandbox (the backend frees
what it holds and destroys it); ``clear`` at shutdown cancels every timer and returns
the sandboxes for destruction. What an entry holds beyond that, and why it may be
taken back, is the subclass's (``paused.py``, ``kept.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from ..base import SandboxLease
from .sandbox import LocalSandbox

__all__ = ["Held", "TimedSandboxes"]


@attrs.frozen
class Held:
    """One sandbox held: its lease and the timer that ends it (subclasses add more)."""

    sandbox: LocalSandbox
    lease: SandboxLease
    timer: asyncio.TimerHandle


E = TypeVar("E", bound=Held)


class TimedSandboxes(Generic[E]):
    """Entries by sandbox id; a timer's end hands the sandbox to ``on_expire``."""

    def __init__(self, on_expire: Callable[[LocalSandbox], None]) -> None:
        self._entries: dict[str, E] = {}
        self._on_expire = on_expire

    def __len__(self) -> int:
        return len(self._entries)

    def _timer(self, sandbox_id: str, seconds: float) -> asyncio.TimerHandle:
        """The timer that ends the entry of ``sandbox_id`` in ``seconds``."""
        return asyncio.get_running_loop().call_later(max(seconds, 0.0), self._expire,
                                                     sandbox_id)

    def _expire(self, sandbox_id: str) -> None:
        entry = self._entries.pop(sandbox_id, None)
        if entry is not None:
            self._expired(sandbox_id, entry)
            self._on_expire(entry.sandbox)

    def _expired(self, sandbox_id: str, entry: E) -> None:
        """The entry's timer ended (before ``on_expire`` gets its sandbox): logged."""

    def _pop(self, sandbox_id: str) -> E | None:
        """The entry, forgotten, its timer cancelled."""
        entry = self._entries.pop(sandbox_id, None)
        if entry is not None:
            entry.timer.cancel()
        return entry

    def sandboxes(self) -> list[LocalSandbox]:
        return [entry.sandbox for entry in self._entries.values()]

    def clear(self) -> list[LocalSandbox]:
        """Forget every entry (shutdown); the sandboxes are returned for destruction."""
        for entry in self._entries.values():
            entry.timer.cancel()
        sandboxes = self.sandboxes()
        self._entries.clear()
        return sandboxes
