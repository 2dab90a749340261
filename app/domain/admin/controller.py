"""HTTP routes of the operator API (admin keys only): ``GET /admin/overview``, and the
runtime sessions: ``GET /admin/runtime-sessions`` (``?tenant=``), ``DELETE
/admin/runtime-sessions/{id}`` (its kept sandbox, checkpoints and record)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, delete, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter

from ...auth import Principal
from ...errors import BadRequest, ErrorBody, NotFound, error_responses
from ...ids import is_valid_id
from ...runtime_sessions.operators import describe, end
from ..exec import ExecService
from .service import AdminService

__all__ = ["AdminController", "require_admin"]


async def require_admin(connection: ASGIConnection[Any, Any, Any, Any],
                        _: BaseRouteHandler) -> None:
    """403 unless the credential is one of ``ADMIN_API_KEYS`` (async: no thread hop)."""
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal) or not principal.admin:
        raise PermissionDeniedException("this route needs an admin key (ADMIN_API_KEYS)")


_FORBIDDEN = {403: ResponseSpec(data_container=ErrorBody,
                                description="Not an admin key (see ADMIN_API_KEYS)")}


class AdminController(Controller):
    """What operators look at: fed to the console's operator page."""

    path = "/admin"
    tags = ["admin"]
    guards = [require_admin]

    @get("/overview", responses={**error_responses(), **_FORBIDDEN},
         summary="Pools, recent executions, error rates, sessions per tenant (admin keys)")
    async def overview(self, admin_service: NamedDependency[AdminService],
                       limit: int = Parameter(default=100, ge=1, le=500,
                                              description="recent executions to return"),
                       ) -> dict[str, Any]:
        return await admin_service.overview(limit)

    @get("/runtime-sessions", responses={**error_responses(), **_FORBIDDEN},
         summary="Runtime sessions: tenant, hint, age, last use, workspace size, kept sandbox")
    async def runtime_sessions(self, exec_service: NamedDependency[ExecService],
                               tenant: str | None = Parameter(
                                   default=None, description="only this tenant's"),
                               ) -> list[dict[str, Any]]:
        if exec_service.runtime is None:
            return []  # the stateful profile is not served here
        return await describe(exec_service.runtime, tenant)

    @delete("/runtime-sessions/{runtime_session_id:str}", status_code=204,
            responses={**error_responses(404), **_FORBIDDEN},
            summary="End a runtime session: its kept sandbox, checkpoints and record")
    async def end_runtime_session(self, exec_service: NamedDependency[ExecService],
                                  runtime_session_id: FromPath[str]) -> None:
        if not is_valid_id(runtime_session_id):
            raise BadRequest("a runtime session id is 21 characters of [A-Za-z0-9_-]")
        if exec_service.runtime is None or not await end(exec_service.runtime,
                                                         runtime_session_id):
            raise NotFound("no such runtime session")
