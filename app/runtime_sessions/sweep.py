"""Orphaned checkpoints: deleted in the background, their bytes given back to the quota.

A runtime session's record lives in Valkey with a TTL (``RUNTIME_SESSION_MAX_AGE``
plus a day, renewed by use); its checkpoints live in the object store. Ending a
session deletes both, but a session left unused until its record expires (the usual
end) would leave its manifests and blobs behind for ever, counted against its
tenant's storage quota. Every ``RUNTIME_SESSION_SWEEP_INTERVAL`` seconds one replica
(the one that holds the sweep's lease, ``app/leases.py``, so a blob's bytes are given
back once) deletes the checkpoints of every runtime session that has no record and
nothing written for ``GRACE_SECONDS`` (a new session's first objects may be stored
just before its record is).
"""

from __future__ import annotations

import logging
import time

from ..leases import SweepLease
from ..periodic import run_periodically
from .checkpoint import Checkpoints
from .records import RuntimeRecords

__all__ = ["GRACE_SECONDS", "run_orphan_sweep", "sweep_orphans"]

logger = logging.getLogger(__name__)

#: A runtime session without a record is swept only once nothing of it is this recent.
GRACE_SECONDS = 3600.0


async def sweep_orphans(records: RuntimeRecords, checkpoints: Checkpoints, lease: SweepLease,
                        grace_seconds: float = GRACE_SECONDS) -> list[tuple[str, str]]:
    """Delete the orphaned checkpoints; the ``(tenant, runtime id)`` swept (none when
    another replica holds the lease)."""
    async with lease.held() as mine:
        if not mine:
            return []
        stored = await checkpoints.stored()
        live = {(record.tenant, record.id) for record in await records.all_records()}
        cutoff = time.time() - grace_seconds
        orphans = [key for key, newest in stored.items() if key not in live and newest < cutoff]
        for tenant, runtime_id in orphans:
            await checkpoints.delete_all(tenant, runtime_id)
            logger.info("orphaned runtime session checkpoints deleted",
                        extra={"tenant": tenant, "runtime_session_id": runtime_id})
        return orphans


async def run_orphan_sweep(records: RuntimeRecords, checkpoints: Checkpoints,
                           lease: SweepLease, interval_seconds: float) -> None:
    """Sweep every ``interval_seconds`` until cancelled; a failed sweep is logged and
    tried again at the next interval."""
    await run_periodically(lambda: sweep_orphans(records, checkpoints, lease),
                           interval_seconds, what="orphaned checkpoint sweep", logger=logger)
