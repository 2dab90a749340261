"""The file service: uploads, lookups, listings, deletes — always by (tenant, id).

An id of the wrong shape is a 400 before any lookup; another tenant's session or
file answers exactly like an unknown one (404, or an empty listing).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from sidecar.contract import MAX_DEPTH, FileError, validate_name

from ...auth import Principal
from ...errors import BadRequest, NotFound, ServiceUnavailable
from ...ids import is_valid_id, new_id
from ...sessions import Session, SessionStore, check_entity_id
from ...storage import FileBytesMissing, FileMeta, FileStore, StorageUnavailable
from ...tenants import QuotaExceeded, TenantQuotas, file_charge
from .multipart import FilePart, MultipartForm, media_type

__all__ = ["FileService", "InputFile", "OpenFile", "UploadResult", "check_id", "check_name",
           "check_path", "conflicting", "guess_type", "path_problem", "served_type"]

_TRUE = {"1", "true", "yes", "on"}

logger = logging.getLogger(__name__)

#: How old a stored file must be before bytes found missing mean it is gone.
LOST_BYTES_GRACE = 600.0
#: Opens a stored file's bytes; None when they are gone (``FileService.open``).
OpenFile = Callable[[FileMeta], Awaitable[AsyncIterator[bytes] | None]]


def check_id(value: str, what: str) -> str:
    if not is_valid_id(value):
        raise BadRequest(f"{what} must be 21 characters of [A-Za-z0-9_-]")
    return value


def check_name(name: str) -> str:
    """A file name as security.md allows it, or a 400 saying why not."""
    try:
        return validate_name(name)
    except FileError as exc:
        raise BadRequest(f"invalid file name: {exc}") from exc


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe relative path under ``/mnt/data``, or None when it is.

    A path is 1 to ``MAX_DEPTH`` segments joined by ``/`` (LibreChat's batch upload
    sends nested names such as ``scripts/helper.py``), each segment a valid name:
    no ``..``, no empty segment (so no leading ``/``), no backslash.
    """
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        return f"more than {MAX_DEPTH} path segments"
    try:
        for part in parts:
            validate_name(part)
    except FileError as exc:
        return str(exc)
    return None


def check_path(path: str) -> str:
    """A relative file path as ``path_problem`` allows it, or a 400 saying why not."""
    problem = path_problem(path)
    if problem is not None:
        raise BadRequest(f"invalid file name: {problem}")
    return path


def conflicting(path: str, names: Iterable[str]) -> str | None:
    """The first of ``names`` that cannot sit in one directory tree with ``path``, or None.

    Two paths conflict when one is a directory prefix of the other (``a`` and
    ``a/b.txt``): a name cannot be a file and a directory at once, so a work dir
    cannot hold both. The same path twice is no conflict (the newer replaces it).
    """
    for name in names:
        if path.startswith(name + "/") or name.startswith(path + "/"):
            return name
    return None


def guess_type(name: str, declared: str | None = None) -> str:
    """The media type to store for ``name``: the declared one when it is a valid
    ``type/subtype`` (``media_type``: parameters dropped) other than the generic
    ``application/octet-stream``, else the guess from the name."""
    valid = media_type(declared)
    if valid is not None and valid != "application/octet-stream":
        return valid
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def served_type(meta: FileMeta) -> str:
    """The media type a stored file is answered with (its download's Content-Type, the
    listings): the stored one when valid, else the guess from its name. A file stored
    before part types were checked may hold anything, even a line break."""
    return media_type(meta.content_type) or guess_type(meta.name)


@attrs.frozen
class UploadResult:
    """One part of an upload: stored (``meta``) or refused (``error``)."""

    filename: str
    meta: FileMeta | None = None
    error: str | None = None
    #: Refused because the tenant's storage quota is full (a 413, not a 400).
    over_quota: bool = False


