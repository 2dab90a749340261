"""``create_app()``: the one place where the application is wired together.

It builds the Litestar app with its controllers, the auth middleware, the error
handlers and the dependencies, and a lifespan that starts Valkey (embedded when
``VALKEY_URL`` is not set) and the execution backend, and stops them again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import valkey.asyncio as valkey
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from . import __version__
from .auth import ApiKeyMiddleware, KeyRing
from .backends import SandboxBackend, create_backend
from .domain.exec import ExecController, ExecService
from .domain.health import HealthController
from .errors import exception_handlers
from .sessions import SessionStore
from .settings import Settings
from .valkey import EmbeddedValkey, connect

__all__ = ["create_app"]

_REQUEST_OVERHEAD = 256 * 1024  # JSON framing, args and fields around the code


def _valkey_client(state: State) -> valkey.Valkey:
    client: valkey.Valkey = state.valkey
    return client


def _backend(state: State) -> SandboxBackend:
    backend: SandboxBackend = state.backend
    return backend


def _exec_service(state: State) -> ExecService:
    service: ExecService = state.exec_service
    return service


def create_app(settings: Settings, backend: SandboxBackend | None = None) -> Litestar:
    """The ASGI application for ``settings`` (``backend`` only to share one in tests)."""
    keyring = KeyRing(settings.api_keys)
    backend = backend or create_backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        embedded = None
        url = settings.valkey_url
        if url is None:
            embedded = EmbeddedValkey(settings.data_dir / "valkey")
            await embedded.start()
            url = embedded.url
        client = connect(url)
        app.state.valkey = client
        app.state.backend = backend
        app.state.exec_service = ExecService(settings, backend,
                                             SessionStore(client, settings.session_ttl))
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()
            await client.aclose()
            if embedded is not None:
                await embedded.stop()

    return Litestar(
        route_handlers=[ExecController, HealthController],
        lifespan=[lifespan],
        middleware=[DefineMiddleware(ApiKeyMiddleware, keyring=keyring,
                                     exclude=["^/health$", "^/schema"])],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        request_max_body_size=settings.max_code_size + _REQUEST_OVERHEAD,
        openapi_config=OpenAPIConfig(title="K8sInterpreter", version=__version__),
        dependencies={
            "valkey_client": Provide(_valkey_client, sync_to_thread=False),
            "backend": Provide(_backend, sync_to_thread=False),
            "exec_service": Provide(_exec_service, sync_to_thread=False),
        },
        signature_namespace={"valkey": valkey, "SandboxBackend": SandboxBackend,
                             "ExecService": ExecService},
        debug=False,
    )
