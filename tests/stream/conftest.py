"""Fixtures of the streaming tests: the Kubernetes emulator and API replicas against it."""

from __future__ import annotations

from tests.k8s.conftest import k8s_app_factory
from tests.kubesim.fixtures import kubesim

__all__ = ["k8s_app_factory", "kubesim"]
