"""``STATE_HOT_MAX_BYTES``: how much Python state Valkey holds hot, at most.

Every hot copy is counted in bytes as it is saved or read back (``scripts.HOT_LUA``).
A save that takes the total past the budget is archived and its hot copy dropped at
once (``StateStore.save``); between saves, the archiver's loop runs ``keep_within``:
it stops counting hot copies that expired on their own, then, while the total is past
the budget, drops the archived hot copies that would expire soonest (archiving first
those that are not yet). A dropped copy is read from the archive next time, and put
back hot. Nothing is lost: a hot copy goes only once its blob is in the object store.
"""

from __future__ import annotations

import time

from .store import StateStore

__all__ = ["keep_within"]

_BATCH = 100


async def keep_within(store: StateStore) -> int:
    """Prune the expired hot copies, then shed down to the budget: the copies shed."""
    while True:
        expired = await store.hot_members(time.time(), _BATCH)
        dropped = [member for member in expired if await store.prune(member)]
        if len(expired) < _BATCH or not dropped:
            break
    if store.hot_max_bytes <= 0:
        return 0
    shed = 0
    while await store.hot_bytes() > store.hot_max_bytes:
        progressed = False
        for member in await store.hot_members(float("inf"), _BATCH):
            freed = await store.shed(member)
            if freed < 0 and await store.archive_member(member):
                freed = await store.shed(member)
            if freed >= 0:
                shed, progressed = shed + 1, True
                if await store.hot_bytes() <= store.hot_max_bytes:
                    break
        if not progressed:  # nothing more can go now (being archived elsewhere, failing)
            break
    return shed
