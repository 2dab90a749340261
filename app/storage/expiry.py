"""``FILE_TTL``: a background sweep that deletes files unused for longer than the TTL.

Every replica runs it; one at a time sweeps (the one that holds the lease,
``app/leases.py``), and each file's bytes go back to its tenant's quota as it is
deleted, once even if a DELETE or another sweep got there too (the quota's ledger). Use
— staging into a sandbox or a download — refreshes a file's ``last_used``, so nothing
expires while it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..leases import SweepLease
from ..periodic import run_periodically
from .store import FileMeta, FileStore

__all__ = ["expire_once", "expiry_interval", "run_expiry"]

logger = logging.getLogger(__name__)


def expiry_interval(ttl_seconds: int) -> float:
    """A few times per TTL, and at least every 10 minutes."""
    return max(1.0, min(ttl_seconds / 4, 600.0))


async def expire_once(store: FileStore, ttl_seconds: int, lease: SweepLease,
                      on_deleted: Callable[[FileMeta], Awaitable[object]] | None = None,
                      ) -> list[FileMeta]:
    """One sweep, if this replica holds the lease (else nothing): the files deleted.
    ``on_deleted`` hears of each as it is deleted (the tenant quotas give its bytes back)."""
    async with lease.held() as mine:
        if not mine:
            return []
        return await store.expire(ttl_seconds, on_deleted)


async def run_expiry(store: FileStore, ttl_seconds: int, lease: SweepLease,
                     on_deleted: Callable[[FileMeta], Awaitable[object]] | None = None) -> None:
    """Sweep forever (until cancelled), every ``expiry_interval(ttl_seconds)``; a failed
    pass (the object store or the lease's Valkey down, or a bug) is logged."""

    async def sweep() -> None:
        deleted = await expire_once(store, ttl_seconds, lease, on_deleted)
        if deleted:
            logger.info("expired files deleted", extra={"count": len(deleted)})

    await run_periodically(sweep, expiry_interval(ttl_seconds), what="file expiry sweep",
                           logger=logger)
