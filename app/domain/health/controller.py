"""``GET /health`` (liveness, no auth) and ``GET /health/ready`` (dependencies)."""

from __future__ import annotations

from typing import Any

import attrs
import valkey.asyncio as valkey
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from valkey.exceptions import ValkeyError

from ... import __version__
from ...backends import SandboxBackend
from ...errors import ServiceUnavailable, error_responses
from ...storage import StorageUnavailable
from ..files import FileService

__all__ = ["HealthController"]


class HealthController(Controller):
    """Liveness answers from memory; readiness asks Valkey and the backend."""

    path = "/health"
    tags = ["health"]

    @get("/", exclude_from_auth=True, summary="Liveness (no auth, no dependency calls)")
    async def live(self) -> dict[str, str]:
        return {"status": "healthy", "version": __version__}

    @get(["/ready", "/detailed"], responses=error_responses(),
         summary="Readiness: Valkey, object store, backend and languages")
    async def ready(self, valkey_client: NamedDependency[valkey.Valkey],
                    backend: NamedDependency[SandboxBackend],
                    file_service: NamedDependency[FileService]) -> Response[dict[str, Any]]:
        services: dict[str, dict[str, Any]] = {}
        try:
            await valkey_client.ping()
            services["valkey"] = {"status": "healthy"}
        except (ValkeyError, OSError) as exc:
            services["valkey"] = {"status": "unhealthy", "error": str(exc)}
        try:
            await file_service.objects.ping()
            services["object_store"] = {"status": "healthy"}
        except StorageUnavailable as exc:
            services["object_store"] = {"status": "unhealthy", "error": exc.message}
        backend_health = await backend.health()
        services["backend"] = {"status": "healthy" if backend_health["ok"] else "unhealthy",
                               **backend_health}
        languages = await backend.languages()
        services["languages"] = {
            "status": "healthy",
            "available": {c: s.version for c, s in languages.items() if s.available},
            "unavailable": {c: s.reason for c, s in languages.items() if not s.available},
        }
        try:
            services["pools"] = {"status": "healthy", **{
                code: attrs.asdict(pool) for code, pool in (await backend.pools()).items()
                if pool.target}}
        except ServiceUnavailable as exc:  # the execution plane cannot be asked
            services["pools"] = {"status": "unhealthy", "error": exc.message}
        unhealthy = [name for name, s in services.items() if s["status"] != "healthy"]
        status = "unhealthy" if unhealthy else "healthy"
        summary = (f"unhealthy: {', '.join(unhealthy)}" if unhealthy else
                   f"{len(services['languages']['available'])} of {len(languages)} "
                   "languages available")
        return Response({"status": status, "services": services, "summary": summary},
                        status_code=503 if unhealthy else 200)

    @get("/kubernetes", responses=error_responses(),
         summary="The execution plane as it reports itself (apiserver, namespace)")
    async def kubernetes(self, backend: NamedDependency[SandboxBackend],
                         ) -> Response[dict[str, Any]]:
        health = await backend.health()
        return Response({"status": "healthy" if health["ok"] else "unhealthy", **health},
                        status_code=200 if health["ok"] else 503)

    @get("/pool", responses=error_responses(),
         summary="Warm, starting and claimed sandboxes per language")
    async def pool(self, backend: NamedDependency[SandboxBackend]) -> dict[str, Any]:
        pools = await backend.pools()
        return {"backend": backend.name,
                "pools": {code: attrs.asdict(p) for code, p in pools.items()}}
