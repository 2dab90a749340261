"""``STATE_ARCHIVE_TTL``: archived Python state unused for the TTL is deleted, its bytes
given back to the tenant's storage quota.

A session's state is charged to its tenant's quota at its latest size (the service,
``state_charge``) for as long as it is kept, hot or archived; the archive is its last
home, so without this sweep it would be kept, and counted, for ever. Every replica runs
the sweep; one at a time sweeps (the one that holds the lease, ``app/leases.py``), so
an archive's bytes are given back once. An archive goes only when no hot copy of it is
left and it was not used since the cutoff (``StateStore.release_archive``, one Valkey
script); its last use is read from Valkey, or, where Valkey has none, from when the
archive was written.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ...errors import ServiceUnavailable
from ...leases import SweepLease
from ...tenants import TenantQuotas, state_charge
from .store import StateStore

__all__ = ["archive_sweep_interval", "expire_archives", "run_archive_expiry"]

logger = logging.getLogger(__name__)


def archive_sweep_interval(ttl_seconds: int) -> float:
    """A few times per TTL, and at least every hour."""
    return max(1.0, min(ttl_seconds / 4, 3600.0))


async def expire_archives(store: StateStore, quotas: TenantQuotas, ttl_seconds: int,
                          lease: SweepLease) -> list[tuple[str, str]]:
    """One sweep, if this replica holds the lease (else nothing): the ``(tenant,
    session)`` whose archive was deleted."""
    async with lease.held() as mine:
        if not mine:
            return []
        cutoff = time.time() - ttl_seconds
        deleted: list[tuple[str, str]] = []
        for archived in await store.archive.stored():
            if archived.written_at >= cutoff:
                continue
            if not await store.release_archive(archived.tenant, archived.session_id, cutoff):
                continue  # hot again, or used since the cutoff
            # Given back first: a delete that fails is retried by the next sweep (its last
            # use is gone from Valkey now), and gives back nothing twice.
            await quotas.release(archived.tenant, state_charge(archived.session_id), 0, files=0)
            await store.archive.delete(archived.tenant, archived.session_id)
            deleted.append((archived.tenant, archived.session_id))
        return deleted


async def run_archive_expiry(store: StateStore, quotas: TenantQuotas, ttl_seconds: int,
                             lease: SweepLease) -> None:
    """Sweep every ``archive_sweep_interval(ttl_seconds)`` until cancelled; a failed sweep is
    logged and tried again at the next interval."""
    while True:
        await asyncio.sleep(archive_sweep_interval(ttl_seconds))
        try:
            deleted = await expire_archives(store, quotas, ttl_seconds, lease)
        except ServiceUnavailable as exc:  # Valkey or the object store (StorageUnavailable)
            logger.warning("state archive expiry failed", extra={"error": exc.message})
            continue
        if deleted:
            logger.info("expired state archives deleted", extra={"count": len(deleted)})
