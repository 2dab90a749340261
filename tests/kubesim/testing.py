"""Helpers for tests that drive the emulator: manifests, kr8s sessions, raw HTTP.

``run_kr8s(sim, scenario)`` runs ``scenario(api)`` with a kr8s async ``Api`` built
from the emulator's kubeconfig (namespace passed explicitly, as
``shared/spec/kubernetes.md`` asks) in a fresh event loop, and closes its HTTP
session afterwards (kr8s has no public close).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import kr8s.asyncio

from .server import KubeSim

__all__ = ["deployment_manifest", "http", "job_manifest", "pod_manifest", "pod_ready",
           "run_kr8s"]

T = TypeVar("T")
Obj = dict[str, Any]


def run_kr8s(sim: KubeSim, scenario: Callable[[kr8s.asyncio.Api], Awaitable[T]]) -> T:
    async def main() -> T:
        api = await kr8s.asyncio.api(kubeconfig=str(sim.kubeconfig_path),
                                     namespace=sim.namespace)
        try:
            return await scenario(api)
        finally:
            if api._session is not None:
                await api._session.aclose()
    return asyncio.run(main())


def http(sim: KubeSim) -> httpx.Client:
    return httpx.Client(base_url=sim.url, timeout=30)


def container(lang: str = "bash", port: int = 8080) -> Obj:
    return {"name": "executor", "image": "ghcr.io/k8sinterpreter/runtime-test:0",
            "command": ["python3", "-I", "-m", "sidecar"],
            "args": ["--lang", lang, "--tcp", f"0.0.0.0:{port}", "--workdir", "/mnt/data"],
            "ports": [{"name": "executor", "containerPort": port}]}


def pod_manifest(name: str, labels: dict[str, str] | None = None, *, lang: str = "bash",
                 annotations: dict[str, str] | None = None,
                 restart_policy: str = "Never") -> Obj:
    meta: Obj = {"name": name, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"restartPolicy": restart_policy, "terminationGracePeriodSeconds": 0,
                     "containers": [container(lang)]}}


def deployment_manifest(name: str, replicas: int, labels: dict[str, str], *,
                        lang: str = "bash") -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"restartPolicy": "Always",
                                           "terminationGracePeriodSeconds": 0,
                                           "containers": [container(lang)]}}}}


def job_manifest(name: str, *, lang: str = "bash", ttl: int | None = None,
                 deadline: int | None = None, backoff_limit: int = 0,
                 annotations: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"backoffLimit": backoff_limit,
                 "template": {"metadata": {"annotations": annotations or {}},
                              "spec": {"restartPolicy": "Never",
                                       "terminationGracePeriodSeconds": 0,
                                       "containers": [container(lang)]}}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def pod_ready(pod: Obj | None) -> bool:
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])
