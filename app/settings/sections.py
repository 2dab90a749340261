"""The settings' sections: Python state, runtime sessions, programmatic runs, the
Kubernetes plane and tenants' limits, each read from its own variables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import attrs

from sidecar.contract import LANGUAGES

from .environment import SettingsError, env_bool, env_int

__all__ = ["KubernetesSettings", "ProgrammaticSettings", "RuntimeSessionSettings",
           "StateSettings", "TenantLimits", "TenantSettings"]


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
        d = cls()  # each default is stated once, on its field
        return cls(
            enabled=env_bool(env, "STATE_ENABLED", d.enabled),
            hot_ttl=env_int(env, "STATE_TTL", d.hot_ttl, minimum=60),
            archive_after=env_int(env, "STATE_ARCHIVE_AFTER", d.archive_after, minimum=1),
            max_bytes=env_int(env, "MAX_STATE_SIZE", d.max_bytes, minimum=1024),
            max_raw_bytes=env_int(env, "MAX_STATE_RAW_SIZE", d.max_raw_bytes, minimum=1024),
            capture_on_error=env_bool(env, "STATE_CAPTURE_ON_ERROR", d.capture_on_error),
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
        d = cls()
        return cls(
            idle_ttl=env_int(env, "RUNTIME_SESSION_IDLE_TTL", d.idle_ttl, minimum=1),
            max_age=env_int(env, "RUNTIME_SESSION_MAX_AGE", d.max_age, minimum=1),
            per_tenant=env_int(env, "RUNTIME_SESSIONS_PER_TENANT", d.per_tenant, minimum=1),
            total=env_int(env, "RUNTIME_SESSIONS_TOTAL", d.total, minimum=1),
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
        d = cls()
        return cls(lease_seconds=env_int(env, "PTC_LEASE_SECONDS", d.lease_seconds, minimum=1),
                   max_rounds=env_int(env, "PTC_MAX_ROUNDS", d.max_rounds, minimum=1),
                   max_lifetime=env_int(env, "PTC_MAX_LIFETIME", d.max_lifetime, minimum=10),
                   max_paused_per_tenant=env_int(env, "PTC_MAX_PAUSED_PER_TENANT",
                                              d.max_paused_per_tenant))


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
        d = cls()
        return cls(
            namespace=env.get("K8S_NAMESPACE") or None,
            kubeconfig=env.get("KUBECONFIG") or None,
            cpu_limit=env.get("K8S_CPU_LIMIT", d.cpu_limit),
            memory_limit=env.get("K8S_MEMORY_LIMIT", d.memory_limit),
            cpu_request=env.get("K8S_CPU_REQUEST", d.cpu_request),
            memory_request=env.get("K8S_MEMORY_REQUEST", d.memory_request),
            images={code: env[f"K8S_IMAGE_{code.upper()}"] for code in LANGUAGES
                    if env.get(f"K8S_IMAGE_{code.upper()}")},
            image_template=env.get("K8S_IMAGE_TEMPLATE", d.image_template),
            executor_port=env_int(env, "K8S_EXECUTOR_PORT", d.executor_port, minimum=1),
            cold_fallback=env_bool(env, "POD_POOL_COLD_FALLBACK", d.cold_fallback),
            lease_seconds=env_int(env, "SANDBOX_LEASE_SECONDS", d.lease_seconds, minimum=10),
            reap_interval=env_int(env, "REAP_INTERVAL", d.reap_interval, minimum=1),
            pool_idle_seconds=env_int(env, "POD_POOL_IDLE_SECONDS", d.pool_idle_seconds, minimum=1),
            pool_min=env_int(env, "POD_POOL_MIN", d.pool_min),
            job_ttl_seconds=env_int(env, "K8S_JOB_TTL", d.job_ttl_seconds),
            runtime_class=env.get("K8S_RUNTIME_CLASS") or None,
            request_timeout=env_int(env, "K8S_REQUEST_TIMEOUT", int(d.request_timeout), minimum=1),
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
        d, own = TenantLimits(), cls()
        defaults = TenantLimits(
            executions_per_window=env_int(env, "TENANT_EXECUTIONS_PER_WINDOW",
                                       d.executions_per_window),
            concurrent_executions=env_int(env, "TENANT_CONCURRENT_EXECUTIONS",
                                       d.concurrent_executions),
            storage_bytes=env_int(env, "TENANT_STORAGE_BYTES", d.storage_bytes),
            files=env_int(env, "TENANT_FILES", d.files),
            max_timeout=env_int(env, "TENANT_MAX_TIMEOUT", d.max_timeout),
            max_memory_mb=env_int(env, "TENANT_MAX_MEMORY_MB", d.max_memory_mb))
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
                   window=env_int(env, "TENANT_WINDOW", own.window, minimum=1),
                   auth_failures_per_window=env_int(env, "AUTH_FAILURES_PER_WINDOW",
                                                 own.auth_failures_per_window))


