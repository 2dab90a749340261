"""All configuration, in one typed object read from the environment.

Every variable is documented in the README's "Configuration" table. A value that
cannot be parsed stops start-up with a ``SettingsError`` naming the variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from sidecar.languages import LANGUAGES

__all__ = ["EXECUTION_PROFILES", "KubernetesSettings", "ProgrammaticSettings",
           "RuntimeSessionSettings", "Settings", "SettingsError", "StateSettings",
           "TenantLimits", "TenantSettings"]


class SettingsError(ValueError):
    """A configuration variable has a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, choices[0]).strip().lower() or choices[0]
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


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


@attrs.frozen
class StateSettings:
    """Python session state (cloudpickle + lz4 blobs, signed, kept between executions)."""

    enabled: bool = True
    #: Seconds the hot copy stays in Valkey after its last use.
    hot_ttl: int = 3600
    #: Idle seconds after which a blob is archived to the object store.
    archive_after: int = 600
    #: Largest compressed blob, and largest namespace once decompressed (bytes).
    max_bytes: int = 64 * 1024 * 1024
    max_raw_bytes: int = 512 * 1024 * 1024
    capture_on_error: bool = True
    #: HMAC key binding blobs to (tenant, session); ``None``: kept in ``DATA_DIR/state-key``.
    hmac_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StateSettings:
        return cls(
            enabled=_bool(env, "STATE_ENABLED", True),
            hot_ttl=_int(env, "STATE_TTL", 3600, minimum=60),
            archive_after=_int(env, "STATE_ARCHIVE_AFTER", 600, minimum=1),
            max_bytes=_int(env, "MAX_STATE_SIZE", 64 * 1024 * 1024, minimum=1024),
            max_raw_bytes=_int(env, "MAX_STATE_RAW_SIZE", 512 * 1024 * 1024, minimum=1024),
            capture_on_error=_bool(env, "STATE_CAPTURE_ON_ERROR", True),
            hmac_key=env.get("STATE_HMAC_KEY") or None,
        )


@attrs.frozen
class RuntimeSessionSettings:
    """Runtime sessions (the ``stateful`` profile): kept sandboxes and their limits."""

    #: Seconds a kept sandbox waits for its runtime session's next execution.
    idle_ttl: int = 900
    #: Seconds from a runtime session's creation after which its sandbox is released
    #: (the record stays: the next call is ``restored`` from the checkpoint).
    max_age: int = 14400
    #: Kept sandboxes per tenant, and on this deployment; over a cap the least recently
    #: used one is checkpointed and released (never a refusal).
    per_tenant: int = 4
    total: int = 32

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RuntimeSessionSettings:
        return cls(
            idle_ttl=_int(env, "RUNTIME_SESSION_IDLE_TTL", 900, minimum=1),
            max_age=_int(env, "RUNTIME_SESSION_MAX_AGE", 14400, minimum=1),
            per_tenant=_int(env, "RUNTIME_SESSIONS_PER_TENANT", 4, minimum=1),
            total=_int(env, "RUNTIME_SESSIONS_TOTAL", 32, minimum=1),
        )


@attrs.frozen
class ProgrammaticSettings:
    """Programmatic tool calling (``/exec/programmatic``)."""

    #: Seconds a paused run waits for the client's tool results before it is reaped.
    lease_seconds: int = 300
    #: Rounds of tool calls one run may make.
    max_rounds: int = 50
    #: Seconds a run may last from its claim, pauses included (the pod's hard deadline).
    max_lifetime: int = 1800
    #: Paused runs one tenant may have at once (each holds a sandbox); 0: as many as
    #: the tenant's concurrency limit (``concurrent_executions``), none when that is 0.
    max_paused_per_tenant: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProgrammaticSettings:
        return cls(lease_seconds=_int(env, "PTC_LEASE_SECONDS", 300, minimum=1),
                   max_rounds=_int(env, "PTC_MAX_ROUNDS", 50, minimum=1),
                   max_lifetime=_int(env, "PTC_MAX_LIFETIME", 1800, minimum=10),
                   max_paused_per_tenant=_int(env, "PTC_MAX_PAUSED_PER_TENANT", 0))


