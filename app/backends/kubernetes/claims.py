"""Claiming a warm pod: one atomic JSON Patch on its labels (see kubernetes.md).

Candidates are listed with a label and a field selector, filtered for readiness on
our side, and tried from a random starting point so replicas do not all fight over
the first. The patch ``test``s that the state label is still ``warm``; a 422 or 404
means another replica won that pod (try the next one). All bookkeeping is in the
pod's labels and annotations: nothing about the claim lives in this process.
"""

from __future__ import annotations

import random
import secrets
import time
from datetime import datetime
from typing import Any

import attrs

from .templates import LABEL_POOL, LABEL_STATE

__all__ = [
    "ClaimRequest",
    "claim_patch",
    "is_ready",
    "label_value",
    "lease_patch",
    "pointer",
    "timestamp",
    "warm_selector",
    "won_by",
]

ANNOTATION_CLAIMED_AT = "k8si.io/claimed-at"
ANNOTATION_EXPIRES_AT = "k8si.io/expires-at"
ANNOTATION_CLAIMED_BY = "k8si.io/claimed-by"
ANNOTATION_SESSION = "k8si.io/session"
ANNOTATION_TENANT = "k8si.io/tenant"
#: "true" while the program waits for a client's tool results (programmatic tool calling).
ANNOTATION_PAUSED = "k8si.io/paused"
#: A nonce of the claim that won the pod: a replica whose patch was applied but whose
#: answer was lost (the client sent it again, and the ``test`` then failed) knows it.
ANNOTATION_CLAIM_ID = "k8si.io/claim-id"
LABEL_SESSION = "k8si.io/session"
LABEL_TENANT = "k8si.io/tenant"


@attrs.frozen
class ClaimRequest:
    """Who claims, for what, and for how long."""

    session_id: str
    tenant: str
    replica: str
    #: The lease the reaper honours (``expires-at``), renewed as the work goes on.
    lease_seconds: int
    #: The hard end (``activeDeadlineSeconds``, crash-safe); None: the lease.
    deadline_seconds: int | None = None
    #: This claim's nonce (``ANNOTATION_CLAIM_ID``).
    claim_id: str = attrs.field(factory=lambda: secrets.token_hex(8))

    @property
    def hard_end_seconds(self) -> int:
        return max(self.lease_seconds, self.deadline_seconds or 0)


def pointer(key: str) -> str:
    """A JSON Pointer segment for a label or annotation key (``~`` → ``~0``, ``/`` → ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def label_value(prefix: str, value: str) -> str:
    """A valid label value (alphanumeric at both ends, ≤ 63) carrying ``value``."""
    return f"{prefix}{value[:60]}x"


def warm_selector(lang: str) -> dict[str, str]:
    return {"labelSelector": f"{LABEL_POOL}={lang},{LABEL_STATE}=warm",
            "fieldSelector": "status.phase=Running"}


def is_ready(pod: dict[str, Any]) -> bool:
    """Ready condition true, container statuses present, not being deleted."""
    metadata, status = pod.get("metadata", {}), pod.get("status", {})
    if metadata.get("deletionTimestamp") or not status.get("containerStatuses"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions", []))


def shuffled_candidates(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready pods, rotated to start at a random one."""
    ready = [p for p in pods if is_ready(p) and p.get("status", {}).get("podIP")]
    if not ready:
        return []
    start = random.randrange(len(ready))  # noqa: S311 - spreading load, not security
    return ready[start:] + ready[:start]


def claim_patch(pod: dict[str, Any], claim: ClaimRequest) -> list[dict[str, Any]]:
    """The one JSON Patch that claims ``pod`` (or fails its ``test`` atomically)."""
    now = time.time()
    annotations = pod.get("metadata", {}).get("annotations")
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": f"/metadata/labels/{pointer(LABEL_STATE)}", "value": "warm"},
        {"op": "replace", "path": f"/metadata/labels/{pointer(LABEL_STATE)}",
         "value": "claimed"},
        {"op": "add", "path": f"/metadata/labels/{pointer(LABEL_SESSION)}",
         "value": label_value("s", claim.session_id)},
        {"op": "add", "path": f"/metadata/labels/{pointer(LABEL_TENANT)}",
         "value": label_value("t", claim.tenant)},
    ]
    if annotations is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in ((ANNOTATION_CLAIMED_AT, f"{now:.3f}"),
                       (ANNOTATION_EXPIRES_AT, f"{now + claim.lease_seconds:.3f}"),
                       (ANNOTATION_CLAIMED_BY, claim.replica),
                       (ANNOTATION_SESSION, claim.session_id),
                       (ANNOTATION_TENANT, claim.tenant),
                       (ANNOTATION_CLAIM_ID, claim.claim_id)):
        ops.append({"op": "add", "path": f"/metadata/annotations/{pointer(key)}",
                    "value": value})
    # A hard, crash-safe lease: the kubelet ends the pod even if every replica died.
    # The deadline counts from the pod's start, not from the claim.
    ops.append({"op": "add", "path": "/spec/activeDeadlineSeconds",
                "value": _age(pod, now) + claim.hard_end_seconds})
    return ops


def won_by(pod: dict[str, Any], claim: ClaimRequest) -> bool:
    """Whether ``pod`` carries ``claim`` (its patch applied, whatever its answer said)."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    return annotations.get(ANNOTATION_CLAIM_ID) == claim.claim_id


def lease_patch(seconds: float, replica: str, *, paused: bool) -> list[dict[str, Any]]:
    """A new lease on a claimed object (a paused programmatic run, or its next step):
    the reaper deletes it once ``expires-at`` has passed."""
    return [{"op": "add", "path": f"/metadata/annotations/{pointer(key)}", "value": value}
            for key, value in ((ANNOTATION_EXPIRES_AT, f"{time.time() + seconds:.3f}"),
                               (ANNOTATION_CLAIMED_BY, replica),
                               (ANNOTATION_PAUSED, "true" if paused else "false"))]


def timestamp(stamp: str) -> float:
    """Seconds since the epoch of an apiserver time (``2026-01-01T00:00:00Z``)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _age(pod: dict[str, Any], now: float) -> int:
    started = pod.get("status", {}).get("startTime") or pod.get("metadata", {}).get(
        "creationTimestamp")
    if not started:
        return 0
    born = timestamp(str(started))
    return max(0, int(now - born) + 1)
