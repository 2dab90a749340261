"""``create_app()``: the one place where the application is wired together.

It builds the Litestar app with its controllers, the auth middleware, the error
handlers and the dependencies, and a lifespan that starts Valkey (embedded when
``VALKEY_URL`` is not set), the object store and the execution backend, and stops
them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

import valkey.asyncio as valkey
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from . import __version__
from .auth import Authenticator, AuthMiddleware, KeyRing
from .backends import SandboxBackend, create_backend
from .domain.exec import ExecController, ExecService
from .domain.files import FilesController, FileService
from .domain.health import HealthController
from .errors import exception_handlers
from .jwt_auth import JwtConfig, JwtVerifier
from .ratelimit import RateLimiter
from .sessions import SessionStore
from .settings import Settings
from .storage import FileStore, create_object_store
from .storage.expiry import run_expiry
from .valkey import EmbeddedValkey, connect

__all__ = ["create_app"]

_REQUEST_OVERHEAD = 256 * 1024  # JSON framing, args and fields around the code


def _jwt_verifier(settings: Settings) -> JwtVerifier | None:
    if not (settings.jwt_public_key or settings.jwt_jwks_file or settings.jwt_keys_dir):
        return None
    return JwtVerifier(JwtConfig(
        public_key_pem=settings.jwt_public_key, jwks_path=settings.jwt_jwks_file,
        keys_dir=settings.jwt_keys_dir, issuer=settings.jwt_issuer,
        audience=settings.jwt_audience, leeway_seconds=settings.jwt_leeway))


def _state(name: str) -> Provide:
    def provide(state: State) -> object:
        return getattr(state, name)

    return Provide(provide, sync_to_thread=False)


def create_app(settings: Settings, backend: SandboxBackend | None = None) -> Litestar:
    """The ASGI application for ``settings`` (``backend`` only to share one in tests)."""
    authenticator = Authenticator(KeyRing(settings.api_keys), _jwt_verifier(settings),
                                  body_key=settings.body_key_auth)
    backend = backend or create_backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tmp_dir = settings.data_dir / "tmp"  # uploads and outputs on their way to the store
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True, mode=0o700)
        embedded = None
        url = settings.valkey_url
        if url is None:
            embedded = EmbeddedValkey(settings.data_dir / "valkey")
            await embedded.start()
            url = embedded.url
        client = connect(url)
        files = FileStore(create_object_store(settings.object_store_url,
                                              settings.data_dir / "objects",
                                              dict(settings.object_store_options)))
        sessions = SessionStore(client, settings.session_ttl)
        file_service = FileService(files, sessions, settings.file_ttl)
        app.state.update(
            settings=settings, valkey=client, backend=backend, file_service=file_service,
            exec_service=ExecService(settings, backend, sessions, file_service),
            rate_limiter=RateLimiter(client, settings.rate_limit_window,
                                     settings.rate_limit_tenant, settings.rate_limit_key),
        )
        await backend.start()
        expiry = (asyncio.create_task(run_expiry(files, settings.file_ttl))
                  if settings.file_ttl > 0 else None)
        try:
            yield
        finally:
            if expiry is not None:
                expiry.cancel()
            await backend.stop()
            await client.aclose()
            if embedded is not None:
                await embedded.stop()

    return Litestar(
        route_handlers=[ExecController, FilesController, HealthController],
        lifespan=[lifespan],
        middleware=[AuthMiddleware(authenticator)],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        request_max_body_size=settings.max_code_size + _REQUEST_OVERHEAD,
        openapi_config=OpenAPIConfig(title="K8sInterpreter", version=__version__),
        dependencies={name: _state(attr) for name, attr in (
            ("valkey_client", "valkey"), ("backend", "backend"),
            ("exec_service", "exec_service"), ("file_service", "file_service"))},
        signature_namespace={"valkey": valkey, "SandboxBackend": SandboxBackend,
                             "ExecService": ExecService, "FileService": FileService},
        debug=False,
    )
