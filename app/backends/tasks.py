"""Background work of a backend: tasks off the request's critical path (releases,
refills, bookkeeping). Each is kept until it ends, and a failure is logged, never lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["BackgroundTasks"]


class BackgroundTasks:
    """A set of running tasks that can be cancelled or awaited together."""

    def __init__(self, logger: logging.Logger) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._logger = logger

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._logger.error("background task failed", exc_info=task.exception())

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Until every task has ended (their failures are logged by ``_done``)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
