"""HTTP routes of the exec area: ``POST /exec``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody

from ...auth import Principal
from ...errors import UnsupportedMediaType, error_responses
from ...ids import is_valid_id, new_id
from .schemas import ExecRequest, ExecResponse
from .service import ExecService

__all__ = ["ExecController"]


def require_json(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """415 for a body that is not JSON (before anything tries to decode it)."""
    media_type = connection.headers.get("content-type", "application/json")
    if media_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("expected Content-Type: application/json")


class ExecController(Controller):
    """Runs code; the program's own failures are 200 results, not errors."""

    path = "/exec"
    tags = ["exec"]

    @post("/", status_code=200, guards=[require_json], responses=error_responses(404, 413, 415),
          summary="Run code in a fresh sandbox")
    async def execute(self, request: Request[Principal, Any, Any], data: JSONBody[ExecRequest],
                      exec_service: NamedDependency[ExecService]) -> Response[ExecResponse]:
        supplied = request.headers.get("x-request-id", "")
        request_id = supplied if is_valid_id(supplied) else new_id()
        result = await exec_service.execute(request.user, data, request_id)
        return Response(result, headers={"X-Request-ID": request_id})
