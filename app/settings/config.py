"""``Settings``: the service's configuration, one typed object read from the environment.

Every variable is documented in the README's configuration tables (a test holds them
to the fields' defaults). Its sections are in ``sections.py``; reading one variable
is ``environment.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from sidecar.contract import LANGUAGES

from .environment import SettingsError, env_bool, env_choice, env_int
from .sections import (
    KubernetesSettings,
    ProgrammaticSettings,
    RuntimeSessionSettings,
    StateSettings,
    TenantSettings,
)

__all__ = ["EXECUTION_PROFILES", "Settings"]


#: Every execution profile (``X-CodeAPI-Expected-Profile``; see ``app/profiles.py``).
EXECUTION_PROFILES = ("default", "stateful")
#: The profiles this code can serve (``stateful``: runtime sessions).
_SERVABLE_PROFILES = ("default", "stateful")


def _check_profiles(_: object, __: object, value: tuple[str, ...]) -> None:
    if not value:
        raise SettingsError("EXECUTION_PROFILES must name at least one profile")
    for name in value:
        if name not in EXECUTION_PROFILES:
            raise SettingsError(f"EXECUTION_PROFILES: {name!r} is not a profile; "
                                f"profiles: {', '.join(EXECUTION_PROFILES)}")
        if name not in _SERVABLE_PROFILES:
            raise SettingsError(f"EXECUTION_PROFILES: {name!r} cannot be served yet "
                                "(it needs runtime sessions, which are not built)")


def _profiles(env: Mapping[str, str], backend: str) -> tuple[str, ...]:
    """``EXECUTION_PROFILES``; unset: both on the local backend, ``default`` on Kubernetes
    (where kept pods are opt-in: ``default,stateful``)."""
    raw = env.get("EXECUTION_PROFILES", "").strip() or (
        "default,stateful" if backend == "local" else "default")
    return tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))


# obstore option -> environment variable, for OBJECT_STORE_URL=s3://...
_STORE_OPTIONS = {
    "endpoint": "S3_ENDPOINT", "region": "S3_REGION", "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN",
    "allow_http": "S3_ALLOW_HTTP",
}


@attrs.frozen
class Settings:
    """The service's configuration; build it with ``Settings.from_env()``."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Static API keys (``API_KEYS``, comma-separated); empty means "generate one".
    api_keys: tuple[str, ...] = ()
    data_dir: Path = Path(".k8si")
    #: ``None`` starts the embedded Valkey server under ``data_dir``.
    valkey_url: str | None = None
    execution_backend: str = "local"
    pool_enabled: bool = True
    pool_warmup_on_startup: bool = True
    pool_sizes: Mapping[str, int] = attrs.field(factory=lambda: {"py": 2})
    #: The longest timeout a request may ask for, and the one used when it asks none.
    max_execution_time: int = 60
    default_execution_time: int = 30
    compile_timeout: int = 60
    max_memory_mb: int = 512
    #: Per-stream cap inside the sandbox (the program is killed at it).
    max_output_size: int = 1024 * 1024
    #: Per-stream cap in the API response (cut with a visible marker).
    response_output_limit: int = 64 * 1024
    max_code_size: int = 1024 * 1024
    max_processes: int = 128
    sandbox_workdir_mb: int = 256
    sandbox_tmp_mb: int = 256
    max_concurrent_executions: int = 8
    #: How long a request may wait for a free execution slot before a 503 (and for a
    #: tenant concurrency slot before a 429).
    queue_timeout: int = 30
    #: Seconds between the spaces a long ``/exec`` sends before its JSON; 0: none.
    exec_keepalive_interval: int = 5
    session_ttl: int = 24 * 3600
    python_preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot")
    log_level: str = "INFO"
    #: The local backend's Python runtime (a virtual environment) and its caches;
    #: ``None`` means ``<data_dir>/runtime``.
    runtime_path: Path | None = None
    #: ``None``: a local directory (``<data_dir>/objects``); else e.g. ``s3://bucket``.
    object_store_url: str | None = None
    #: obstore configuration for a remote store (endpoint, region, credentials).
    object_store_options: Mapping[str, str] = attrs.field(factory=dict)
    max_upload_size: int = 128 * 1024 * 1024
    max_upload_files: int = 20
    max_output_files: int = 50
    max_output_file_size: int = 64 * 1024 * 1024
    #: Seconds a file is kept after its last use; 0 keeps files until deleted.
    file_ttl: int = 0
    jwt_public_key: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_keys_dir: Path | None = None
    jwt_issuer: str = "librechat"
    jwt_audience: str = "codeapi"
    jwt_leeway: int = 30
    #: Accept the key in the JSON body (old clients that sent no header).
    body_key_auth: bool = False
    rate_limit_window: int = 60
    #: Requests per window for a tenant, and for one credential; 0 disables.
    rate_limit_tenant: int = 1200
    rate_limit_key: int = 600
    state: StateSettings = attrs.field(factory=StateSettings)
    programmatic: ProgrammaticSettings = attrs.field(factory=ProgrammaticSettings)
    kubernetes: KubernetesSettings = attrs.field(factory=KubernetesSettings)
    tenants: TenantSettings = attrs.field(factory=TenantSettings)
    #: Keys that may use the operator API (``/admin``); they are API keys too.
    admin_api_keys: tuple[str, ...] = ()
    #: How local sandboxes start: ``zygote`` (the default: a pre-imported Python that
    #: forks into namespaces it sets up itself, held to nsjail's posture by the parity
    #: test; root, cgroups and x86-64 only, else nsjail with the reason in
    #: ``/health/ready``), or ``nsjail`` (every sandbox a fresh nsjail process).
    sandbox_factory: str = "zygote"
    #: Zygote sandboxes copy the pages a request writes before the claim (calibration).
    sandbox_prefault: bool = True
    #: A zygote (one tenant's, sharing its layout and hash secret with its sandboxes) is
    #: replaced after this many sandboxes, or this many seconds after its first one.
    zygote_generation_sandboxes: int = 1000
    zygote_generation_seconds: int = 900
    #: Tenants with a zygote of their own at once (plus one spare); the least recently
    #: used one's is retired when another tenant needs one.
    zygote_max_generations: int = 4
    #: The execution profiles served (``X-CodeAPI-Expected-Profile``); others get a 409.
    execution_profiles: tuple[str, ...] = attrs.field(default=("default",),
                                                      validator=_check_profiles)
    runtime_sessions: RuntimeSessionSettings = attrs.field(factory=RuntimeSessionSettings)

    @property
    def runtime_dir(self) -> Path:
        return self.runtime_path or self.data_dir / "runtime"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()  # each default is stated once, on its field
        pool_sizes = dict(d.pool_sizes)
        for code in LANGUAGES:
            name = f"POD_POOL_{code.upper()}"
            if name in env:
                pool_sizes[code] = env_int(env, name, 0)
        backend = env.get("EXECUTION_BACKEND", "").strip().lower() or d.execution_backend
        if backend not in ("local", "kubernetes"):
            raise SettingsError(f"EXECUTION_BACKEND={backend!r} is not supported; "
                                "use 'local' or 'kubernetes'")
        settings = cls(
            host=env.get("HOST", d.host),
            port=env_int(env, "PORT", d.port, minimum=1),
            api_keys=tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()),
            data_dir=Path(env.get("DATA_DIR") or d.data_dir).absolute(),
            valkey_url=env.get("VALKEY_URL") or None,
            execution_backend=backend,
            pool_enabled=env_bool(env, "POD_POOL_ENABLED", d.pool_enabled),
            pool_warmup_on_startup=env_bool(env, "POD_POOL_WARMUP_ON_STARTUP",
                                         d.pool_warmup_on_startup),
            pool_sizes=pool_sizes,
            max_execution_time=env_int(env, "MAX_EXECUTION_TIME", d.max_execution_time, minimum=1),
            default_execution_time=env_int(env, "DEFAULT_EXECUTION_TIME",
                                        d.default_execution_time, minimum=1),
            compile_timeout=env_int(env, "COMPILE_TIMEOUT", d.compile_timeout, minimum=1),
            max_memory_mb=env_int(env, "MAX_MEMORY_MB", d.max_memory_mb, minimum=32),
            max_output_size=env_int(env, "MAX_OUTPUT_SIZE", d.max_output_size, minimum=1024),
            response_output_limit=env_int(env, "RESPONSE_OUTPUT_LIMIT",
                                       d.response_output_limit, minimum=1024),
            max_code_size=env_int(env, "MAX_CODE_SIZE", d.max_code_size, minimum=1024),
            max_processes=env_int(env, "MAX_PROCESSES", d.max_processes, minimum=8),
            sandbox_workdir_mb=env_int(env, "SANDBOX_WORKDIR_MB", d.sandbox_workdir_mb, minimum=1),
            sandbox_tmp_mb=env_int(env, "SANDBOX_TMP_MB", d.sandbox_tmp_mb, minimum=16),
            max_concurrent_executions=env_int(env, "MAX_CONCURRENT_EXECUTIONS",
                                           d.max_concurrent_executions, minimum=1),
            queue_timeout=env_int(env, "QUEUE_TIMEOUT", d.queue_timeout, minimum=0),
            exec_keepalive_interval=env_int(env, "EXEC_KEEPALIVE_INTERVAL",
                                            d.exec_keepalive_interval),
            session_ttl=env_int(env, "SESSION_TTL", d.session_ttl, minimum=60),
            python_preload=tuple(m.strip() for m in env.get(
                "PYTHON_PRELOAD", ",".join(d.python_preload)).split(",")
                if m.strip()),
            log_level=env.get("LOG_LEVEL", d.log_level).upper(),
            runtime_path=Path(env["RUNTIME_DIR"]).absolute() if env.get("RUNTIME_DIR") else None,
            object_store_url=env.get("OBJECT_STORE_URL") or None,
            object_store_options={
                option: env[name] for option, name in _STORE_OPTIONS.items() if env.get(name)},
            max_upload_size=env_int(env, "MAX_UPLOAD_SIZE", d.max_upload_size, minimum=1),
            max_upload_files=env_int(env, "MAX_UPLOAD_FILES", d.max_upload_files, minimum=1),
            max_output_files=env_int(env, "MAX_OUTPUT_FILES", d.max_output_files, minimum=0),
            max_output_file_size=env_int(env, "MAX_OUTPUT_FILE_SIZE",
                                      d.max_output_file_size, minimum=1),
            file_ttl=env_int(env, "FILE_TTL", d.file_ttl),
            jwt_public_key=env.get("JWT_PUBLIC_KEY") or None,
            jwt_jwks_file=Path(env["JWT_JWKS_FILE"]) if env.get("JWT_JWKS_FILE") else None,
            jwt_keys_dir=Path(env["JWT_KEYS_DIR"]) if env.get("JWT_KEYS_DIR") else None,
            jwt_issuer=env.get("JWT_ISSUER", d.jwt_issuer),
            jwt_audience=env.get("JWT_AUDIENCE", d.jwt_audience),
            jwt_leeway=env_int(env, "JWT_LEEWAY", d.jwt_leeway),
            body_key_auth=env_bool(env, "BODY_KEY_AUTH", d.body_key_auth),
            rate_limit_window=env_int(env, "RATE_LIMIT_WINDOW", d.rate_limit_window, minimum=1),
            rate_limit_tenant=env_int(env, "RATE_LIMIT_TENANT", d.rate_limit_tenant),
            rate_limit_key=env_int(env, "RATE_LIMIT_KEY", d.rate_limit_key),
            state=StateSettings.from_env(env),
            programmatic=ProgrammaticSettings.from_env(env),
            kubernetes=KubernetesSettings.from_env(env),
            tenants=TenantSettings.from_env(env),
            admin_api_keys=tuple(k.strip() for k in env.get("ADMIN_API_KEYS", "").split(",")
                                 if k.strip()),
            sandbox_factory=env_choice(env, "SANDBOX_FACTORY", d.sandbox_factory,
                                    ("zygote", "nsjail")),
            sandbox_prefault=env_bool(env, "SANDBOX_PREFAULT", d.sandbox_prefault),
            zygote_generation_sandboxes=env_int(env, "ZYGOTE_GENERATION_SANDBOXES",
                                             d.zygote_generation_sandboxes,
                                             minimum=1),
            zygote_generation_seconds=env_int(env, "ZYGOTE_GENERATION_SECONDS",
                                           d.zygote_generation_seconds, minimum=1),
            zygote_max_generations=env_int(env, "ZYGOTE_MAX_GENERATIONS",
                                        d.zygote_max_generations, minimum=1),
            execution_profiles=_profiles(env, backend),
            runtime_sessions=RuntimeSessionSettings.from_env(env),
        )
        if settings.default_execution_time > settings.max_execution_time:
            raise SettingsError("DEFAULT_EXECUTION_TIME must not exceed MAX_EXECUTION_TIME")
        return settings

    def pool_size(self, lang: str) -> int:
        """Warm sandboxes to keep for a language (0 when pools are disabled)."""
        return self.pool_sizes.get(lang, 0) if self.pool_enabled else 0
