"""The settings' sections: Python state, runtime sessions, programmatic runs, the
Kubernetes plane and tenants' limits, each read from its own variables (each field
names its variable: ``fields.py``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import attrs

from sidecar.contract import LANGUAGES

from .environment import SettingsError
from .fields import Declared, boolean, integer, optional_text, read_env, seconds, text

__all__ = ["KubernetesSettings", "ProgrammaticSettings", "RuntimeSessionSettings",
           "StateSettings", "TenantLimits", "TenantSettings"]


@attrs.frozen
class StateSettings(Declared):
    """Python session state (cloudpickle + lz4 blobs, signed, kept between executions)."""

    enabled: bool = boolean("STATE_ENABLED", True)
    #: Seconds the hot copy stays in Valkey after its last use.
    hot_ttl: int = integer("STATE_TTL", 3600, minimum=60)
    #: Idle seconds after which a blob is archived to the object store.
    archive_after: int = integer("STATE_ARCHIVE_AFTER", 600, minimum=1)
    #: Seconds an archive is kept after the state's last use (0: kept until deleted).
    archive_ttl: int = integer("STATE_ARCHIVE_TTL", 7 * 86400)
    #: Largest compressed blob, and largest namespace once decompressed (bytes).
    max_bytes: int = integer("MAX_STATE_SIZE", 64 * 1024 * 1024, minimum=1024)
    max_raw_bytes: int = integer("MAX_STATE_RAW_SIZE", 512 * 1024 * 1024, minimum=1024)
    capture_on_error: bool = boolean("STATE_CAPTURE_ON_ERROR", True)
    #: HMAC key binding blobs to (tenant, session); ``None``: kept in ``DATA_DIR/state-key``.
    hmac_key: str | None = optional_text("STATE_HMAC_KEY")


@attrs.frozen
class RuntimeSessionSettings(Declared):
    """Runtime sessions (the ``stateful`` profile): kept sandboxes and their limits."""

    #: Seconds a kept sandbox waits for its runtime session's next execution.
    idle_ttl: int = integer("RUNTIME_SESSION_IDLE_TTL", 900, minimum=1)
    #: Seconds from a runtime session's creation after which its sandbox is released
    #: (the record stays: the next call is ``restored`` from the checkpoint).
    max_age: int = integer("RUNTIME_SESSION_MAX_AGE", 14400, minimum=1)
    #: Kept sandboxes per tenant, and on this deployment; over a cap the least recently
    #: used one is checkpointed and released (never a refusal).
    per_tenant: int = integer("RUNTIME_SESSIONS_PER_TENANT", 4, minimum=1)
    total: int = integer("RUNTIME_SESSIONS_TOTAL", 32, minimum=1)
    #: Seconds between two sweeps of orphaned checkpoints (sessions whose record is gone).
    sweep_interval: int = integer("RUNTIME_SESSION_SWEEP_INTERVAL", 900, minimum=10)


@attrs.frozen
class ProgrammaticSettings(Declared):
    """Programmatic tool calling (``/exec/programmatic``)."""

    #: Seconds a paused run waits for the client's tool results before it is reaped.
    lease_seconds: int = integer("PTC_LEASE_SECONDS", 300, minimum=1)
    #: Rounds of tool calls one run may make.
    max_rounds: int = integer("PTC_MAX_ROUNDS", 50, minimum=1)
    #: Seconds a run may last from its claim, pauses included (the pod's hard deadline).
    max_lifetime: int = integer("PTC_MAX_LIFETIME", 1800, minimum=10)
    #: Paused runs one tenant may have at once (each holds a sandbox); 0: as many as
    #: the tenant's concurrency limit (``concurrent_executions``), none when that is 0.
    max_paused_per_tenant: int = integer("PTC_MAX_PAUSED_PER_TENANT", 0)


@attrs.frozen
class KubernetesSettings(Declared):
    """The Kubernetes execution plane (``EXECUTION_BACKEND=kubernetes``)."""

    #: ``None``: the kubeconfig's namespace (or the in-cluster one).
    namespace: str | None = optional_text("K8S_NAMESPACE")
    kubeconfig: str | None = optional_text("KUBECONFIG")
    cpu_limit: str = text("K8S_CPU_LIMIT", "1")
    memory_limit: str = text("K8S_MEMORY_LIMIT", "1Gi")
    cpu_request: str = text("K8S_CPU_REQUEST", "100m")
    memory_request: str = text("K8S_MEMORY_REQUEST", "256Mi")
    #: Image per language (``K8S_IMAGE_<LANG>``); unset languages use ``image_template``
    #: with their group.
    images: Mapping[str, str] = attrs.field(factory=dict)
    image_template: str = text("K8S_IMAGE_TEMPLATE",
                               "ghcr.io/k8sinterpreter/runtime-{group}:0.1.0")
    executor_port: int = integer("K8S_EXECUTOR_PORT", 8080, minimum=1)
    #: A pool miss runs a Job instead of answering 503.
    cold_fallback: bool = boolean("POD_POOL_COLD_FALLBACK", True)
    #: Seconds a claimed pod may live before the reaper deletes it.
    lease_seconds: int = integer("SANDBOX_LEASE_SECONDS", 300, minimum=10)
    reap_interval: int = integer("REAP_INTERVAL", 30, minimum=1)
    #: Idle seconds before a pool shrinks to ``pool_min``.
    pool_idle_seconds: int = integer("POD_POOL_IDLE_SECONDS", 900, minimum=1)
    pool_min: int = integer("POD_POOL_MIN", 0)
    job_ttl_seconds: int = integer("K8S_JOB_TTL", 60)
    runtime_class: str | None = optional_text("K8S_RUNTIME_CLASS")
    #: Seconds one apiserver request may take before it is abandoned and retried.
    request_timeout: float = seconds("K8S_REQUEST_TIMEOUT", 10.0, minimum=1)
    #: The Knative revision serving this replica (Knative sets it): a replica of an older
    #: revision never sets the pools back to its settings during a rollout.
    revision: str | None = optional_text("K_REVISION")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubernetesSettings:
        return read_env(cls, env, images={
            code: env[f"K8S_IMAGE_{code.upper()}"] for code in LANGUAGES
            if env.get(f"K8S_IMAGE_{code.upper()}")})


@attrs.frozen
class TenantLimits(Declared):
    """What one tenant may use; 0 means unlimited (the timeout is always capped)."""

    executions_per_window: int = integer("TENANT_EXECUTIONS_PER_WINDOW", 600)
    concurrent_executions: int = integer("TENANT_CONCURRENT_EXECUTIONS", 8)
    storage_bytes: int = integer("TENANT_STORAGE_BYTES", 10 * 1024**3)
    files: int = integer("TENANT_FILES", 10_000)
    max_timeout: int = integer("TENANT_MAX_TIMEOUT", 0)  # 0: MAX_EXECUTION_TIME
    #: 0: MAX_MEMORY_MB (the local backend lowers the sandbox's cgroup).
    max_memory_mb: int = integer("TENANT_MAX_MEMORY_MB", 0)


@attrs.frozen
class TenantSettings(Declared):
    """Default limits for every tenant, and per-tenant overrides (``TENANT_LIMITS``)."""

    defaults: TenantLimits = attrs.field(factory=TenantLimits)
    overrides: Mapping[str, TenantLimits] = attrs.field(factory=dict)
    window: int = integer("TENANT_WINDOW", 60, minimum=1)
    #: Failed authentications per client address and window before 429 (brute force).
    auth_failures_per_window: int = integer("AUTH_FAILURES_PER_WINDOW", 30)

    def limits(self, tenant: str) -> TenantLimits:
        return self.overrides.get(tenant, self.defaults)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TenantSettings:
        defaults = TenantLimits.from_env(env)
        return read_env(cls, env, defaults=defaults, overrides=_overrides(env, defaults))


def _overrides(env: Mapping[str, str], defaults: TenantLimits) -> dict[str, TenantLimits]:
    """``TENANT_LIMITS``: JSON (or a file of it) mapping tenants to their limits."""
    raw = env.get("TENANT_LIMITS", "").strip()
    if not raw:
        return {}
    source = Path(raw).read_text() if not raw.startswith("{") else raw
    try:
        return {tenant: attrs.evolve(defaults, **values)
                for tenant, values in json.loads(source).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise SettingsError(f"TENANT_LIMITS must map tenants to limits: {exc}") from exc
