"""The recent executions, for operators: a capped list in Valkey shared by all replicas.

Every execution (``/exec`` and ``/exec/stream``) is recorded once it ends, with its
status and durations, by ``LPUSH`` + ``LTRIM`` in one round trip, so the list never
holds more than ``size`` entries. Recording is best effort: Valkey failing here is
logged and never fails an execution. ``GET /admin/overview`` reads it.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import orjson
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

__all__ = ["RECENT_KEY", "ExecutionRecord", "RecentExecutions"]

logger = logging.getLogger(__name__)

RECENT_KEY = "k8si:recent"


@attrs.frozen
class ExecutionRecord:
    """One finished execution as operators see it (no code, no output)."""

    #: When it was received (Unix seconds).
    ts: float
    request_id: str
    tenant: str
    session_id: str
    language: str
    #: The program's status (``ok``/``error``/``timeout``/``oom``/``output_limit``), or
    #: ``sandbox_failed`` (the service's failure) or ``cancelled`` (the client left).
    status: str
    #: From receipt to answer, in milliseconds (queueing and file staging included).
    duration_ms: float
    #: The program's own wall time in seconds (None when it never finished).
    wall_time: float | None
    pool_hit: bool | None
    streamed: bool


class RecentExecutions:
    """Appends and reads the capped list ``k8si:recent``."""

    def __init__(self, client: valkey.Valkey, size: int = 500) -> None:
        self._client = client
        self.size = size

    async def record(self, entry: ExecutionRecord) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.lpush(RECENT_KEY, orjson.dumps(attrs.asdict(entry)))
                pipe.ltrim(RECENT_KEY, 0, self.size - 1)
                await pipe.execute()
        except (ValkeyError, OSError) as exc:
            logger.warning("could not record the execution", extra={"detail": str(exc)})

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, newest first (malformed entries are skipped)."""
        raw = await self._client.lrange(RECENT_KEY, 0, max(0, min(limit, self.size) - 1))  # type: ignore[misc]
        entries = []
        for item in raw:
            try:
                entry = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries
