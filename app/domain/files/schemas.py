"""Response shapes of the file endpoints, exactly as the LibreChat clients read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...storage import FileMeta

__all__ = ["iso", "listing", "object_info"]

DETAILS = ("simple", "summary", "full", "normalized")


def iso(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds, as JavaScript's ``Date.toISOString``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def listing(meta: FileMeta, detail: str) -> Any:
    """One entry of ``GET /files/{session_id}?detail=...``."""
    object_name = f"{meta.session_id}/{meta.id}"
    if detail == "simple":
        return object_name
    if detail == "normalized":
        entry: dict[str, Any] = {
            "id": meta.id, "name": meta.name, "storage_session_id": meta.session_id,
            "size": meta.size, "contentType": meta.content_type,
            "lastModified": iso(meta.last_modified)}
        if meta.read_only:
            entry["read_only"] = True
        return entry
    summary: dict[str, Any] = {"name": object_name, "size": meta.size,
                               "lastModified": iso(meta.last_modified), "etag": meta.etag}
    if detail == "full":
        summary["metadata"] = {"original-filename": meta.name,
                               "content-type": meta.content_type}
    return summary


def object_info(meta: FileMeta) -> dict[str, Any]:
    """``GET /sessions/{session_id}/objects/{file_id}``: LibreChat's freshness probe."""
    return {"lastModified": iso(meta.last_modified), "size": meta.size, "etag": meta.etag,
            "name": meta.name, "id": meta.id, "storage_session_id": meta.session_id}
