"""Archived Python state in the object store: one object per (tenant, session).

Layout: ``k8si.state/<tenant>/<session_id>``. The prefix holds a dot, which no tenant
name can (tenants are ``[A-Za-z0-9_-]``), so archived state never mixes with the
session files under ``<tenant>/<session_id>/``, and the file listings and the
``FILE_TTL`` sweep never see it.

One object holds everything, so an archive is never half written:
``MAGIC`` (8 bytes), the header length (4 bytes, big-endian), the header (JSON:
tenant, session, size, sha256, signature, created_at, origin), then the blob. The
blob is opaque here; its signature is checked by the state service on every read.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs
import obstore
import orjson
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import ObjectStore

from .store import StorageUnavailable

__all__ = ["ArchivedState", "StateArchive", "StateHeader", "StateRecord"]

_PREFIX = "k8si.state"
_MAGIC = b"K8SISTA1"
_MAX_HEADER = 4096
_STORE_ERRORS = (BaseError, OSError)


@attrs.frozen
class StateHeader:
    """Everything stored about a session's state besides the blob itself."""

    tenant: str
    session_id: str
    size: int
    sha256: str
    #: HMAC over (tenant, session, format version, sha256): see ``app/domain/state/blob.py``.
    signature: str
    created_at: float
    #: ``execution`` (captured in a sandbox) or ``upload`` (``POST /state``).
    origin: str


@attrs.frozen
class ArchivedState:
    """One archive as the object store lists it: whose, how big, last written when."""

    tenant: str
    session_id: str
    size: int
    written_at: float


@attrs.frozen
class StateRecord:
    """A session's state: the opaque blob and its header."""

    header: StateHeader
    blob: bytes = attrs.field(repr=False)


def _path(tenant: str, session_id: str) -> str:
    return f"{_PREFIX}/{tenant}/{session_id}"


def _parse_header(data: bytes) -> tuple[StateHeader, int] | None:
    """The header and the offset of the blob; None when the object is not an archive."""
    if len(data) < 12 or data[:8] != _MAGIC:
        return None
    (length,) = struct.unpack(">I", data[8:12])
    if length > _MAX_HEADER or len(data) < 12 + length:
        return None
    try:
        fields: dict[str, Any] = orjson.loads(data[12:12 + length])
        return StateHeader(**fields), 12 + length
    except (orjson.JSONDecodeError, TypeError):
        return None


class StateArchive:
    """Puts, finds and deletes archived state blobs."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def put(self, record: StateRecord) -> None:
        header = orjson.dumps(attrs.asdict(record.header))
        data = _MAGIC + struct.pack(">I", len(header)) + header + record.blob
        path = _path(record.header.tenant, record.header.session_id)
        try:
            await obstore.put_async(self._store, path, data)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("state archive write failed", exc) from exc

    async def get(self, tenant: str, session_id: str) -> StateRecord | None:
        """The archived state, or None (none stored, or an object that is no archive)."""
        try:
            result = await obstore.get_async(self._store, _path(tenant, session_id))
            data = bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError):
            return None
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("state archive read failed", exc) from exc
        parsed = _parse_header(data)
        if parsed is None:
            return None
        header, offset = parsed
        return StateRecord(header=header, blob=data[offset:])

    async def header(self, tenant: str, session_id: str) -> StateHeader | None:
        """Only the header (a ranged read: the blob is not fetched)."""
        path = _path(tenant, session_id)
        try:
            size = int((await obstore.head_async(self._store, path))["size"])
            data = bytes(await obstore.get_range_async(self._store, path, start=0,
                                                       end=min(size, 12 + _MAX_HEADER)))
        except (NotFoundError, FileNotFoundError):
            return None
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("state archive read failed", exc) from exc
        parsed = _parse_header(data)
        return parsed[0] if parsed is not None else None

    async def stored(self) -> list[ArchivedState]:
        """Every archive in the store (its header unread: the path names it)."""
        found: list[ArchivedState] = []
        try:
            async for batch in obstore.list(self._store, f"{_PREFIX}/"):
                for item in batch:
                    parts = str(item["path"]).split("/")
                    if len(parts) == 3:
                        found.append(ArchivedState(tenant=parts[1], session_id=parts[2],
                                                   size=int(item["size"]),
                                                   written_at=item["last_modified"].timestamp()))
        except (NotFoundError, FileNotFoundError):
            return []  # nothing archived yet
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("state archive list failed", exc) from exc
        return found

    async def delete(self, tenant: str, session_id: str) -> None:
        try:
            await obstore.delete_async(self._store, _path(tenant, session_id))
        except (NotFoundError, FileNotFoundError):
            return  # already gone: deleting is idempotent
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("state archive delete failed", exc) from exc
