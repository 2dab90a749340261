"""Kept pods: runtime sessions (the ``stateful`` profile) on the Kubernetes backend.

A kept sandbox is a claimed pod (its state label stays ``claimed``, so pool refill and
the warm selector ignore it, as for a paused programmatic run) with, besides the
claim's tenant and session labels:

- the label ``k8si.io/runtime=<r…x>`` (the runtime session, for selectors) and the
  annotation ``k8si.io/runtime-session`` (its id in full);
- ``k8si.io/expires-at`` = the end of its idle lease (renewed by every ``keep``; the
  lease every replica's reaper already honours), ``k8si.io/runtime-ends-at`` (its
  maximum age), ``k8si.io/kept-since`` and ``k8si.io/last-used``, ``k8si.io/paused``
  false;
- ``activeDeadlineSeconds`` was set by the claim from the maximum age (the runtime
  session acquires with that lease): the crash-safe hard end even if every replica is
  gone.

Any replica reclaims it from the record's location (``pod/<name>/<ip>/<uid>``: one GET,
checked like a paused run's, plus the runtime label) and talks to its pod IP, so
replicas stay stateless. The reaper needs nothing more: the workspace was checkpointed
after the last execution, so reaping is just deleting, and the next call restores.
"""

from __future__ import annotations

import time
from typing import Any

from ..base import KeptInfo, RuntimeKey
from .claims import (
    ANNOTATION_CLAIMED_BY,
    ANNOTATION_EXPIRES_AT,
    ANNOTATION_PAUSED,
    ANNOTATION_SESSION,
    ANNOTATION_TENANT,
    LABEL_TENANT,
    label_value,
    pointer,
)
from .reaper import lease_expired
from .templates import LABEL_LANGUAGE

__all__ = ["LABEL_RUNTIME", "keep_patch", "kept_info", "kept_selector", "runtime_matches"]

LABEL_RUNTIME = "k8si.io/runtime"
ANNOTATION_RUNTIME = "k8si.io/runtime-session"
ANNOTATION_RUNTIME_ENDS_AT = "k8si.io/runtime-ends-at"
ANNOTATION_KEPT_SINCE = "k8si.io/kept-since"
ANNOTATION_LAST_USED = "k8si.io/last-used"


def keep_patch(obj: dict[str, Any], key: RuntimeKey, idle_until: float, ends_at: float,
               replica: str) -> list[dict[str, Any]]:
    """The JSON Patch that keeps a claimed object for its runtime session."""
    now = time.time()
    annotations = obj.get("metadata", {}).get("annotations") or {}
    since = annotations.get(ANNOTATION_KEPT_SINCE) or f"{now:.3f}"
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": f"/metadata/labels/{pointer(LABEL_RUNTIME)}",
         "value": label_value("r", key.runtime_session_id)}]
    for name, value in ((ANNOTATION_EXPIRES_AT, f"{idle_until:.3f}"),
                        (ANNOTATION_CLAIMED_BY, replica), (ANNOTATION_PAUSED, "false"),
                        (ANNOTATION_RUNTIME, key.runtime_session_id),
                        (ANNOTATION_RUNTIME_ENDS_AT, f"{ends_at:.3f}"),
                        (ANNOTATION_KEPT_SINCE, since), (ANNOTATION_LAST_USED, f"{now:.3f}")):
        ops.append({"op": "add", "path": f"/metadata/annotations/{pointer(name)}",
                    "value": value})
    return ops


def runtime_matches(obj: dict[str, Any], key: RuntimeKey) -> bool:
    """The object is kept for this runtime session (label and annotation agree)."""
    metadata = obj.get("metadata", {})
    labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
    return (labels.get(LABEL_RUNTIME) == label_value("r", key.runtime_session_id)
            and annotations.get(ANNOTATION_RUNTIME) == key.runtime_session_id)


def kept_selector(tenant: str | None) -> str:
    """Kept pods (of one tenant)."""
    if tenant is None:
        return LABEL_RUNTIME
    return f"{LABEL_RUNTIME},{LABEL_TENANT}={label_value('t', tenant)}"


def _seconds(annotations: dict[str, Any], name: str) -> float:
    try:
        return float(annotations.get(name, "0"))
    except ValueError:
        return 0.0


def kept_info(obj: dict[str, Any], now: float,
              pod: dict[str, Any] | None = None) -> KeptInfo | None:
    """A kept pod, or a kept Job (``obj``) with its ``pod``, as ``runtime_sandboxes``
    lists it; None when it is ending or ended."""
    kind = "pod" if pod is None else "job"
    pod = obj if pod is None else pod
    metadata, status = obj.get("metadata", {}), pod.get("status", {})
    pod_metadata = pod.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    if (metadata.get("deletionTimestamp") or pod_metadata.get("deletionTimestamp")
            or lease_expired(obj, now) or status.get("phase") != "Running"
            or not status.get("podIP") or not annotations.get(ANNOTATION_RUNTIME)):
        return None
    key = RuntimeKey(tenant=str(annotations.get(ANNOTATION_TENANT, "")),
                     runtime_session_id=str(annotations[ANNOTATION_RUNTIME]),
                     session_id=str(annotations.get(ANNOTATION_SESSION, "")))
    return KeptInfo(
        location=(f"{kind}/{metadata['name']}/{status['podIP']}/"
                  f"{pod_metadata.get('uid', '')}"),
        key=key, language=str((metadata.get("labels") or {}).get(LABEL_LANGUAGE, "")),
        kept_since=_seconds(annotations, ANNOTATION_KEPT_SINCE),
        idle_until=_seconds(annotations, ANNOTATION_EXPIRES_AT),
        ends_at=_seconds(annotations, ANNOTATION_RUNTIME_ENDS_AT))
