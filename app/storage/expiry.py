"""``FILE_TTL``: a background sweep that deletes files unused for longer than the TTL.

Every replica may run it (deleting is idempotent). Use — staging into a sandbox or a
download — refreshes a file's ``last_used``, so nothing expires while it is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .store import FileMeta, FileStore, StorageUnavailable

__all__ = ["run_expiry"]

logger = logging.getLogger(__name__)


async def run_expiry(store: FileStore, ttl_seconds: int,
                     on_deleted: Callable[[FileMeta], Awaitable[None]] | None = None) -> None:
    """Sweep forever (until cancelled), a few times per TTL and at least every 10 minutes.

    ``on_deleted`` hears of every deleted file (the tenant quotas give its bytes back).
    """
    interval = max(1.0, min(ttl_seconds / 4, 600.0))
    while True:
        await asyncio.sleep(interval)
        try:
            deleted = await store.expire(ttl_seconds)
        except StorageUnavailable as exc:
            logger.warning("file expiry sweep failed", extra={"error": exc.message})
            continue
        for meta in deleted:
            if on_deleted is not None:
                await on_deleted(meta)
        if deleted:
            logger.info("expired files deleted", extra={"count": len(deleted)})
