"""``STATE_ARCHIVE_TTL``: archived Python state unused for the TTL is deleted, its bytes
given back to the tenant's storage quota.

A session's state is charged to its tenant's quota at its latest size for as long as
it is kept, hot or archived (``StateStore.save``); the archive is its last home, so
without this sweep it would be kept, and counted, for ever. Every replica runs the
sweep; one at a time sweeps (the one that holds the lease, ``app/leases.py``). An
archive is retired only when no hot copy of it is left and it was not used since the
cutoff; retiring gives the charge back and sets a tombstone in the same script
(``StateStore.retire``), so a read begun before cannot bring the state back, and a
save after it is charged afresh. An archive with no last use recorded (written before
uses were, or by a Valkey that lost them) starts its TTL when the sweep first sees it.
The sweep also gives back the charge of a state that is neither hot nor archived (a
hot copy that expired before it could be archived) once it is unused for the TTL, and
drops the last uses of states that are gone.
"""

from __future__ import annotations

import logging
import time

from ...errors import ServiceUnavailable
from ...leases import SweepLease
from ...periodic import run_periodically
from .store import StateStore

__all__ = ["archive_sweep_interval", "expire_archives", "run_archive_expiry"]

logger = logging.getLogger(__name__)


def archive_sweep_interval(ttl_seconds: int) -> float:
    """A few times per TTL, and at least every hour."""
    return max(1.0, min(ttl_seconds / 4, 3600.0))


async def expire_archives(store: StateStore, ttl_seconds: int,
                          lease: SweepLease) -> list[tuple[str, str]]:
    """One sweep, if this replica holds the lease (else nothing): the ``(tenant,
    session)`` whose archive was deleted. An archive that cannot be deleted now is
    logged and left to the next sweep (its state tombstoned: never read meanwhile)."""
    async with lease.held() as mine:
        if not mine:
            return []
        cutoff = time.time() - ttl_seconds
        archives = await store.archive.stored()
        deleted: list[tuple[str, str]] = []
        for archived in archives:
            tenant, session_id = archived.tenant, archived.session_id
            if not await store.retire(tenant, session_id, cutoff):
                continue
            try:
                await store.delete_archive(tenant, session_id)
            except ServiceUnavailable as exc:
                logger.warning("expired state archive not deleted; tried again next sweep",
                               extra={"tenant": tenant, "session_id": session_id,
                                      "error": str(exc)})
                continue
            deleted.append((tenant, session_id))
        listed = {(archived.tenant, archived.session_id) for archived in archives}
        for tenant, session_id in await store.unused_since(cutoff):
            if (tenant, session_id) not in listed and await store.reclaim(tenant, session_id,
                                                                          cutoff):
                logger.info("unused state's last use dropped, its charge given back",
                            extra={"tenant": tenant, "session_id": session_id})
        return deleted


async def run_archive_expiry(store: StateStore, ttl_seconds: int, lease: SweepLease) -> None:
    """Sweep every ``archive_sweep_interval(ttl_seconds)`` until cancelled; a failed sweep is
    logged and tried again at the next interval."""

    async def sweep() -> None:
        deleted = await expire_archives(store, ttl_seconds, lease)
        if deleted:
            logger.info("expired state archives deleted", extra={"count": len(deleted)})

    await run_periodically(sweep, archive_sweep_interval(ttl_seconds),
                           what="state archive expiry", logger=logger)
