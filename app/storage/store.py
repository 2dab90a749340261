"""Files in the object store (obstore): bytes and their metadata, side by side.

Layout, always keyed by (tenant, session, file id) — a lookup can only find what the
tenant owns:

    <tenant>/<session_id>/<file_id>        the bytes
    <tenant>/<session_id>/<file_id>.json   the metadata (``FileMeta``)

The metadata object is written *after* the bytes, so a file becomes visible only
once it is complete; an upload that fails half-way leaves nothing listed. Store
failures become ``StorageUnavailable`` (503). Metadata whose bytes are gone (a DELETE
that raced a metadata update and then failed to remove it again, a bucket's lifecycle
rule) is ``FileBytesMissing`` when the file is opened: the file service removes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import LocalStore, ObjectStore, from_url

from ..errors import NotFound, ServiceUnavailable
from ..records import JsonRecord

__all__ = ["FileBytesMissing", "FileMeta", "FileStore", "StorageUnavailable",
           "create_object_store"]

logger = logging.getLogger(__name__)

_META_SUFFIX = ".json"
#: obstore's own hierarchy, plus what a local store raises from the filesystem.
_STORE_ERRORS = (BaseError, OSError)


class StorageUnavailable(ServiceUnavailable):
    """The object store failed or cannot be reached."""

    code = "storage_unavailable"

    @classmethod
    def of(cls, what: str, cause: BaseException) -> StorageUnavailable:
        """``what`` failed because of ``cause``: the store's own words (paths, endpoints)
        are logged as the detail, never answered."""
        return cls(what, retry_after=2, detail=str(cause))


class FileBytesMissing(NotFound):
    """A file's metadata is stored but its bytes are not: the file is gone."""


@attrs.frozen
class FileMeta(JsonRecord):
    """Everything known about one stored file besides its bytes."""

    id: str
    session_id: str
    tenant: str
    name: str
    size: int
    sha256: str
    content_type: str = "application/octet-stream"
    last_modified: float = attrs.field(factory=time.time)
    read_only: bool = False
    kind: str | None = None
    resource_id: str | None = None
    version: str | None = None
    user_id: str | None = None
    #: ``{"id", "storage_session_id"}`` of the input this file is a changed copy of.
    modified_from: dict[str, str] | None = None
    #: When the file was last staged into a sandbox or downloaded (``FILE_TTL``).
    last_used: float = attrs.field(factory=time.time)
    #: The code of a later execution of its session deleted it from ``/mnt/data``: kept
    #: (downloads, explicit references) but no longer placed there by the session.
    deleted_in_sandbox: bool = False

    @property
    def etag(self) -> str:
        return f'"{self.sha256[:32]}"'


def create_object_store(url: str | None, local_root: Path,
                        options: dict[str, str] | None = None) -> ObjectStore:
    """``LocalStore`` under ``local_root`` unless ``url`` names a store (``s3://...``)."""
    if url is None or url.startswith("file://") or "://" not in url:
        root = Path(url[len("file://"):]) if url and url.startswith("file://") else local_root
        root.mkdir(parents=True, exist_ok=True)
        return LocalStore(prefix=root)
    config: dict[str, Any] = dict(options or {})
    client_options: dict[str, Any] = {}
    if "allow_http" in config:  # a client option, not an S3 one
        client_options["allow_http"] = str(config.pop("allow_http")).lower() in ("1", "true")
    store: ObjectStore = from_url(url, config=config,  # type: ignore[call-overload]
                                  client_options=client_options)
    return store


def _bytes_path(tenant: str, session_id: str, file_id: str) -> str:
    return f"{tenant}/{session_id}/{file_id}"


