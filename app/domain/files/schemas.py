"""Response shapes of the file endpoints, exactly as the LibreChat clients read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...storage import FileMeta
from .service import served_type

__all__ = ["DETAILS", "in_scope", "iso", "listing", "object_info"]

DETAILS = ("simple", "summary", "full", "normalized")


def iso(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds, as JavaScript's ``Date.toISOString``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _extension(name: str) -> str:
    """``.csv`` of ``data/table.csv``; ``""`` when the base name has none."""
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def listing(meta: FileMeta, detail: str) -> Any:
    """One entry of ``GET /files/{session_id}?detail=...``.

    ``full`` is what today's client parses (``fetchSessionFiles`` of
    ``@librechat/agents``): ``id`` (else it takes the part of ``name`` between the
    ``/`` and the first ``.``), ``name`` as ``"<session_id>/<file_id>.<ext>"``, and the
    file's own name in ``metadata["original-filename"]``. ``simple`` and ``summary``
    keep the older client's ``"<session_id>/<file_id>"`` names.
    """
    object_name = f"{meta.session_id}/{meta.id}"
    if detail == "simple":
        return object_name
    if detail == "normalized":
        entry: dict[str, Any] = {
            "id": meta.id, "name": meta.name, "storage_session_id": meta.session_id,
            "size": meta.size, "contentType": served_type(meta),
            "lastModified": iso(meta.last_modified)}
        if meta.read_only:
            entry["read_only"] = True
        return entry
    summary: dict[str, Any] = {"name": object_name, "size": meta.size,
                               "lastModified": iso(meta.last_modified), "etag": meta.etag}
    if detail == "full":
        summary.update(id=meta.id, name=object_name + _extension(meta.name),
                       storage_session_id=meta.session_id, contentType=served_type(meta),
                       metadata={"original-filename": meta.name,
                                 "content-type": served_type(meta)})
        for key, value in (("kind", meta.kind), ("resource_id", meta.resource_id),
                           ("version", meta.version)):
            if value is not None:
                summary[key] = value
        if meta.read_only:
            summary["read_only"] = True
    return summary


def in_scope(meta: FileMeta, kind: str | None, resource_id: str | None,
             version: str | None) -> bool:
    """Whether a file belongs to the scope the client asked for (``kind``/``id``/
    ``version`` of ``GET /files``): a file uploaded with another scope does not; a
    file without one (an execution's output) does."""
    return not any(asked is not None and own is not None and str(own) != asked
                   for asked, own in ((kind, meta.kind), (resource_id, meta.resource_id),
                                      (version, meta.version)))


def object_info(meta: FileMeta) -> dict[str, Any]:
    """``GET /sessions/{session_id}/objects/{file_id}``: LibreChat's freshness probe."""
    return {"lastModified": iso(meta.last_modified), "size": meta.size, "etag": meta.etag,
            "name": meta.name, "id": meta.id, "storage_session_id": meta.session_id}
