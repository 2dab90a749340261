"""Execution planes behind one seam (``base.SandboxBackend``).

``create_backend`` picks the implementation named by ``EXECUTION_BACKEND``.
"""

from __future__ import annotations

from ..settings import Settings
from .base import LanguageStatus, PoolStatus, SandboxBackend, SandboxLease, lease_for_run

__all__ = ["LanguageStatus", "PoolStatus", "SandboxBackend", "SandboxLease", "create_backend",
           "lease_for_run"]


def create_backend(settings: Settings) -> SandboxBackend:
    """The backend for ``settings.execution_backend`` (imported lazily: start-up time)."""
    if settings.execution_backend == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    from .local import LocalBackend

    return LocalBackend(settings)