async def _chunks(stream: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """An opened object's chunks as bytes, a store failure as ``StorageUnavailable``."""
    try:
        async for chunk in stream:
            yield bytes(chunk)
    except _STORE_ERRORS as exc:
        raise StorageUnavailable.of("object store read failed", exc) from exc


class FileStore:
    """Stores, finds, streams and deletes the files of sessions."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def put(self, meta: FileMeta, source: Path) -> FileMeta:
        """Store the bytes in ``source``, then the metadata (which makes it visible).

        Bytes whose metadata write failed are removed again (no sweep would find them:
        the ``FILE_TTL`` sweep walks metadata), unless the write landed after all (a
        timeout after the store took it): then the file is stored."""
        path = _bytes_path(meta.tenant, meta.session_id, meta.id)
        try:
            await obstore.put_async(self._store, path, source)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store write failed", exc) from exc
        try:
            await obstore.put_async(self._store, path + _META_SUFFIX, meta.to_json())
        except _STORE_ERRORS as exc:
            failed = StorageUnavailable.of("object store write failed", exc)
            try:
                if await self._exists(path + _META_SUFFIX):
                    return meta
                await self._delete_if_present(path)
            except StorageUnavailable as again:
                logger.warning("stored bytes without metadata left in the object store",
                               extra={"path": path, "error": str(again)})
            raise failed from exc
        return meta

    async def update_meta(self, meta: FileMeta) -> bool:
        """Write a file's changed metadata, unless the file was deleted meanwhile (a
        write would bring it back, without its bytes): False then.

        Without a conditional write (the local store has none), a DELETE may still land
        between the check and the write; the bytes are looked at after the write, and
        the deleter removes the metadata a second time after the bytes (``delete``), so
        whichever comes last removes metadata brought back that way."""
        path = _bytes_path(meta.tenant, meta.session_id, meta.id)
        if not await self._exists(path + _META_SUFFIX):
            return False
        try:
            await obstore.put_async(self._store, path + _META_SUFFIX, meta.to_json())
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store write failed", exc) from exc
        if await self._exists(path):
            return True
        await self._delete_if_present(path + _META_SUFFIX)  # deleted meanwhile: not back
        return False

    async def _exists(self, path: str) -> bool:
        try:
            await obstore.head_async(self._store, path)
        except (NotFoundError, FileNotFoundError):
            return False
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store read failed", exc) from exc
        return True

    async def _delete_if_present(self, path: str) -> None:
        try:
            await obstore.delete_async(self._store, path)
        except (NotFoundError, FileNotFoundError):
            pass  # already gone: deleting is idempotent
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store delete failed", exc) from exc

    async def _read_meta(self, path: str) -> FileMeta:
        result = await obstore.get_async(self._store, path)
        return FileMeta.from_json(bytes(await result.bytes_async()))

    async def _read_if_present(self, path: str) -> FileMeta | None:
        """A file's metadata; None when there is none (never stored, or deleted since a
        listing named it)."""
        try:
            return await self._read_meta(path)
        except (NotFoundError, FileNotFoundError):
            return None

    async def get_meta(self, tenant: str, session_id: str, file_id: str) -> FileMeta | None:
        path = _bytes_path(tenant, session_id, file_id) + _META_SUFFIX
        try:
            return await self._read_if_present(path)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store read failed", exc) from exc

    async def list_session(self, tenant: str, session_id: str) -> list[FileMeta]:
        """The session's complete files, oldest first."""
        metas: list[FileMeta] = []
        try:
            async for batch in obstore.list(self._store, f"{tenant}/{session_id}/"):
                for entry in batch:
                    if entry["path"].endswith(_META_SUFFIX):
                        meta = await self._read_if_present(entry["path"])
                        if meta is not None:
                            metas.append(meta)
        except (NotFoundError, FileNotFoundError):
            return []  # no such session
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store list failed", exc) from exc
        return sorted(metas, key=lambda m: (m.last_modified, m.id))

    async def open(self, meta: FileMeta, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The file's bytes in chunks (never the whole file in memory). The object is
        opened here, before the first chunk: bytes that are gone are ``FileBytesMissing``
        now, not a failure half-way through a response or a stage-in."""
        path = _bytes_path(meta.tenant, meta.session_id, meta.id)
        try:
            result = await obstore.get_async(self._store, path)
        except (NotFoundError, FileNotFoundError) as exc:
            raise FileBytesMissing(f"file {meta.id} has no stored bytes") from exc
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store read failed", exc) from exc
        return _chunks(result.stream(min_chunk_size=chunk_size))

    async def delete(self, meta: FileMeta) -> None:
        """Remove the metadata first (the file disappears at once; a failure here is a
        ``StorageUnavailable`` and changes nothing), then the bytes, then the metadata
        once more (an ``update_meta`` racing the first may have written it back).
        Idempotent. Bytes that cannot be removed once the metadata is gone are logged
        (with their path) and left: the file is deleted for every reader either way."""
        path = _bytes_path(meta.tenant, meta.session_id, meta.id)
        await self._delete_if_present(path + _META_SUFFIX)
        for leftover in (path, path + _META_SUFFIX):
            try:
                await self._delete_if_present(leftover)
            except StorageUnavailable as exc:
                logger.warning("deleted file's object left in the object store",
                               extra={"path": leftover, "error": str(exc)})

    async def touch(self, meta: FileMeta, min_interval: float) -> FileMeta:
        """Record a use (for ``FILE_TTL``), at most once per ``min_interval`` seconds."""
        now = time.time()
        if now - meta.last_used < min_interval:
            return meta
        touched = attrs.evolve(meta, last_used=now)
        return touched if await self.update_meta(touched) else meta

    async def expire(self, unused_for: float,
                     on_deleted: Callable[[FileMeta], Awaitable[object]] | None = None,
                     ) -> list[FileMeta]:
        """Delete every file not used for ``unused_for`` seconds; the files deleted.
        ``on_deleted`` hears of each as soon as it is deleted (not after the sweep: a
        sweep that fails half-way has told it of every file it deleted)."""
        cutoff, deleted = time.time() - unused_for, []
        try:
            async for batch in obstore.list(self._store):
                for entry in batch:
                    if not entry["path"].endswith(_META_SUFFIX):
                        continue
                    meta = await self._read_if_present(entry["path"])
                    if meta is None or meta.last_used >= cutoff:
                        continue
                    await self.delete(meta)
                    deleted.append(meta)
                    if on_deleted is not None:
                        await on_deleted(meta)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store list failed", exc) from exc
        return deleted

    async def ping(self) -> None:
        """One cheap request, for readiness."""
        try:
            async for _ in obstore.list(self._store, "k8si-readiness-probe/"):
                break
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store unreachable", exc) from exc
