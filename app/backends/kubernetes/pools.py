"""Pool sizing for scale to zero: targets and last use live on the Deployments.

Each pooled language has a Deployment ``k8si-pool-<lang>`` with the annotations
``k8si.io/target-size`` (the configured size) and ``k8si.io/last-claim``. Any
replica shrinks a pool idle for ``POD_POOL_IDLE_SECONDS`` to ``POD_POOL_MIN`` and
grows it back on a miss; no process keeps the truth (a per-process timestamp only
avoids writing ``last-claim`` more than once a minute).

At start-up a replica brings each pool to its settings: a pool in use (above its
minimum) is scaled to a changed size, and a Deployment the API created itself
(``k8si.io/managed-by: k8si-api``, or unmarked and written by nothing but the API and
the cluster's controllers: made by an older version) gets its pod template rewritten
when the settings that render it changed (image, resources, runtime class, port): the
Deployment then rolls its warm pods over, and claimed pods, no longer selected by it,
finish their runs (replicas reach each pod on its own executor port). A Deployment
applied by kustomize (``managed-by: kustomize``) keeps its template: that is
kustomize's to change. Of two replicas with different settings, the newer revision's
sets the pool
(``k8si.io/settings-from``): an old revision's replica still running during a rollout
does not set it back (Knative's ``K_REVISION`` orders them; elsewhere the last replica
to start sets the pool).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from ...settings import Settings
from .claims import timestamp
from .client import DEPLOYMENTS, FIELD_MANAGER, KubeClient, KubeError
from .templates import (
    ANNOTATION_LAST_CLAIM,
    ANNOTATION_MANAGED,
    ANNOTATION_TARGET,
    ANNOTATION_TEMPLATE,
    LABEL_COMPONENT,
    MANAGED_BY_API,
    PodTemplates,
)

__all__ = ["ANNOTATION_WRITTEN_BY", "PoolScaler", "deployment_name"]

logger = logging.getLogger(__name__)

_RECORD_EVERY = 60.0
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_VERSION_LIKE = re.compile(r"[0-9][0-9.]*")
#: The Knative revision whose replica last brought the pool to its settings: a replica
#: of an older revision (still running during a rollout) leaves the pool as it is.
ANNOTATION_WRITTEN_BY = "k8si.io/settings-from"


def deployment_name(lang: str) -> str:
    return f"k8si-pool-{lang}"


def _revision_order(revision: str) -> int:
    """A Knative revision's generation (``k8si-api-00007``: 7); -1 for none, so a replica
    outside Knative (or a pool never set by one) never holds the pool back."""
    digits = revision.rpartition("-")[2]
    return int(digits) if digits.isdigit() else -1


def _owned_by_api(metadata: dict[str, Any]) -> bool:
    """A pool whose template the API keeps: marked as the API's, or unmarked and written
    only by the API and the cluster's controllers (made by an API version from before
    the mark; one a deploy tool applied, kubectl, Argo CD, Flux, is not)."""
    annotations = metadata.get("annotations") or {}
    if ANNOTATION_MANAGED in annotations:
        return bool(annotations[ANNOTATION_MANAGED] == MANAGED_BY_API)
    return _LAST_APPLIED not in annotations and all(
        _api_or_cluster(str(entry.get("manager", "")))
        for entry in metadata.get("managedFields") or [])


def _api_or_cluster(manager: str) -> bool:
    """The API (``fieldManager``, or older versions' kr8s user agent: its version number)
    or a controller of the cluster itself."""
    return (manager in (FIELD_MANAGER, "kube-controller-manager")
            or _VERSION_LIKE.fullmatch(manager) is not None)


class PoolScaler:
    """Creates the pool Deployments and scales them between their minimum and target."""

    def __init__(self, client: KubeClient, templates: PodTemplates, settings: Settings) -> None:
        self.client = client
        self.templates = templates
        self.settings = settings
        self._recorded: dict[str, float] = {}
        #: Pools whose ``grow`` is under way: the misses meanwhile add no requests.
        self._growing: set[str] = set()
        #: This replica's Knative revision (``k8si.io/settings-from``), if any.
        self.revision = settings.kubernetes.revision or ""

    async def ensure_pools(self) -> None:
        """Every configured pool exists, as its settings say (see the module docstring)."""
        for lang, size in self.settings.pool_sizes.items():
            if self.settings.pool_size(lang) <= 0:
                continue
            try:
                deployment = await self.client.get(DEPLOYMENTS, deployment_name(lang))
            except KubeError as exc:
                if exc.status != 404:
                    raise
                body = self.templates.pool_deployment(lang, size, size)
                if self.revision:
                    body["metadata"]["annotations"][ANNOTATION_WRITTEN_BY] = self.revision
                try:
                    await self.client.create(DEPLOYMENTS, body)
                except KubeError as created:
                    if created.status != 409:  # another replica starting made it meanwhile
                        raise
                continue
            ops = self._reconcile(lang, size, deployment)
            if ops:
                await self.client.json_patch(DEPLOYMENTS, deployment_name(lang), ops)

    def _reconcile(self, lang: str, size: int, deployment: dict[str, Any],
                   ) -> list[dict[str, Any]]:
        """The JSON Patch that brings an existing pool to its settings (empty: it is, or
        a newer revision's replica set it to its own)."""
        metadata = deployment["metadata"]
        annotations = metadata.get("annotations") or {}
        ops: list[dict[str, Any]] = []

        def annotate(name: str, value: str) -> None:
            if annotations.get(name) != value:
                ops.append({"op": "add", "value": value,
                            "path": "/metadata/annotations/" + name.replace("/", "~1")})

        annotate(ANNOTATION_TARGET, str(size))
        replicas = int(deployment["spec"].get("replicas", 0))
        if replicas > self.settings.kubernetes.pool_min and replicas != size:  # in use
            ops.append({"op": "replace", "path": "/spec/replicas", "value": size})
        if _owned_by_api(metadata):
            wanted = self.templates.pool_deployment(lang, size, size)
            digest = wanted["metadata"]["annotations"][ANNOTATION_TEMPLATE]
            annotate(ANNOTATION_MANAGED, MANAGED_BY_API)  # a pool an older version made
            if annotations.get(ANNOTATION_TEMPLATE) != digest:
                ops.append({"op": "replace", "path": "/spec/template",
                            "value": wanted["spec"]["template"]})
                annotate(ANNOTATION_TEMPLATE, digest)
        if not ops:
            return []
        written_by = str(annotations.get(ANNOTATION_WRITTEN_BY, ""))
        if _revision_order(written_by) > _revision_order(self.revision):
            logger.warning("pool set by a newer revision differs from this replica's "
                           "settings; left as it is", extra={
                               "language": lang, "revision": self.revision,
                               "set_by": written_by})
            return []
        if self.revision:
            annotate(ANNOTATION_WRITTEN_BY, self.revision)
        logger.info("pool brought to this replica's settings",
                    extra={"language": lang, "replicas": size})
        if not annotations:  # a map to add annotations into
            ops.insert(0, {"op": "add", "path": "/metadata/annotations", "value": {}})
        return ops

    async def record_claim(self, lang: str) -> None:
        """Note that the pool was used (off the critical path, at most once a minute)."""
        now = time.time()
        if now - self._recorded.get(lang, 0.0) < _RECORD_EVERY:
            return
        self._recorded[lang] = now
        await self.client.merge_patch(DEPLOYMENTS, deployment_name(lang), {
            "metadata": {"annotations": {ANNOTATION_LAST_CLAIM: f"{now:.3f}"}}})

    async def grow(self, lang: str) -> None:
        """After a miss: back to the target size, and counted as a use. One at a time per
        pool: the misses of a burst are served by the grow already under way."""
        if lang in self._growing:
            return
        self._growing.add(lang)
        try:
            await self._grow(lang)
        finally:
            self._growing.discard(lang)

    async def _grow(self, lang: str) -> None:
        deployment = await self.client.get(DEPLOYMENTS, deployment_name(lang))
        target = _target(deployment, self.settings.pool_size(lang))
        now = time.time()
        self._recorded[lang] = now
        patch: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION_LAST_CLAIM:
                                                              f"{now:.3f}"}}}
        if deployment["spec"].get("replicas", 0) < target:
            patch["spec"] = {"replicas": target}
            logger.info("pool grows back", extra={"language": lang, "replicas": target})
        await self.client.merge_patch(DEPLOYMENTS, deployment_name(lang), patch)

    async def shrink_idle(self) -> None:
        """Pools unused for the idle period go down to the configured minimum."""
        config = self.settings.kubernetes
        listed = await self.client.list_objects(DEPLOYMENTS,
                                                labelSelector=f"{LABEL_COMPONENT}=pool")
        now = time.time()
        for deployment in listed.get("items", []):
            annotations = deployment["metadata"].get("annotations") or {}
            last = _last_use(deployment, annotations)
            replicas = deployment["spec"].get("replicas", 0)
            if replicas > config.pool_min and now - last > config.pool_idle_seconds:
                await self.client.merge_patch(DEPLOYMENTS, deployment["metadata"]["name"],
                                              {"spec": {"replicas": config.pool_min}})
                logger.info("idle pool shrinks", extra={
                    "deployment": deployment["metadata"]["name"], "replicas": config.pool_min})


def _last_use(deployment: dict[str, Any], annotations: dict[str, str]) -> float:
    """The last claim, or (never claimed: e.g. applied by kustomize) the creation time."""
    try:
        return float(annotations[ANNOTATION_LAST_CLAIM])
    except (KeyError, ValueError):
        created = deployment["metadata"].get("creationTimestamp")
        if not created:
            return time.time()
        return timestamp(str(created))


def _target(deployment: dict[str, Any], default: int) -> int:
    annotations = deployment["metadata"].get("annotations") or {}
    try:
        return int(annotations.get(ANNOTATION_TARGET, default))
    except ValueError:
        return default
