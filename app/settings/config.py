"""``Settings``: the service's configuration, one typed object read from the environment.

Every variable is documented in the README's configuration tables (a test holds them
to the fields' defaults). Each field names its variable, default and reader once
(``fields.py``); the sections are in ``sections.py``; reading one variable is
``environment.py``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from sidecar.contract import LANGUAGES

from .environment import SettingsError, env_int
from .fields import (
    boolean,
    choice,
    directory,
    integer,
    names,
    optional_path,
    optional_text,
    read_env,
    section,
    text,
)
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

    host: str = text("HOST", "127.0.0.1")
    port: int = integer("PORT", 8000, minimum=1)
    #: Proxies (addresses or networks) whose ``X-Forwarded-For`` names the client; empty:
    #: the peer address is the client's (per-address limits, the brute-force guard).
    forwarded_allow_ips: tuple[str, ...] = names("FORWARDED_ALLOW_IPS")
    #: Static API keys (``API_KEYS``, comma-separated); empty means "generate one".
    api_keys: tuple[str, ...] = names("API_KEYS")
    data_dir: Path = directory("DATA_DIR", Path(".k8si"))
    #: ``None`` starts the embedded Valkey server under ``data_dir``.
    valkey_url: str | None = optional_text("VALKEY_URL")
    execution_backend: str = choice("EXECUTION_BACKEND", "local", ("local", "kubernetes"))
    pool_enabled: bool = boolean("POD_POOL_ENABLED", True)
    pool_warmup_on_startup: bool = boolean("POD_POOL_WARMUP_ON_STARTUP", True)
    #: Warm sandboxes per language (``POD_POOL_<LANG>``).
    pool_sizes: Mapping[str, int] = attrs.field(factory=lambda: {"py": 2})
    #: The longest timeout a request may ask for, and the one used when it asks none.
    max_execution_time: int = integer("MAX_EXECUTION_TIME", 60, minimum=1)
    default_execution_time: int = integer("DEFAULT_EXECUTION_TIME", 30, minimum=1)
    compile_timeout: int = integer("COMPILE_TIMEOUT", 60, minimum=1)
    max_memory_mb: int = integer("MAX_MEMORY_MB", 512, minimum=32)
    #: Per-stream cap inside the sandbox (the program is killed at it).
    max_output_size: int = integer("MAX_OUTPUT_SIZE", 1024 * 1024, minimum=1024)
    #: Per-stream cap in the API response (cut with a visible marker).
    response_output_limit: int = integer("RESPONSE_OUTPUT_LIMIT", 64 * 1024, minimum=1024)
    max_code_size: int = integer("MAX_CODE_SIZE", 1024 * 1024, minimum=1024)
    max_processes: int = integer("MAX_PROCESSES", 128, minimum=8)
    sandbox_workdir_mb: int = integer("SANDBOX_WORKDIR_MB", 256, minimum=1)
    sandbox_tmp_mb: int = integer("SANDBOX_TMP_MB", 256, minimum=16)
    max_concurrent_executions: int = integer("MAX_CONCURRENT_EXECUTIONS", 8, minimum=1)
    #: How long a request may wait for a free execution slot before a 503 (and for a
    #: tenant concurrency slot before a 429).
    queue_timeout: int = integer("QUEUE_TIMEOUT", 30)
    #: Seconds between the spaces a long ``/exec`` sends before its JSON; 0: none.
    exec_keepalive_interval: int = integer("EXEC_KEEPALIVE_INTERVAL", 5)
    session_ttl: int = integer("SESSION_TTL", 24 * 3600, minimum=60)
    python_preload: tuple[str, ...] = names(
        "PYTHON_PRELOAD", ("numpy", "pandas", "matplotlib", "matplotlib.pyplot"))
    log_level: str = text("LOG_LEVEL", "INFO", upper=True)
    #: The local backend's Python runtime (a virtual environment) and its caches;
    #: ``None`` means ``<data_dir>/runtime``.
    runtime_path: Path | None = optional_path("RUNTIME_DIR", absolute=True)
    #: The unix sockets and the sandboxes' directories (``app/paths.py``); ``None``: a
    #: private directory on ``/dev/shm`` (a tmpfs), else in the temporary directory.
    scratch_path: Path | None = optional_path("SCRATCH_DIR", absolute=True)
    #: ``None``: a local directory (``<data_dir>/objects``); else e.g. ``s3://bucket``.
    object_store_url: str | None = optional_text("OBJECT_STORE_URL")
    #: obstore configuration for a remote store (endpoint, region, credentials).
    object_store_options: Mapping[str, str] = attrs.field(factory=dict)
    max_upload_size: int = integer("MAX_UPLOAD_SIZE", 128 * 1024 * 1024, minimum=1)
    max_upload_files: int = integer("MAX_UPLOAD_FILES", 20, minimum=1)
    max_output_files: int = integer("MAX_OUTPUT_FILES", 50)
    max_output_file_size: int = integer("MAX_OUTPUT_FILE_SIZE", 64 * 1024 * 1024, minimum=1)
    #: Seconds a file is kept after its last use; 0 keeps files until deleted.
    file_ttl: int = integer("FILE_TTL", 0)
    jwt_public_key: str | None = optional_text("JWT_PUBLIC_KEY")
    jwt_jwks_file: Path | None = optional_path("JWT_JWKS_FILE")
    jwt_keys_dir: Path | None = optional_path("JWT_KEYS_DIR")
    jwt_issuer: str = text("JWT_ISSUER", "librechat")
    jwt_audience: str = text("JWT_AUDIENCE", "codeapi")
    jwt_leeway: int = integer("JWT_LEEWAY", 30)
    #: Accept the key in the JSON body (old clients that sent no header).
    body_key_auth: bool = boolean("BODY_KEY_AUTH", False)
    rate_limit_window: int = integer("RATE_LIMIT_WINDOW", 60, minimum=1)
    #: Requests per window for a tenant, and for one credential; 0 disables.
    rate_limit_tenant: int = integer("RATE_LIMIT_TENANT", 1200)
    rate_limit_key: int = integer("RATE_LIMIT_KEY", 600)
    state: StateSettings = section(StateSettings)
    programmatic: ProgrammaticSettings = section(ProgrammaticSettings)
    kubernetes: KubernetesSettings = section(KubernetesSettings)
    tenants: TenantSettings = section(TenantSettings)
    #: Keys that may use the operator API (``/admin``); they are API keys too.
    admin_api_keys: tuple[str, ...] = names("ADMIN_API_KEYS")
    #: How local sandboxes start: ``zygote`` (the default: a pre-imported Python that
    #: forks into namespaces it sets up itself, held to nsjail's posture by the parity
    #: test; root, cgroups and x86-64 only, else nsjail with the reason in
    #: ``/health/ready``), or ``nsjail`` (every sandbox a fresh nsjail process).
    sandbox_factory: str = choice("SANDBOX_FACTORY", "zygote", ("zygote", "nsjail"))
    #: Zygote sandboxes copy the pages a request writes before the claim (calibration).
    sandbox_prefault: bool = boolean("SANDBOX_PREFAULT", True)
    #: A zygote (one tenant's, sharing its layout and hash secret with its sandboxes) is
    #: replaced after this many sandboxes, or this many seconds after its first one.
    zygote_generation_sandboxes: int = integer("ZYGOTE_GENERATION_SANDBOXES", 1000, minimum=1)
    zygote_generation_seconds: int = integer("ZYGOTE_GENERATION_SECONDS", 900, minimum=1)
    #: Tenants with a zygote of their own at once (plus one spare); the least recently
    #: used one's is retired when another tenant needs one.
    zygote_max_generations: int = integer("ZYGOTE_MAX_GENERATIONS", 4, minimum=1)
    #: The execution profiles served (``X-CodeAPI-Expected-Profile``); others get a 409.
    execution_profiles: tuple[str, ...] = attrs.field(default=("default",),
                                                      validator=_check_profiles)
    runtime_sessions: RuntimeSessionSettings = section(RuntimeSessionSettings)

    @property
    def runtime_dir(self) -> Path:
        return self.runtime_path or self.data_dir / "runtime"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pool_sizes = dict(cls().pool_sizes)
        for code in LANGUAGES:
            name = f"POD_POOL_{code.upper()}"
            if name in env:
                pool_sizes[code] = env_int(env, name, 0)
        settings = read_env(cls, env, pool_sizes=pool_sizes, object_store_options={
            option: env[name] for option, name in _STORE_OPTIONS.items() if env.get(name)})
        settings = attrs.evolve(settings, execution_profiles=_profiles(
            env, settings.execution_backend))
        if settings.default_execution_time > settings.max_execution_time:
            raise SettingsError("DEFAULT_EXECUTION_TIME must not exceed MAX_EXECUTION_TIME")
        state = settings.state
        if 0 < state.archive_ttl <= state.hot_ttl + state.archive_after:
            # Shorter, an archive could expire while its hot copy is still in use.
            raise SettingsError("STATE_ARCHIVE_TTL must be 0 (archives kept) or more than "
                                "STATE_TTL + STATE_ARCHIVE_AFTER "
                                f"({state.hot_ttl + state.archive_after} s)")
        for entry in settings.forwarded_allow_ips:
            try:
                ipaddress.ip_network(entry)  # strict, as uvicorn reads it: 10.0.0.0/8
            except ValueError as exc:  # "*" included: trusting everyone trusts a spoofer
                raise SettingsError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an address or "
                                    "network") from exc
        return settings

    def pool_size(self, lang: str) -> int:
        """Warm sandboxes to keep for a language (0 when pools are disabled)."""
        return self.pool_sizes.get(lang, 0) if self.pool_enabled else 0
