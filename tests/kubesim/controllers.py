"""The controller manager: Deployments, ReplicaSets (and, in ``jobs.py``, Jobs).

Controllers are level-triggered: after every write (and when a timer of theirs is
due) each one reconciles every object it owns, synchronously, until nothing
changes. That keeps them deterministic while still racing with clients the way a
cluster's do (a client's write lands between two reconciles).

- ``DeploymentController``: one ReplicaSet per pod template (named
  ``<deployment>-<template hash>``, selector and pods carrying
  ``pod-template-hash``), scaled to ``spec.replicas``; older ones are scaled to 0.
  Status: replicas, updated/ready/available replicas, ``observedGeneration``.
- ``ReplicaSetController``: claims pods like ``ControllerRefManager``: an owned pod
  whose labels stop matching the selector is *released* (its ownerReference
  removed); an orphan that matches is adopted; then it creates or deletes pods so
  that the active (not terminating, not finished) owned pods number
  ``spec.replicas``. A released pod is never re-adopted unless its labels match
  again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import ApiError
from .operations import Cluster
from .resources import DEPLOYMENTS, PODS, REPLICASETS, ResourceType
from .selectors import label_selector_from_struct
from .validation import format_time, parse_time

__all__ = ["Controller", "ControllerManager", "DeploymentController",
           "ReplicaSetController", "controller_ref", "owner_reference", "pod_is_active",
           "pod_is_ready",
           "set_condition"]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class Controller(Protocol):
    def reconcile(self, now: float) -> float | None:
        """Bring the world closer to the spec; return when to be called again at the latest."""


def owner_reference(resource: ResourceType, owner: Obj) -> Obj:
    return {"apiVersion": resource.api_version, "kind": resource.kind,
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def controller_ref(obj: Obj) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def pod_is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_is_active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def set_condition(status: Obj, kind: str, value: bool, reason: str | None = None,
                  message: str | None = None) -> None:
    """Set a condition, keeping ``lastTransitionTime`` when the status does not change."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    text = "True" if value else "False"
    for condition in conditions:
        if condition.get("type") == kind:
            if condition.get("status") != text:
                condition["lastTransitionTime"] = format_time()
            condition["status"] = text
            break
    else:
        condition = {"type": kind, "status": text, "lastProbeTime": None,
                     "lastTransitionTime": format_time()}
        conditions.append(condition)
    for field, value_ in (("reason", reason), ("message", message)):
        if value_ is None:
            condition.pop(field, None)
        else:
            condition[field] = value_


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(_HASH_ALPHABET))
        chars.append(_HASH_ALPHABET[index])
    return "".join(chars)


