"""HTTP routes of the operator API: ``GET /admin/overview`` (admin keys only)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from ...auth import Principal
from ...errors import ErrorBody, error_responses
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