@attrs.frozen
class InputFile:
    """A stored file to place in the sandbox at ``/mnt/data/<path>``."""

    path: str
    meta: FileMeta


class FileService:
    """Everything the API does with stored files."""

    def __init__(self, files: FileStore, sessions: SessionStore, file_ttl: int = 0,
                 quotas: TenantQuotas | None = None) -> None:
        #: The files' bytes and metadata in the object store.
        self.objects = files
        self.sessions = sessions
        self.file_ttl = file_ttl
        self.quotas = quotas

    async def store(self, meta: FileMeta, source: Path) -> FileMeta:
        """Store a file, counted against its tenant's storage quota (413 when full)."""
        charge = file_charge(meta.session_id, meta.id)
        if self.quotas is not None:
            await self.quotas.reserve(meta.tenant, charge, meta.size)
        try:
            return await self.objects.put(meta, source)
        except BaseException:
            if self.quotas is not None:
                await self.quotas.release(meta.tenant, charge, meta.size)
            raise

    async def used(self, meta: FileMeta) -> FileMeta:
        """Note a use of the file, so ``FILE_TTL`` counts from now. Bookkeeping only: a
        store failure here is logged, and the read it came with goes on."""
        if self.file_ttl <= 0:
            return meta
        try:
            return await self.objects.touch(meta, min_interval=self.file_ttl / 10)
        except StorageUnavailable as exc:
            logger.warning("file use not recorded", extra={
                "session_id": meta.session_id, "file_id": meta.id, "detail": str(exc)})
            return meta

    async def upload(self, principal: Principal, form: MultipartForm, user_id: str | None,
                     *, all_or_nothing: bool = False) -> tuple[Session, list[UploadResult]]:
        """Store every file part of ``form`` in one session (the caller's, or a new one).
        ``all_or_nothing``: when a part fails, the parts stored before it are deleted
        again (``POST /upload`` answers for the request as a whole: 400, or 413 when the
        tenant's storage quota is full). A malformed ``entity_id`` is a 400 before
        anything is looked up or stored."""
        fields = form.fields
        # An empty form field is no entity_id (form encoders send empty fields).
        entity_id = check_entity_id(fields.get("entity_id") or None)
        async def has_files(expired: str) -> bool:  # its record expired, its files did not
            return await self.has_files(principal.tenant, expired)

        user_id = principal.acting_user(user_id)
        session = await self.sessions.resolve(principal.tenant, fields.get("session_id"),
                                              user_id, entity_id, adoptable=has_files)
        # The session's names (and this request's, as they are stored): a part whose
        # name is a directory of one of them, or under one as if it were a directory,
        # is refused -- the session's work dir could not hold both.
        names = ([] if session.is_new else
                 [meta.name for meta in await self.objects.list_session(principal.tenant,
                                                                      session.id)])
        results: list[UploadResult] = []
        try:
            for part in form.files:
                result = await self._store_part(principal, session, part, fields, user_id,
                                                names=names)
                if result.meta is not None:
                    names.append(result.meta.name)
                results.append(result)
                if all_or_nothing and result.meta is None:
                    await self._undo(results)
                    break
        except BaseException:  # the store failed, or the client went away
            if all_or_nothing:
                await asyncio.shield(self._undo(results))
            raise
        return session, results

    async def _undo(self, results: list[UploadResult]) -> None:
        """Delete the files an all-or-nothing upload stored before one of its parts failed
        (each it can: one the store refuses to delete is logged, the others still go)."""
        for result in results:
            if result.meta is None:
                continue
            try:
                await self._remove(result.meta)
            except ServiceUnavailable as exc:
                logger.warning("a refused upload's file could not be deleted", extra={
                    "session_id": result.meta.session_id, "file_id": result.meta.id,
                    "detail": str(exc)})

    async def _store_part(self, principal: Principal, session: Session, part: FilePart,
                          fields: Mapping[str, str], user_id: str | None, *,
                          names: list[str]) -> UploadResult:
        try:
            name = check_path(part.filename)
        except BadRequest as exc:
            return UploadResult(filename=part.filename, error=exc.message)
        other = conflicting(name, names)
        if other is not None:
            return UploadResult(filename=name, error=(
                f"{name!r} conflicts with {other!r}, already in this session: a name cannot "
                "be both a file and a directory (delete one, or upload to another session)"))
        meta = FileMeta(
            id=new_id(), session_id=session.id, tenant=principal.tenant, name=name,
            size=part.size, sha256=part.sha256, content_type=guess_type(name, part.content_type),
            read_only=fields.get("read_only", "").strip().lower() in _TRUE,
            kind=fields.get("kind") or None, resource_id=fields.get("id") or None,
            version=fields.get("version") or None, user_id=user_id,
        )
        try:
            await self.store(meta, part.path)
        except QuotaExceeded as exc:
            return UploadResult(filename=name, error=exc.message, over_quota=True)
        return UploadResult(filename=name, meta=meta)

    async def get(self, principal: Principal, session_id: str, file_id: str) -> FileMeta:
        check_id(session_id, "session id")
        check_id(file_id, "file id")
        meta = await self.objects.get_meta(principal.tenant, session_id, file_id)
        if meta is None:
            raise NotFound("no such file")
        return meta

    async def find(self, principal: Principal, session_id: str, file_id: str) -> FileMeta:
        """Like ``get``, but a malformed id is a 404 too (it names no file)."""
        if not (is_valid_id(session_id) and is_valid_id(file_id)):
            raise NotFound("no such file")
        return await self.get(principal, session_id, file_id)

    async def list_session(self, principal: Principal, session_id: str) -> list[FileMeta]:
        check_id(session_id, "session id")
        return await self.objects.list_session(principal.tenant, session_id)

    async def open(self, meta: FileMeta) -> AsyncIterator[bytes] | None:
        """The file's bytes as a stream; None when they are gone: the metadata left
        behind is removed then (and the charge given back, once), so the file stops
        being listed, placed or offered for download.

        Bytes missing from a file stored less than ``LOST_BYTES_GRACE`` seconds ago are
        taken for a store that has not caught up (replication lag), not for a loss: a
        503, and nothing removed."""
        try:
            return await self.objects.open(meta)
        except FileBytesMissing as exc:
            extra = {"tenant": meta.tenant, "session_id": meta.session_id, "file_id": meta.id}
            if time.time() - meta.last_modified < LOST_BYTES_GRACE:
                logger.warning("stored file's bytes not readable yet", extra=extra)
                raise StorageUnavailable("a stored file's bytes are not readable yet",
                                         retry_after=2) from exc
            logger.warning("stored file without bytes: its metadata is removed", extra=extra)
            await self._remove(meta)
            return None

    async def still_stored(self, meta: FileMeta) -> bool:
        """Whether the file is still stored (its metadata is there)."""
        return await self.objects.get_meta(meta.tenant, meta.session_id, meta.id) is not None

    async def delete(self, principal: Principal, session_id: str, file_id: str) -> None:
        await self._remove(await self.get(principal, session_id, file_id))

    async def _remove(self, meta: FileMeta) -> None:
        """Delete a stored file and give its bytes back to the quota."""
        await self.objects.delete(meta)
        await self.release(meta)

    async def release(self, meta: FileMeta) -> None:
        """Give a deleted file's bytes back to its tenant's quota (once, even when a
        DELETE or a sweep raced this one): ``_remove``, and the ``FILE_TTL`` sweep."""
        if self.quotas is not None:
            await self.quotas.release(meta.tenant, file_charge(meta.session_id, meta.id),
                                      meta.size)

    async def has_files(self, tenant: str, session_id: str) -> bool:
        """Whether the session holds any stored file (one whose record expired is adopted
        back on its next use)."""
        return bool(await self.objects.list_session(tenant, session_id))

    async def inputs(self, principal: Principal, session: Session,
                     refs: Iterable[Mapping[str, Any]]) -> list[InputFile]:
        """``resolve_inputs`` without the list of what was left out."""
        return (await self.resolve_inputs(principal, session, refs))[0]

    async def resolve_inputs(self, principal: Principal, session: Session,
                             refs: Iterable[Mapping[str, Any]],
                             ) -> tuple[list[InputFile], list[dict[str, Any]]]:
        """The session's own files (newest per name) plus every referenced file, and the
        inputs left out, as ``skipped_files`` entries.

        A reference the caller may not read (another tenant's, or gone) is a 404,
        exactly like a missing file. Later entries win when two share a path. When
        one path is a directory prefix of another (``a`` and ``a/b.txt``, which no
        work dir can hold both of) the newer file (``last_modified``) is placed and
        the older one is left out, with its reason.
        """
        chosen: dict[str, InputFile] = {}
        if not session.is_new:
            for meta in await self.objects.list_session(principal.tenant, session.id):
                chosen[meta.name] = InputFile(meta.name, meta)  # oldest first: newest wins
            # What the code of an earlier execution deleted stays out (unless referenced)
            chosen = {path: item for path, item in chosen.items()
                      if not item.meta.deleted_in_sandbox}
        for ref in refs:
            meta = await self._referenced(principal, ref)
            name = ref.get("name")
            path = check_path(name) if isinstance(name, str) and name else meta.name
            chosen[path] = InputFile(path, meta)
        placed: list[InputFile] = []
        skipped: list[dict[str, Any]] = []
        newest_first = sorted(chosen.values(), reverse=True,
                              key=lambda item: (item.meta.last_modified, item.meta.id))
        for item in newest_first:
            problem = path_problem(item.path)  # stored before the name rules grew stricter
            if problem is not None:
                skipped.append({"name": item.path, "size": item.meta.size,
                                "reason": f"input not placed: its name is refused ({problem})"})
                continue
            other = conflicting(item.path, (kept.path for kept in placed))
            if other is None:
                placed.append(item)
            else:
                skipped.append({"name": item.path, "size": item.meta.size, "reason": (
                    f"input not placed: it conflicts with the newer file {other!r} "
                    "(a name cannot be both a file and a directory)")})
        kept_paths = {item.path for item in placed}
        inputs = [InputFile(item.path, await self.used(item.meta))
                  for item in chosen.values() if item.path in kept_paths]
        return inputs, skipped[::-1]

    async def deleted_in_sandbox(self, session_id: str, deleted: Iterable[InputFile]) -> None:
        """Inputs of the session's own that the code deleted: still stored (downloads,
        explicit references) but no longer placed in the session's later sandboxes.
        Called after the code ran, so a store failure is logged, never answered."""
        for item in deleted:
            if item.meta.session_id != session_id or item.meta.deleted_in_sandbox:
                continue  # another session's file: its own session still places it
            try:
                await self.objects.update_meta(attrs.evolve(item.meta, deleted_in_sandbox=True))
            except StorageUnavailable as exc:
                logger.warning("deleted input not marked", extra={
                    "session_id": session_id, "file_id": item.meta.id, "detail": str(exc)})

    async def _referenced(self, principal: Principal, ref: Mapping[str, Any]) -> FileMeta:
        if not isinstance(ref, Mapping):
            raise BadRequest("each entry of 'files' must be an object")
        file_id = ref.get("id")
        session_id = ref.get("storage_session_id") or ref.get("session_id")
        if not isinstance(file_id, str) or not isinstance(session_id, str):
            raise BadRequest("a file reference needs 'id' and 'storage_session_id' "
                             "(or 'session_id')")
        try:
            return await self.get(principal, session_id, file_id)
        except NotFound as exc:
            raise NotFound(f"file {file_id} not found") from exc
