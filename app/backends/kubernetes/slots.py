"""Execution slots of one replica: at most ``MAX_CONCURRENT_EXECUTIONS`` pods in use.

The same rule as the local backend's (``app/backends/local/backend.py``): ``acquire``
waits up to ``QUEUE_TIMEOUT`` for a slot, then answers ``NoCapacity`` (a 503 with
``Retry-After``); so does ``reclaim`` (a runtime session's kept pod, claimed again). A
slot is given back when its pod is released, and when the pod is kept for a runtime
session (a kept pod holds memory, not an execution). A paused programmatic run keeps
its slot: on the replica that paused it, until that replica resumes it (the slot passes
to the next step) or the pause's lease ends. Resumed by another replica instead, the
run takes a slot there, and the pausing replica's slot ends with the pause's lease
(counted twice meanwhile, never less).

The limit is per replica: a pool miss that starts a Job, or fifty clients at once,
never put more than ``MAX_CONCURRENT_EXECUTIONS`` pods to work for one replica. The
namespace's own bound across replicas is its ResourceQuota.
"""

from __future__ import annotations

import asyncio

from ..base import take_slot

__all__ = ["ExecutionSlots"]


class ExecutionSlots:
    """A counting semaphore with a queue timeout, and the slots of paused runs."""

    def __init__(self, limit: int, queue_timeout: float) -> None:
        self.limit = limit
        self._queue_timeout = queue_timeout
        self._free = asyncio.Semaphore(limit)
        #: The slots of runs paused here, by location: each given back when its timer ends.
        self._paused: dict[str, asyncio.TimerHandle] = {}

    @property
    def free(self) -> int:
        """Slots free now."""
        return self._free._value

    @property
    def paused(self) -> int:
        """Slots held by runs paused on this replica."""
        return len(self._paused)

    async def take(self) -> None:
        """One slot (``NoCapacity`` after ``QUEUE_TIMEOUT``); the caller gives it back."""
        await take_slot(self._free, self._queue_timeout)

    def give_back(self) -> None:
        self._free.release()

    def pause(self, location: str, seconds: float) -> None:
        """A taken slot stays with the run paused at ``location`` until ``resume`` takes it
        over here, or ``seconds`` (the pause's lease) have passed."""
        self._end_pause(location)  # held once: a slot per pod
        self._paused[location] = asyncio.get_running_loop().call_later(
            max(seconds, 0.0), self._end_pause, location)

    def resume(self, location: str) -> bool:
        """True when the run at ``location`` was paused here: its slot passes to the caller
        (who gives it back in turn); False: the caller needs a slot of its own."""
        timer = self._paused.pop(location, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def _end_pause(self, location: str) -> None:
        if self.resume(location):
            self.give_back()

    def clear(self) -> None:
        """Shutdown: the pauses' timers are cancelled and their slots given back."""
        for location in list(self._paused):
            self._end_pause(location)