class ReplicaSetController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def reconcile(self, now: float) -> float | None:
        for rs in self.cluster.store.objects(REPLICASETS):
            self._sync(rs)
        return None

    def _sync(self, rs: Obj) -> None:
        cluster, meta = self.cluster, rs["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        spec = rs.get("spec") or {}
        try:
            selector = label_selector_from_struct(spec.get("selector"))
        except ValueError:
            return
        owned: list[Obj] = []
        for pod in cluster.select(PODS, namespace):
            ref, pmeta = controller_ref(pod), pod["metadata"]
            matches = selector.matches(pmeta.get("labels"))
            if ref is not None and ref.get("uid") == uid:
                if matches:
                    owned.append(pod)
                elif not pmeta.get("deletionTimestamp"):
                    self._release(pod, uid)
            elif ref is None and matches and not pmeta.get("deletionTimestamp"):
                adopted = cluster.mutate(PODS, namespace, pmeta["name"], lambda p: p[
                    "metadata"].setdefault("ownerReferences", []).append(
                    owner_reference(REPLICASETS, rs)))
                if adopted is not None:
                    owned.append(adopted)
        active = [p for p in owned if pod_is_active(p)]
        wanted = int(spec.get("replicas", 1))
        if len(active) < wanted:
            for _ in range(wanted - len(active)):
                self._create_pod(rs)
        elif len(active) > wanted:
            for pod in _deletion_order(active)[:len(active) - wanted]:
                with contextlib.suppress(ApiError):
                    cluster.delete(PODS, namespace, pod["metadata"]["name"])
        ready = sum(1 for p in active if pod_is_ready(p))

        def write_status(obj: Obj) -> None:
            obj["status"] = {"replicas": len(active), "fullyLabeledReplicas": len(active),
                             "readyReplicas": ready, "availableReplicas": ready,
                             "observedGeneration": obj["metadata"].get("generation", 1)}
        cluster.mutate(REPLICASETS, namespace, meta["name"], write_status)

    def _release(self, pod: Obj, owner_uid: str) -> None:
        def release(obj: Obj) -> None:
            refs = [r for r in obj["metadata"].get("ownerReferences") or []
                    if r.get("uid") != owner_uid]
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)
        meta = pod["metadata"]
        self.cluster.mutate(PODS, meta["namespace"], meta["name"], release)

    def _create_pod(self, rs: Obj) -> None:
        template = (rs.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        meta = rs["metadata"]
        pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "generateName": f"{meta['name']}-", "namespace": meta["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_reference(REPLICASETS, rs)]},
            "spec": json.loads(json.dumps(template.get("spec") or {}))}
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = dict(tmeta["annotations"])
        try:
            self.cluster.create_internal(PODS, pod)
        except ApiError as error:
            logger.warning("kubesim: replicaset %s could not create a pod: %s",
                           meta["name"], error.body.get("message"))


def _deletion_order(pods: Sequence[Obj]) -> list[Obj]:
    """Which pods a scale-down removes first: unready, not running, newest."""
    def rank(pod: Obj) -> tuple[bool, bool, float]:
        running = (pod.get("status") or {}).get("phase") == "Running"
        created = pod["metadata"].get("creationTimestamp", "")
        return pod_is_ready(pod), running, -_seconds(created)
    return sorted(pods, key=rank)


def _seconds(stamp: str) -> float:
    try:
        return parse_time(stamp)
    except ValueError:
        return 0.0


class DeploymentController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def reconcile(self, now: float) -> float | None:
        for deployment in self.cluster.store.objects(DEPLOYMENTS):
            if not deployment["metadata"].get("deletionTimestamp"):
                self._sync(deployment)
        return None

    def _sync(self, deployment: Obj) -> None:
        cluster, meta = self.cluster, deployment["metadata"]
        namespace, spec = meta["namespace"], deployment.get("spec") or {}
        template = spec.get("template") or {}
        digest = template_hash(template)
        owned = [rs for rs in cluster.select(REPLICASETS, namespace)
                 if (controller_ref(rs) or {}).get("uid") == meta["uid"]]
        current = next((rs for rs in owned if rs["metadata"].get("labels", {}).get(
            "pod-template-hash") == digest), None)
        replicas = int(spec.get("replicas", 1))
        if current is None:
            current = self._create_replicaset(deployment, digest, replicas, len(owned) + 1)
        elif (current.get("spec") or {}).get("replicas") != replicas:
            cluster.mutate(REPLICASETS, namespace, current["metadata"]["name"],
                           lambda rs: rs["spec"].update(replicas=replicas))
        for old in owned:
            if current is not None and old["metadata"]["uid"] != current["metadata"]["uid"] \
                    and (old.get("spec") or {}).get("replicas") != 0:
                cluster.mutate(REPLICASETS, namespace, old["metadata"]["name"],
                               lambda rs: rs["spec"].update(replicas=0))
        self._write_status(deployment, owned, current)

    def _create_replicaset(self, deployment: Obj, digest: str, replicas: int,
                           revision: int) -> Obj | None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        template = json.loads(json.dumps(spec.get("template") or {}))
        labels = {**(template.get("metadata") or {}).get("labels", {}),
                  "pod-template-hash": digest}
        template.setdefault("metadata", {})["labels"] = labels
        selector = json.loads(json.dumps(spec.get("selector") or {}))
        selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
        rs: Obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": f"{meta['name']}-{digest}", "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/desired-replicas": str(replicas),
                            "deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [owner_reference(DEPLOYMENTS, deployment)]},
            "spec": {"replicas": replicas, "selector": selector, "template": template}}
        try:
            return self.cluster.create_internal(REPLICASETS, rs)
        except ApiError as error:
            logger.warning("kubesim: deployment %s could not create its replicaset: %s",
                           meta["name"], error.body.get("message"))
            return None

    def _write_status(self, deployment: Obj, owned: list[Obj], current: Obj | None) -> None:
        def total(field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in owned)
        meta = deployment["metadata"]
        replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        available = total("availableReplicas")
        updated = int(((current or {}).get("status") or {}).get("replicas", 0))

        def write(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status.update(observedGeneration=meta.get("generation", 1),
                          replicas=total("replicas"), updatedReplicas=updated,
                          readyReplicas=total("readyReplicas"), availableReplicas=available,
                          unavailableReplicas=max(0, replicas - available))
            set_condition(status, "Available", available >= replicas,
                          "MinimumReplicasAvailable" if available >= replicas else
                          "MinimumReplicasUnavailable")
        self.cluster.mutate(DEPLOYMENTS, meta["namespace"], meta["name"], write)


class ControllerManager:
    """Runs the controllers after each write and at their timers."""

    def __init__(self, cluster: Cluster, controllers: Sequence[Controller]) -> None:
        self.cluster = cluster
        self.controllers = list(controllers)

    def reconcile_once(self) -> float | None:
        wakes: list[float] = []
        for controller in self.controllers:
            try:
                wake = controller.reconcile(time.time())
            except Exception:
                logger.exception("kubesim: %s failed", type(controller).__name__)
                continue
            if wake is not None:
                wakes.append(wake)
        return min(wakes) if wakes else None

    async def run(self) -> None:
        store = self.cluster.store
        while True:
            seen = store.rv
            wake = self.reconcile_once()
            timeout = None if wake is None else max(0.0, wake - time.time()) + 0.01
            await store.wait_changed(seen, timeout)
