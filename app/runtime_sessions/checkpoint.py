"""Checkpoints of a runtime session's workspace in the object store, by manifest.

Layout under the tenant (``rt`` is no session id: ids are 21 characters)::

    <tenant>/rt/<runtime id>/blobs/<sha256>          content-addressed bytes
    <tenant>/rt/<runtime id>/manifests/<generation>  {generation, created_at, files}

(manifests are JSON without a ``.json`` suffix: the ``FILE_TTL`` sweep reads those as
files' metadata).

``files`` maps each work-dir path to ``{sha256, size, source, read_only, primed}``, where
``source`` is ``{"blob": sha256}`` or ``{"file": {"session_id", "id"}}`` for bytes
already stored as a session file (an output of an execution, or a primed input): those
are never stored twice, and a blob already stored is not uploaded again. Only what
changed since the previous manifest is looked at. Manifests are immutable; the
record's ``generation`` (written last, in Valkey) is the commit point, so a crash
half-way leaves the previous checkpoint in force.

Manifests before the previous one, and blobs the last two do not reference, are pruned
after each checkpoint (``prune``); ending a runtime session deletes all (``delete_all``).

``restore`` fills a fresh sandbox from a manifest. A file source that is gone (deleted
by its owner since) is left out and logged; a manifest that cannot be read is
``CheckpointLost`` (the service then answers ``reset``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import obstore
import orjson
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import ObjectStore

from ..executor import ExecutorClient
from ..storage import FileBytesMissing, FileStore, StorageUnavailable
from ..tenants import TenantQuotas, blob_charge

__all__ = ["CheckpointLost", "Checkpoints", "Entry", "Manifest"]

logger = logging.getLogger(__name__)

_STORE_ERRORS = (BaseError, OSError)

#: A manifest: work-dir path → entry.
Manifest = dict[str, "Entry"]


class CheckpointLost(Exception):
    """The manifest of a runtime session's last good checkpoint cannot be read."""


@attrs.frozen
class Entry:
    """One file of a checkpointed workspace."""

    sha256: str
    size: int
    #: ``{"blob": sha256}`` or ``{"file": {"session_id": ..., "id": ...}}``.
    source: dict[str, Any]
    read_only: bool = False
    #: The id of the input last placed at this path (kept while the code changes the
    #: file in place): that input delivered again is not placed over the changes.
    primed: str = ""


def _root(tenant: str, runtime_id: str) -> str:
    return f"{tenant}/rt/{runtime_id}"


