"""The cold path: one Job per execution, from the same pod template as the pools.

``backoffLimit: 0``, ``activeDeadlineSeconds`` (the lease), ``ttlSecondsAfterFinished``
and a ``podFailurePolicy`` come from the template builder. The Job's pod is awaited
with a list-then-watch (resumed from the list's resourceVersion, relisted on 410),
never a sleep loop. The caller runs the code through the pod's executor, collects
the files, and deletes the Job with background propagation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from ...settings import KubernetesSettings
from .claims import (
    ANNOTATION_CLAIMED_AT,
    ANNOTATION_CLAIMED_BY,
    ANNOTATION_EXPIRES_AT,
    ANNOTATION_SESSION,
    ANNOTATION_TENANT,
    LABEL_SESSION,
    LABEL_TENANT,
    ClaimRequest,
    is_ready,
    label_value,
)
from .client import JOBS, PODS, KubeClient, KubeError
from .templates import PodTemplates

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)


class JobRunner:
    """Starts a Job for one execution and waits until its pod's executor can serve."""

    def __init__(self, client: KubeClient, templates: PodTemplates,
                 config: KubernetesSettings) -> None:
        self.client = client
        self.templates = templates
        self.config = config

    async def start(self, lang: str, claim: ClaimRequest,
                    timeout: float) -> tuple[str, str, str]:
        """(job name, pod IP, pod UID) once the Job's pod is ready; deletes the Job on
        failure."""
        name = f"k8si-{lang}-{secrets.token_hex(6)}"
        now = time.time()
        labels = {LABEL_SESSION: label_value("s", claim.session_id),
                  LABEL_TENANT: label_value("t", claim.tenant)}
        annotations = {ANNOTATION_CLAIMED_AT: f"{now:.3f}",
                       ANNOTATION_EXPIRES_AT: f"{now + claim.lease_seconds:.3f}",
                       ANNOTATION_CLAIMED_BY: claim.replica,
                       ANNOTATION_SESSION: claim.session_id, ANNOTATION_TENANT: claim.tenant}
        try:
            try:
                await self.client.create(JOBS, self.templates.job(
                    name, lang, labels, annotations, claim.hard_end_seconds))
            except KubeError as exc:
                # The name is ours alone: "exists" is our own create, retried after its
                # answer was lost.
                if exc.status != 409:
                    raise
            pod = await asyncio.wait_for(self._ready_pod(name), timeout=timeout)
        except BaseException as exc:
            # Cancelled or failed at any point after the create was sent: no Job left (or,
            # if the apiserver refuses even that, the reaper's when its lease ends).
            await asyncio.shield(self._delete_or_leave(name))
            if isinstance(exc, TimeoutError):
                raise KubeError(504, "Timeout", f"the Job's pod was not ready after "
                                                f"{timeout:.0f}s") from exc
            raise
        return name, pod["status"]["podIP"], str(pod["metadata"].get("uid", ""))

    async def _delete_or_leave(self, name: str) -> None:
        try:
            await self.client.delete(JOBS, name, propagation="Background")
        except KubeError as exc:
            logger.warning("Job left to the reaper", extra={"job": name, "error": str(exc)})

    async def _ready_pod(self, job: str) -> dict[str, Any]:
        selector = f"job-name={job}"
        while True:
            listed = await self.client.list_objects(PODS, labelSelector=selector)
            for pod in listed.get("items", []):
                _fail_if_finished(pod)
                if is_ready(pod) and pod.get("status", {}).get("podIP"):
                    found: dict[str, Any] = pod
                    return found
            version = listed.get("metadata", {}).get("resourceVersion", "0")
            try:
                async for event in self.client.watch(PODS, version, timeout=60,
                                                     labelSelector=selector):
                    kind, obj = event.get("type"), event.get("object", {})
                    if kind == "ERROR":
                        break  # 410 Gone or another error: relist and watch again
                    if kind in ("ADDED", "MODIFIED"):
                        _fail_if_finished(obj)
                        if is_ready(obj) and obj.get("status", {}).get("podIP"):
                            ready: dict[str, Any] = obj
                            return ready
            except KubeError as exc:
                if exc.status not in (0, 410):  # 410 Gone as an HTTP status, or a dropped
                    raise                       # stream: relist and watch again


def _fail_if_finished(pod: dict[str, Any]) -> None:
    phase = pod.get("status", {}).get("phase")
    if phase in ("Failed", "Succeeded"):
        raise KubeError(500, "PodFinished",
                        f"the Job's pod {pod['metadata']['name']} ended ({phase}) before serving")
