"""``create_app()``: the one place where the application is wired together.

It builds the Litestar app with its controllers, the auth middleware, the error
handlers and the dependencies, and a lifespan that starts Valkey (embedded when
``VALKEY_URL`` is not set), the object store, the state service (its HMAC key and
archive sweep) and the execution backend, and stops them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import valkey.asyncio as valkey
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Server
from litestar.types import ControllerRouterHandler

from . import __version__
from .admission import Admission
from .after_response import AfterResponse
from .auth import V1_PREFIX, Authenticator, AuthMiddleware, KeyRing, RequestGate
from .backends import SandboxBackend, create_backend
from .console import console_router
from .domain.admin import AdminController, AdminService
from .domain.exec import ExecController, ExecService
from .domain.exec.recent import RecentExecutions
from .domain.files import FilesController, FileService
from .domain.health import HealthController
from .domain.metrics import MetricsController
from .domain.programmatic import (
    ContinuationTokens,
    ProgrammaticController,
    ProgrammaticService,
    RunStore,
)
from .domain.state import (
    StateController,
    StateService,
    StateSigner,
    StateStore,
    archive_sweep_interval,
    load_key,
    run_archive_expiry,
)
from .errors import exception_handlers
from .jwt_auth import JwtConfig
from .leases import SweepLease
from .metrics import Metrics, install_log_context
from .paths import scratch_dir
from .profiles import ExecutionProfiles, advertise_profile
from .refusals import DrainOnRefusal
from .runtime_sessions import Checkpoints, RuntimeRecords, RuntimeSessions, run_orphan_sweep
from .sessions import SessionStore
from .settings import Settings
from .storage import FileStore, create_object_store
from .storage.expiry import expiry_interval, run_expiry
from .storage.state_archive import StateArchive
from .tenants import KeyStore, TenantQuotas
from .valkey import EmbeddedValkey, connect

if TYPE_CHECKING:
    from .jwt_verify import JwtVerifier

__all__ = ["create_app"]

_REQUEST_OVERHEAD = 256 * 1024  # JSON framing, args and fields around the code


def _jwt_verifier(settings: Settings) -> JwtVerifier | None:
    if not (settings.jwt_public_key or settings.jwt_jwks_file or settings.jwt_keys_dir):
        return None
    from .jwt_verify import JwtVerifier  # PyJWT and cryptography: only when JWTs are used

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
    authenticator = Authenticator(KeyRing(settings.api_keys, settings.admin_api_keys),
                                  _jwt_verifier(settings), body_key=settings.body_key_auth)
    # Admission and the issued-key store, attached once Valkey is up (503 until then).
    gate = RequestGate()
    backend = backend or create_backend(settings)
    metrics = Metrics(backend)  # a registry of this app's own
    install_log_context()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tmp_dir = settings.data_dir / "tmp"  # uploads and outputs on their way to the store
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True, mode=0o700)
        scratch = scratch_dir(settings.data_dir, settings.scratch_path)  # sockets, sandboxes
        embedded = None
        url = settings.valkey_url
        if url is None:
            embedded = EmbeddedValkey(settings.data_dir / "valkey", scratch / "valkey.sock")
            await embedded.start()
            url = embedded.url
        client = connect(url)
        object_store = create_object_store(settings.object_store_url,
                                           settings.data_dir / "objects",
                                           dict(settings.object_store_options))
        files = FileStore(object_store)
        sessions = SessionStore(client, settings.session_ttl)
        # The longest an execution can hold its tenant's concurrency slot.
        execution_lease = settings.max_execution_time + settings.compile_timeout + 60
        quotas = TenantQuotas(client, settings.tenants)
        file_service = FileService(files, sessions, settings.file_ttl, quotas)
        state_service = StateService(
            settings.state,
            StateStore(client, StateArchive(object_store), settings.state.hot_ttl, quotas),
            StateSigner(load_key(settings.state.hmac_key, settings.data_dir)), sessions)
        recent = RecentExecutions(client)  # the operator page's recent executions
        runtime = (RuntimeSessions(  # the ``stateful`` profile
            settings, backend,
            RuntimeRecords(client, settings.runtime_sessions.max_age + 86400,
                           lock_seconds=execution_lease + 300),
            Checkpoints(object_store, files, tmp_dir, quotas), sessions)
            if "stateful" in settings.execution_profiles else None)
        app.state.update(
            admin_service=AdminService(client, backend, recent),
            settings=settings, valkey=client, backend=backend, file_service=file_service,
            state_service=state_service, metrics=metrics,
            exec_service=(exec_service := ExecService(
                settings, backend, sessions, file_service, state_service, metrics=metrics,
                recent=recent, runtime=runtime)),
            programmatic_service=ProgrammaticService(
                settings, exec_service, RunStore(client),
                ContinuationTokens(load_key(settings.state.hmac_key, settings.data_dir))),
            quotas=quotas,
        )
        gate.attach(Admission(client, settings, lease=execution_lease), KeyStore(client))
        await backend.start()
        tasks = [asyncio.create_task(state_service.run_archiver())]
        if runtime is not None:  # checkpoints of sessions whose record expired
            interval = settings.runtime_sessions.sweep_interval
            tasks.append(asyncio.create_task(run_orphan_sweep(
                runtime.records, runtime.checkpoints,
                SweepLease(client, "checkpoints", seconds=max(interval, 600)), interval)))
        if (archive_ttl := settings.state.archive_ttl) > 0:  # archived state's bytes too
            tasks.append(asyncio.create_task(run_archive_expiry(
                state_service.store, archive_ttl,
                SweepLease(client, "state-archives",
                           seconds=max(int(archive_sweep_interval(archive_ttl)), 600)))))
        if settings.file_ttl > 0:  # one replica at a time: a file's bytes given back once
            tasks.append(asyncio.create_task(run_expiry(
                files, settings.file_ttl,
                SweepLease(client, "files", seconds=max(int(expiry_interval(settings.file_ttl)),
                                                        600)),
                file_service.release)))
        try:
            yield
        finally:
            gate.detach()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # their cancellation ends
            await exec_service.close()  # records still being written
            await backend.stop()
            await client.aclose()
            if embedded is not None:
                await embedded.stop()
            with contextlib.suppress(OSError):  # left as it is if something is still in it
                scratch.rmdir()

    # The API's routes, served at the root and again under /v1 (the base URL of
    # LibreChat's documentation ends in /v1); the schema documents /v1 as a server.
    api_handlers: list[ControllerRouterHandler] = [
        ExecController, ProgrammaticController, FilesController, HealthController,
        StateController, MetricsController, AdminController]
    return Litestar(
        route_handlers=[*api_handlers, console_router(),
                        Router(V1_PREFIX, route_handlers=api_handlers, include_in_schema=False)],
        lifespan=[lifespan],
        # The expected execution profile is checked before authentication and admission.
        # Deferred work (recycling sandboxes) runs once each response is sent.
        middleware=[AfterResponse(), DrainOnRefusal(),
                    ExecutionProfiles(settings.execution_profiles),
                    AuthMiddleware(authenticator, gate)],
        before_send=[advertise_profile(settings.execution_profiles)],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        request_max_body_size=settings.max_code_size + _REQUEST_OVERHEAD,
        openapi_config=OpenAPIConfig(
            title="K8sInterpreter", version=__version__,
            servers=[Server(url="/"), Server(url=V1_PREFIX, description=(
                "the same routes under /v1, for base URLs in LibreChat's documented style"))]),
        dependencies={name: _state(attr) for name, attr in (
            ("valkey_client", "valkey"), ("backend", "backend"),
            ("exec_service", "exec_service"), ("file_service", "file_service"),
            ("state_service", "state_service"), ("metrics", "metrics"),
            ("admin_service", "admin_service"),
            ("programmatic_service", "programmatic_service"))},
        signature_namespace={"valkey": valkey, "SandboxBackend": SandboxBackend,
                             "ExecService": ExecService, "FileService": FileService,
                             "StateService": StateService, "Metrics": Metrics,
                             "AdminService": AdminService,
                             "ProgrammaticService": ProgrammaticService},
        logging_config=None,  # app/log.py configures JSON logs (k8si serve)
        debug=False,
    )