class Checkpoints:
    """Writes, reads and restores manifests and their blobs."""

    def __init__(self, store: ObjectStore, files: FileStore, tmp_dir: Path,
                 quotas: TenantQuotas | None = None) -> None:
        self._store = store
        self._files = files
        self._tmp_dir = tmp_dir
        #: Blobs count against the tenant's storage quota like files (``QuotaExceeded``).
        self._quotas = quotas

    async def load(self, tenant: str, runtime_id: str, generation: int) -> Manifest:
        """The manifest of ``generation`` (0: the empty one)."""
        if generation <= 0:
            return {}
        path = f"{_root(tenant, runtime_id)}/manifests/{generation}"
        try:
            result = await obstore.get_async(self._store, path)
            data = orjson.loads(bytes(await result.bytes_async()))
            return {name: Entry(**fields) for name, fields in data["files"].items()}
        except (NotFoundError, FileNotFoundError) as exc:
            raise CheckpointLost(f"manifest {generation} of {runtime_id} is gone") from exc
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointLost(f"manifest {generation} of {runtime_id} is malformed") from exc
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store read failed", exc) from exc

    async def save(self, tenant: str, runtime_id: str, generation: int,
                   manifest: Mapping[str, Entry]) -> None:
        body = orjson.dumps({"generation": generation, "created_at": time.time(),
                             "files": {name: attrs.asdict(entry)
                                       for name, entry in manifest.items()}})
        path = f"{_root(tenant, runtime_id)}/manifests/{generation}"
        try:
            await obstore.put_async(self._store, path, body)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store write failed", exc) from exc

    async def put_blob(self, tenant: str, runtime_id: str, sha256: str,
                       executor: ExecutorClient, *, path: str, size: int) -> bool:
        """Copy a work-dir file into the blob of its sha256 (unless it is there), counted
        against the tenant's quota (``QuotaExceeded``); False when the file is no longer a
        regular file or its bytes or their number differ from its listing's."""
        key = f"{_root(tenant, runtime_id)}/blobs/{sha256}"
        try:
            await obstore.head_async(self._store, key)
            return True
        except (NotFoundError, FileNotFoundError):
            pass
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store read failed", exc) from exc
        charge = blob_charge(runtime_id, sha256)
        # False: already counted (the same blob stored meanwhile): not ours to give back.
        charged = self._quotas is not None and await self._quotas.reserve(tenant, charge, size)
        stored = False
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp_dir, prefix="checkpoint-")
        try:
            digest, copied = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as handle:
                async with executor.open_file(path) as chunks:
                    if chunks is None:
                        return False
                    async for chunk in chunks:
                        digest.update(chunk)
                        handle.write(chunk)
                        copied += len(chunk)
            if digest.hexdigest() != sha256 or copied != size:  # changed since its listing
                return False
            try:
                await obstore.put_async(self._store, key, Path(tmp_name))
            except _STORE_ERRORS as exc:
                raise StorageUnavailable.of("object store write failed", exc) from exc
            stored = True
        finally:
            os.unlink(tmp_name)
            if not stored and charged and self._quotas is not None:
                await self._quotas.release(tenant, charge, size)
        return True

    async def _stream(self, tenant: str, runtime_id: str,
                      entry: Entry) -> tuple[int, AsyncIterator[bytes]] | None:
        if "blob" in entry.source:
            key = f"{_root(tenant, runtime_id)}/blobs/{entry.source['blob']}"
            return entry.size, self._blob_chunks(key)
        ref = entry.source.get("file") or {}
        meta = await self._files.get_meta(tenant, str(ref.get("session_id", "")),
                                          str(ref.get("id", "")))
        if meta is None:
            return None
        try:
            return meta.size, await self._files.open(meta)
        except FileBytesMissing:  # metadata left without bytes: the file is gone
            return None

    async def _blob_chunks(self, key: str) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self._store, key)
            async for chunk in result.stream(min_chunk_size=1 << 20):
                yield bytes(chunk)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store read failed", exc) from exc

    async def restore(self, executor: ExecutorClient, tenant: str, runtime_id: str,
                      manifest: Mapping[str, Entry], skip: Mapping[str, str] | None = None,
                      ) -> Manifest:
        """Stream each file of ``manifest`` into the sandbox (but those whose sha256
        ``skip`` already gives); the manifest of what was placed."""
        placed: Manifest = {}
        for path, entry in manifest.items():
            if skip is not None and skip.get(path) == entry.sha256:
                placed[path] = entry
                continue
            source = await self._stream(tenant, runtime_id, entry)
            if source is None:
                logger.warning("checkpointed file is gone from the store; left out",
                               extra={"runtime_session_id": runtime_id, "path": path})
                continue
            size, chunks = source
            await executor.put_file(path, size, chunks)
            placed[path] = entry
        return placed

    async def prune(self, tenant: str, runtime_id: str, generation: int,
                    kept: list[Mapping[str, Entry]]) -> int:
        """After ``generation`` was saved: delete the manifests before the previous one,
        and every blob none of ``kept`` (the last two manifests) references; the number
        of objects deleted."""
        root = _root(tenant, runtime_id)
        referenced = {entry.source["blob"] for manifest in kept for entry in manifest.values()
                      if "blob" in entry.source}
        return await self._delete(tenant, runtime_id, root, lambda kind, name: (
            kind == "manifests" and name.isdigit() and int(name) < generation - 1) or (
            kind == "blobs" and name not in referenced))

    async def _delete(self, tenant: str, runtime_id: str, root: str,
                      doomed: Callable[[str, str], bool]) -> int:
        """Delete the objects under ``root`` that ``doomed(kind, name)`` picks, giving a
        blob's size back to the tenant's quota; the number deleted."""
        picked: list[tuple[str, int, str | None]] = []  # (path, size, a blob's charge)
        try:
            async for batch in obstore.list(self._store, f"{root}/"):
                for item in batch:
                    path = str(item["path"])
                    kind, _, name = path[len(root) + 1:].partition("/")
                    if doomed(kind, name):
                        picked.append((path, int(item["size"]),
                                       blob_charge(runtime_id, name) if kind == "blobs"
                                       else None))
            for path, size, charge in picked:
                with contextlib.suppress(NotFoundError, FileNotFoundError):  # deleted meanwhile
                    await obstore.delete_async(self._store, path)
                if charge is not None and self._quotas is not None:  # once, whoever deletes
                    await self._quotas.release(tenant, charge, size)  # it first
        except (NotFoundError, FileNotFoundError):
            pass  # the listing of a root that is gone
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store delete failed", exc) from exc
        return len(picked)

    async def stored(self) -> dict[tuple[str, str], float]:
        """Every runtime session with objects in the store: ``(tenant, runtime id)`` ->
        when its newest object was written (epoch seconds). One listing of the store."""
        newest: dict[tuple[str, str], float] = {}
        try:
            async for batch in obstore.list(self._store):
                for item in batch:
                    parts = str(item["path"]).split("/")
                    if len(parts) >= 4 and parts[1] == "rt":
                        key, written = (parts[0], parts[2]), item["last_modified"].timestamp()
                        newest[key] = max(newest.get(key, 0.0), written)
        except _STORE_ERRORS as exc:
            raise StorageUnavailable.of("object store list failed", exc) from exc
        return newest

    async def delete_all(self, tenant: str, runtime_id: str) -> None:
        """Remove every manifest and blob of a runtime session (it ended)."""
        await self._delete(tenant, runtime_id, _root(tenant, runtime_id),
                           lambda kind, name: True)

