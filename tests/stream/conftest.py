"""Fixtures of the streaming tests: the real control plane and API replicas against it."""

from __future__ import annotations

from tests.k8s.conftest import k8s_app_factory

__all__ = ["k8s_app_factory"]
