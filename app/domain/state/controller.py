"""HTTP routes of the state area: ``GET/POST/DELETE /state/{session_id}``, ``/info``.

``GET`` answers the raw blob (``application/octet-stream``) with an ``ETag`` (the
quoted SHA-256), or 304 when ``If-None-Match`` names it. ``POST`` takes a raw body,
capped while it streams, and stores it signed for the caller's session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType as MediaTypeSpec
from litestar.openapi.spec import Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, HeaderParameter

from ...auth import Principal
from ...errors import UnsupportedMediaType, error_responses
from .schemas import StateInfo, StateUploaded
from .service import StateService

__all__ = ["StateController"]

_OCTET_STREAM = "application/octet-stream"
_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)


@dataclass
class _RawBodyOperation(Operation):
    """Documents the raw ``application/octet-stream`` body that the route streams."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={_OCTET_STREAM: MediaTypeSpec(schema=_BINARY)}, required=True,
            description="The state blob, as GET /state/{session_id} returned it")


def _etag(sha256: str) -> str:
    return f'"{sha256}"'


def _matches(if_none_match: str | None, sha256: str) -> bool:
    """Whether ``If-None-Match`` names this blob (``*``, weak or strong, in a list)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        tag = tag[2:] if tag.startswith("W/") else tag
        if tag == "*" or tag == _etag(sha256):
            return True
    return False


class StateController(Controller):
    """The Python state of the caller's sessions, as opaque signed blobs."""

    path = "/state"
    tags = ["state"]

    @get("/{session_id:str}", media_type=_OCTET_STREAM,
         responses={304: ResponseSpec(None, description="Not modified (If-None-Match)"),
                    **error_responses(404)},
         summary="Download a session's state blob (raw bytes, with an ETag)")
    async def download(
        self, request: Request[Principal, Any, Any], session_id: FromPath[str],
        state_service: NamedDependency[StateService],
        if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match")] = None,
    ) -> Response[bytes]:
        if if_none_match:
            current = await state_service.etag(request.user, session_id)
            if current is not None and _matches(if_none_match, current):
                return Response(b"", status_code=304, headers={"ETag": _etag(current)},
                                media_type=_OCTET_STREAM)
        record = await state_service.download(request.user, session_id)
        return Response(record.blob, media_type=_OCTET_STREAM,
                        headers={"ETag": _etag(record.header.sha256),
                                 "X-Content-Type-Options": "nosniff"})

    @get("/{session_id:str}/info", responses=error_responses(),
         summary="What is stored for a session's state (no blob)")
    async def info(self, request: Request[Principal, Any, Any], session_id: FromPath[str],
                   state_service: NamedDependency[StateService]) -> StateInfo:
        return await state_service.info(request.user, session_id)

    @post("/{session_id:str}", status_code=201, request_max_body_size=None,
          operation_class=_RawBodyOperation, responses=error_responses(404, 413, 415),
          summary="Upload a state blob for a session (signed for it by the API)")
    async def upload(self, request: Request[Principal, Any, Any], session_id: FromPath[str],
                     state_service: NamedDependency[StateService]) -> StateUploaded:
        media_type = request.headers.get("content-type", _OCTET_STREAM)
        if media_type.split(";")[0].strip().lower() != _OCTET_STREAM:
            raise UnsupportedMediaType(f"expected Content-Type: {_OCTET_STREAM}")
        return await state_service.upload(request.user, session_id, request.stream())

    @delete("/{session_id:str}", status_code=204, responses=error_responses(),
            summary="Delete a session's state (hot copy and archive)")
    async def delete_state(self, request: Request[Principal, Any, Any],
                           session_id: FromPath[str],
                           state_service: NamedDependency[StateService]) -> None:
        await state_service.delete(request.user, session_id)
