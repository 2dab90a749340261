"""``FILE_TTL``: a background sweep that deletes files unused for longer than the TTL.

Every replica may run it (deleting is idempotent). Use — staging into a sandbox or a
download — refreshes a file's ``last_used``, so nothing expires while it is used.
"""

from __future__ import annotations

import asyncio
import logging

from .store import FileStore, StorageUnavailable

__all__ = ["run_expiry"]

logger = logging.getLogger(__name__)


async def run_expiry(store: FileStore, ttl_seconds: int) -> None:
    """Sweep forever (until cancelled), a few times per TTL and at least every 10 minutes."""
    interval = max(1.0, min(ttl_seconds / 4, 600.0))
    while True:
        await asyncio.sleep(interval)
        try:
            deleted = await store.expire(ttl_seconds)
        except StorageUnavailable as exc:
            logger.warning("file expiry sweep failed", extra={"error": exc.message})
            continue
        if deleted:
            logger.info("expired files deleted", extra={"count": deleted})
