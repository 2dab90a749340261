"""HTTP routes of the files area (upload, download, list, probe, delete)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from ...auth import Principal
from ...errors import BadRequest, NotFound, error_responses
from ...ids import is_valid_id
from ...tenants import QuotaExceeded
from .multipart import read_multipart
from .schemas import DETAILS, in_scope, listing, object_info
from .service import FileService, UploadResult, served_type

__all__ = ["FilesController"]


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266/5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                       for c in name.rsplit("/", 1)[-1])
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


LISTING_DESCRIPTION = (
    "`detail=simple` (default): `\"<session_id>/<file_id>\"` strings. `summary`: "
    "`{name: \"<session_id>/<file_id>\", size, lastModified, etag}`. `full` (what "
    "today's LibreChat client parses): `{id, name: \"<session_id>/<file_id>.<ext>\", "
    "storage_session_id, size, lastModified, etag, contentType, metadata: "
    "{\"original-filename\", \"content-type\"}}` plus `kind`/`resource_id`/`version`/"
    "`read_only` when the upload set them. `normalized`: `{id, name, storage_session_id, "
    "size, contentType, lastModified, read_only?}`. `kind`, `id`, `version` narrow the "
    "list to files uploaded with that scope (files without one, such as outputs, stay). "
    "An unknown or malformed session answers `[]`.")


def _file_reply(result: UploadResult) -> dict[str, Any]:
    if result.meta is None:
        return {"status": "error", "filename": result.filename, "error": result.error}
    return {"status": "success", "fileId": result.meta.id, "id": result.meta.id,
            "filename": result.meta.name, "name": result.meta.name, "size": result.meta.size,
            "storage_session_id": result.meta.session_id}


class FilesController(Controller):
    """Files live in the object store, owned by (tenant, session)."""

    tags = ["files"]

    async def _upload(self, request: Request[Principal, Any, Any], service: FileService, *,
                      all_or_nothing: bool) -> tuple[str, list[UploadResult]]:
        settings = request.app.state.settings
        form = await read_multipart(request.headers.get("content-type"), request.stream(),
                                    settings.data_dir / "tmp", settings.max_upload_size,
                                    settings.max_upload_files)
        try:
            if not form.files:
                raise BadRequest("no file part in the request (field 'file' or 'files')")
            session, results = await service.upload(request.user, form,
                                                    request.headers.get("user-id"),
                                                    all_or_nothing=all_or_nothing)
        finally:
            form.close()
        return session.id, results

    @post("/upload", status_code=200, request_max_body_size=None,
          responses=error_responses(413, 415),
          summary="Upload files (multipart: 'file' or 'files' parts)",
          description="All or nothing: a refused part (a bad name: 400; the tenant's "
                      "storage quota full: 413 `quota_exceeded`) refuses the request.")
    async def upload(self, request: Request[Principal, Any, Any],
                     file_service: NamedDependency[FileService]) -> dict[str, Any]:
        session_id, results = await self._upload(request, file_service, all_or_nothing=True)
        failed = [r for r in results if r.meta is None]
        if failed:  # nothing of the request is kept (the service deleted what it stored)
            message = f"{failed[0].filename!r}: {failed[0].error}"
            raise QuotaExceeded(message) if failed[0].over_quota else BadRequest(message)
        return {"message": "success", "session_id": session_id,
                "storage_session_id": session_id,
                "files": [_file_reply(r) for r in results]}

    @post("/upload/batch", status_code=200, request_max_body_size=None,
          responses=error_responses(413, 415),
          summary="Upload many files; each reports success or error")
    async def upload_batch(self, request: Request[Principal, Any, Any],
                           file_service: NamedDependency[FileService]) -> Response[Any]:
        session_id, results = await self._upload(request, file_service, all_or_nothing=False)
        succeeded = sum(1 for r in results if r.meta is not None)
        failed = len(results) - succeeded
        message = "success" if not failed else "partial_success" if succeeded else "error"
        body = {"message": message, "session_id": session_id, "storage_session_id": session_id,
                "files": [_file_reply(r) for r in results], "succeeded": succeeded,
                "failed": failed}
        return Response(body, status_code=400 if not succeeded else 200)

    @get("/download/{session_id:str}/{file_id:str}", responses=error_responses(404),
         summary="Download a file's bytes")
    async def download(self, request: Request[Principal, Any, Any], session_id: FromPath[str],
                       file_id: FromPath[str],
                       file_service: NamedDependency[FileService]) -> Stream:
        # Any id that names no file of the caller's is a 404, malformed ones included.
        meta = await file_service.used(await file_service.find(request.user, session_id,
                                                               file_id))
        chunks = await file_service.open(meta)
        if chunks is None:  # its bytes are gone (the metadata is removed now)
            raise NotFound("no such file")
        return Stream(chunks, media_type=served_type(meta),
                      headers={"Content-Disposition": content_disposition(meta.name),
                               "Content-Length": str(meta.size), "ETag": meta.etag,
                               "X-Content-Type-Options": "nosniff"})

    @get("/files/{session_id:str}", responses=error_responses(),
         summary="List a session's files",
         description=LISTING_DESCRIPTION)
    async def list_files(self, request: Request[Principal, Any, Any], session_id: FromPath[str],
                         file_service: NamedDependency[FileService], *,
                         detail: FromQuery[str] = "simple",
                         kind: FromQuery[str | None] = None,
                         resource_id: Annotated[str | None, QueryParameter(name="id")] = None,
                         version: FromQuery[str | None] = None) -> list[Any]:
        if detail not in DETAILS:
            raise BadRequest(f"detail must be one of {', '.join(DETAILS)}")
        if not is_valid_id(session_id):
            return []  # names no session: nothing to list (never a 400 for the client)
        return [listing(meta, detail) for meta in
                await file_service.list_session(request.user, session_id)
                if in_scope(meta, kind, resource_id, version)]

    @get("/sessions/{session_id:str}/objects/{file_id:str}", responses=error_responses(404),
         summary="Freshness probe: is this file still stored?")
    async def probe(self, request: Request[Principal, Any, Any], session_id: FromPath[str],
                    file_id: FromPath[str],
                    file_service: NamedDependency[FileService]) -> dict[str, Any]:
        return object_info(await file_service.get(request.user, session_id, file_id))

    @delete(["/files/{session_id:str}/{file_id:str}",
             "/sessions/{session_id:str}/objects/{file_id:str}"], status_code=200,
            responses=error_responses(404), summary="Delete a file")
    async def delete_file(self, request: Request[Principal, Any, Any], session_id: FromPath[str],
                          file_id: FromPath[str], file_service: NamedDependency[FileService],
                          ) -> dict[str, Any]:
        await file_service.delete(request.user, session_id, file_id)
        return {"message": "deleted", "id": file_id, "session_id": session_id}
