"""The reaper: deletes claimed pods and Jobs whose lease has expired.

Run by every replica on a timer and by ``k8si reap`` (a CronJob); it is idempotent,
so many reapers at once are harmless. The lease is the ``k8si.io/expires-at``
annotation written by the claim; the pod's ``activeDeadlineSeconds`` is the
backstop if no reaper runs at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .claims import ANNOTATION_EXPIRES_AT, timestamp
from .client import JOBS, PODS, KubeClient
from .pools import PoolScaler
from .templates import LABEL_COMPONENT, LABEL_STATE

__all__ = ["lease_expired", "maintain", "reap"]

logger = logging.getLogger(__name__)


def lease_expired(obj: dict[str, Any], now: float, grace: float = 0.0) -> bool:
    """True when the object's lease (or, without one, its age) has run out."""
    metadata = obj.get("metadata", {})
    expires = (metadata.get("annotations") or {}).get(ANNOTATION_EXPIRES_AT)
    if expires is not None:
        try:
            return float(expires) + grace < now
        except ValueError:
            return True  # a lease nobody can read is no lease
    created = metadata.get("creationTimestamp")
    if created is None:
        return False
    born = timestamp(created)
    return born + 3600 + grace < now


async def reap(client: KubeClient, grace: float = 0.0) -> int:
    """Delete every expired claimed pod and cold-path Job; the number deleted."""
    now, deleted = time.time(), 0
    # Deleted only as listed: a lease renewed meanwhile (a resumed run, a reclaimed
    # runtime session) changed the object, and the delete's precondition fails.
    claimed = await client.list_objects(PODS, labelSelector=f"{LABEL_STATE}=claimed")
    for pod in claimed.get("items", []):
        if lease_expired(pod, now, grace) and await client.delete(
                PODS, pod["metadata"]["name"],
                resource_version=pod["metadata"].get("resourceVersion")):
            deleted += 1
    jobs = await client.list_objects(JOBS, labelSelector=f"{LABEL_COMPONENT}=job")
    for job in jobs.get("items", []):
        if lease_expired(job, now, grace) and await client.delete(
                JOBS, job["metadata"]["name"], propagation="Background",
                resource_version=job["metadata"].get("resourceVersion")):
            deleted += 1
    if deleted:
        logger.info("reaped expired sandboxes", extra={"count": deleted})
    return deleted


async def maintain(client: KubeClient, scaler: PoolScaler) -> int:
    """One maintenance pass: reap expired leases, then shrink idle pools.

    Every replica runs it on a timer, and ``k8si reap`` runs it once (a CronJob), so
    pools shrink even while the API itself is scaled to zero.
    """
    deleted = await reap(client)
    await scaler.shrink_idle()
    return deleted