@attrs.frozen
class KubernetesSettings:
    """The Kubernetes execution plane (``EXECUTION_BACKEND=kubernetes``)."""

    #: ``None``: the kubeconfig's namespace (or the in-cluster one).
    namespace: str | None = None
    kubeconfig: str | None = None
    cpu_limit: str = "1"
    memory_limit: str = "1Gi"
    cpu_request: str = "100m"
    memory_request: str = "256Mi"
    #: Image per language; unset languages use ``image_template`` with their group.
    images: Mapping[str, str] = attrs.field(factory=dict)
    image_template: str = "ghcr.io/k8sinterpreter/runtime-{group}:0.1.0"
    executor_port: int = 8080
    #: A pool miss runs a Job instead of answering 503.
    cold_fallback: bool = True
    #: Seconds a claimed pod may live before the reaper deletes it.
    lease_seconds: int = 300
    reap_interval: int = 30
    #: Idle seconds before a pool shrinks to ``pool_min``.
    pool_idle_seconds: int = 900
    pool_min: int = 0
    job_ttl_seconds: int = 60
    runtime_class: str | None = None
    #: Seconds one apiserver request may take before it is abandoned and retried.
    request_timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubernetesSettings:
        return cls(
            namespace=env.get("K8S_NAMESPACE") or None,
            kubeconfig=env.get("KUBECONFIG") or None,
            cpu_limit=env.get("K8S_CPU_LIMIT", "1"),
            memory_limit=env.get("K8S_MEMORY_LIMIT", "1Gi"),
            cpu_request=env.get("K8S_CPU_REQUEST", "100m"),
            memory_request=env.get("K8S_MEMORY_REQUEST", "256Mi"),
            images={code: env[f"K8S_IMAGE_{code.upper()}"] for code in LANGUAGES
                    if env.get(f"K8S_IMAGE_{code.upper()}")},
            image_template=env.get("K8S_IMAGE_TEMPLATE",
                                   "ghcr.io/k8sinterpreter/runtime-{group}:0.1.0"),
            executor_port=_int(env, "K8S_EXECUTOR_PORT", 8080, minimum=1),
            cold_fallback=_bool(env, "POD_POOL_COLD_FALLBACK", True),
            lease_seconds=_int(env, "SANDBOX_LEASE_SECONDS", 300, minimum=10),
            reap_interval=_int(env, "REAP_INTERVAL", 30, minimum=1),
            pool_idle_seconds=_int(env, "POD_POOL_IDLE_SECONDS", 900, minimum=1),
            pool_min=_int(env, "POD_POOL_MIN", 0),
            job_ttl_seconds=_int(env, "K8S_JOB_TTL", 60),
            runtime_class=env.get("K8S_RUNTIME_CLASS") or None,
            request_timeout=_int(env, "K8S_REQUEST_TIMEOUT", 10, minimum=1),
        )


@attrs.frozen
class TenantLimits:
    """What one tenant may use; 0 means unlimited (the timeout is always capped)."""

    executions_per_window: int = 600
    concurrent_executions: int = 8
    storage_bytes: int = 10 * 1024**3
    files: int = 10_000
    max_timeout: int = 0  # 0: MAX_EXECUTION_TIME
    max_memory_mb: int = 0  # 0: MAX_MEMORY_MB (the local backend lowers the sandbox's cgroup)


