"""Runtime sessions as operators see them: the listing and ending one.

``describe`` joins the records in Valkey (tenant, hint, age, last use, the last good
checkpoint and the workspace size its manifest gives) with the backend's kept sandboxes
(whether one is kept now, where, until when). ``end`` drops a runtime session's kept
sandbox and deletes its checkpoints and record (a later call with its hint creates a new
one). Used by ``GET``/``DELETE /admin/runtime-sessions`` and ``k8si runtime-sessions``.
"""

from __future__ import annotations

import time
from typing import Any

from ..storage import StorageUnavailable
from .checkpoint import CheckpointLost
from .service import RuntimeSessions

__all__ = ["describe", "end"]


async def describe(runtime: RuntimeSessions, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every runtime session (of one tenant), least recently used first."""
    kept = {info.key.runtime_session_id: info
            for info in await runtime.backend.runtime_sandboxes(tenant)}
    now, rows = time.time(), []
    for record in await runtime.records.all_records():
        if tenant is not None and record.tenant != tenant:
            continue
        try:
            manifest = await runtime.checkpoints.load(record.tenant, record.id,
                                                      record.generation)
            size: int | None = sum(entry.size for entry in manifest.values())
        except (CheckpointLost, StorageUnavailable):
            size = None
        info = kept.get(record.id)
        rows.append({
            "runtime_session_id": record.id, "tenant": record.tenant, "hint": record.hint,
            "session_id": record.session_id, "language": record.language or None,
            "age_seconds": round(now - record.created_at, 1),
            "idle_seconds": round(now - record.last_used, 1),
            "checkpoint_generation": record.generation, "workspace_bytes": size,
            "kept": info is not None, "location": info.location if info else None,
            "kept_until": round(min(info.idle_until, info.ends_at), 1) if info else None})
    return sorted(rows, key=lambda row: -float(row["idle_seconds"]))


async def end(runtime: RuntimeSessions, runtime_session_id: str) -> bool:
    """End the runtime session with this id; False when there is none."""
    for record in await runtime.records.all_records():
        if record.id == runtime_session_id:
            await runtime.end_session(record)
            return True
    return False