@attrs.frozen
class TenantSettings:
    """Default limits for every tenant, and per-tenant overrides (``TENANT_LIMITS``)."""

    defaults: TenantLimits = attrs.field(factory=TenantLimits)
    overrides: Mapping[str, TenantLimits] = attrs.field(factory=dict)
    window: int = 60
    #: Failed authentications per client address and window before 429 (brute force).
    auth_failures_per_window: int = 30

    def limits(self, tenant: str) -> TenantLimits:
        return self.overrides.get(tenant, self.defaults)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TenantSettings:
        defaults = TenantLimits(
            executions_per_window=_int(env, "TENANT_EXECUTIONS_PER_WINDOW", 600),
            concurrent_executions=_int(env, "TENANT_CONCURRENT_EXECUTIONS", 8),
            storage_bytes=_int(env, "TENANT_STORAGE_BYTES", 10 * 1024**3),
            files=_int(env, "TENANT_FILES", 10_000),
            max_timeout=_int(env, "TENANT_MAX_TIMEOUT", 0),
            max_memory_mb=_int(env, "TENANT_MAX_MEMORY_MB", 0))
        overrides: dict[str, TenantLimits] = {}
        raw = env.get("TENANT_LIMITS", "").strip()
        if raw:
            text = Path(raw).read_text() if not raw.startswith("{") else raw
            try:
                data = json.loads(text)
                for tenant, values in data.items():
                    overrides[tenant] = attrs.evolve(defaults, **values)
            except (ValueError, TypeError, AttributeError) as exc:
                raise SettingsError(f"TENANT_LIMITS must map tenants to limits: {exc}") from exc
        return cls(defaults=defaults, overrides=overrides,
                   window=_int(env, "TENANT_WINDOW", 60, minimum=1),
                   auth_failures_per_window=_int(env, "AUTH_FAILURES_PER_WINDOW", 30))


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
        pool_sizes = {"py": 2}
        for code in LANGUAGES:
            name = f"POD_POOL_{code.upper()}"
            if name in env:
                pool_sizes[code] = _int(env, name, 0)
        backend = env.get("EXECUTION_BACKEND", "local").strip().lower() or "local"
        if backend not in ("local", "kubernetes"):
            raise SettingsError(f"EXECUTION_BACKEND={backend!r} is not supported; "
                                "use 'local' or 'kubernetes'")
        settings = cls(
            host=env.get("HOST", "127.0.0.1"),
            port=_int(env, "PORT", 8000, minimum=1),
            api_keys=tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()),
            data_dir=Path(env.get("DATA_DIR", ".k8si")).absolute(),
            valkey_url=env.get("VALKEY_URL") or None,
            execution_backend=backend,
            pool_enabled=_bool(env, "POD_POOL_ENABLED", True),
            pool_warmup_on_startup=_bool(env, "POD_POOL_WARMUP_ON_STARTUP", True),
            pool_sizes=pool_sizes,
            max_execution_time=_int(env, "MAX_EXECUTION_TIME", 60, minimum=1),
            default_execution_time=_int(env, "DEFAULT_EXECUTION_TIME", 30, minimum=1),
            compile_timeout=_int(env, "COMPILE_TIMEOUT", 60, minimum=1),
            max_memory_mb=_int(env, "MAX_MEMORY_MB", 512, minimum=32),
            max_output_size=_int(env, "MAX_OUTPUT_SIZE", 1024 * 1024, minimum=1024),
            response_output_limit=_int(env, "RESPONSE_OUTPUT_LIMIT", 64 * 1024, minimum=1024),
            max_code_size=_int(env, "MAX_CODE_SIZE", 1024 * 1024, minimum=1024),
            max_processes=_int(env, "MAX_PROCESSES", 128, minimum=8),
            sandbox_workdir_mb=_int(env, "SANDBOX_WORKDIR_MB", 256, minimum=1),
            sandbox_tmp_mb=_int(env, "SANDBOX_TMP_MB", 256, minimum=16),
            max_concurrent_executions=_int(env, "MAX_CONCURRENT_EXECUTIONS", 8, minimum=1),
            queue_timeout=_int(env, "QUEUE_TIMEOUT", 30, minimum=0),
            exec_keepalive_interval=_int(env, "EXEC_KEEPALIVE_INTERVAL", 5),
            session_ttl=_int(env, "SESSION_TTL", 24 * 3600, minimum=60),
            python_preload=tuple(m.strip() for m in env.get(
                "PYTHON_PRELOAD", "numpy,pandas,matplotlib,matplotlib.pyplot").split(",")
                if m.strip()),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            runtime_path=Path(env["RUNTIME_DIR"]).absolute() if env.get("RUNTIME_DIR") else None,
            object_store_url=env.get("OBJECT_STORE_URL") or None,
            object_store_options={
                option: env[name] for option, name in _STORE_OPTIONS.items() if env.get(name)},
            max_upload_size=_int(env, "MAX_UPLOAD_SIZE", 128 * 1024 * 1024, minimum=1),
            max_upload_files=_int(env, "MAX_UPLOAD_FILES", 20, minimum=1),
            max_output_files=_int(env, "MAX_OUTPUT_FILES", 50, minimum=0),
            max_output_file_size=_int(env, "MAX_OUTPUT_FILE_SIZE", 64 * 1024 * 1024, minimum=1),
            file_ttl=_int(env, "FILE_TTL", 0),
            jwt_public_key=env.get("JWT_PUBLIC_KEY") or None,
            jwt_jwks_file=Path(env["JWT_JWKS_FILE"]) if env.get("JWT_JWKS_FILE") else None,
            jwt_keys_dir=Path(env["JWT_KEYS_DIR"]) if env.get("JWT_KEYS_DIR") else None,
            jwt_issuer=env.get("JWT_ISSUER", "librechat"),
            jwt_audience=env.get("JWT_AUDIENCE", "codeapi"),
            jwt_leeway=_int(env, "JWT_LEEWAY", 30),
            body_key_auth=_bool(env, "BODY_KEY_AUTH", False),
            rate_limit_window=_int(env, "RATE_LIMIT_WINDOW", 60, minimum=1),
            rate_limit_tenant=_int(env, "RATE_LIMIT_TENANT", 1200),
            rate_limit_key=_int(env, "RATE_LIMIT_KEY", 600),
            state=StateSettings.from_env(env),
            programmatic=ProgrammaticSettings.from_env(env),
            kubernetes=KubernetesSettings.from_env(env),
            tenants=TenantSettings.from_env(env),
            admin_api_keys=tuple(k.strip() for k in env.get("ADMIN_API_KEYS", "").split(",")
                                 if k.strip()),
            sandbox_factory=_choice(env, "SANDBOX_FACTORY", ("zygote", "nsjail")),
            sandbox_prefault=_bool(env, "SANDBOX_PREFAULT", True),
            zygote_generation_sandboxes=_int(env, "ZYGOTE_GENERATION_SANDBOXES", 1000,
                                             minimum=1),
            zygote_generation_seconds=_int(env, "ZYGOTE_GENERATION_SECONDS", 900, minimum=1),
            zygote_max_generations=_int(env, "ZYGOTE_MAX_GENERATIONS", 4, minimum=1),
            execution_profiles=_profiles(env, backend),
            runtime_sessions=RuntimeSessionSettings.from_env(env),
        )
        if settings.default_execution_time > settings.max_execution_time:
            raise SettingsError("DEFAULT_EXECUTION_TIME must not exceed MAX_EXECUTION_TIME")
        return settings

    def pool_size(self, lang: str) -> int:
        """Warm sandboxes to keep for a language (0 when pools are disabled)."""
        return self.pool_sizes.get(lang, 0) if self.pool_enabled else 0
