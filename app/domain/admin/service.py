"""What the operator page shows, assembled from the backend and Valkey.

- pools per language (``backend.pools()``: warm, starting, claimed) and the
  backend's own health;
- the recent executions (``k8si:recent``, newest first) and what they add up to:
  counts and error rates overall and per language, durations;
- sessions per tenant, counted by scanning the session records with ``SCAN``
  (bounded: past ``max_sessions`` records the count says it is partial).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ...backends import SandboxBackend
from ...errors import ServiceUnavailable
from ..exec.recent import RecentExecutions

__all__ = ["AdminService", "summarize"]

_SESSION_PATTERN = "k8si:session:*"
#: Statuses of a program that did what it was asked (the rest count as errors).
_OK = "ok"
#: Failures of the service rather than of the program.
_SERVICE_FAILURES = ("sandbox_failed", "failed")


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def summarize(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts, error rates and durations over ``entries`` (recent executions)."""
    total = len(entries)
    statuses = Counter(str(e.get("status")) for e in entries)
    durations = sorted(float(e.get("duration_ms") or 0) for e in entries)
    per_language: dict[str, dict[str, Any]] = {}
    for entry in entries:
        language = per_language.setdefault(str(entry.get("language")),
                                           {"count": 0, "errors": 0, "total_ms": 0.0})
        language["count"] += 1
        language["errors"] += entry.get("status") != _OK
        language["total_ms"] += float(entry.get("duration_ms") or 0)
    return {
        "count": total,
        "by_status": dict(statuses),
        "error_rate": _rate(total - statuses[_OK], total),
        "service_error_rate": _rate(sum(statuses[s] for s in _SERVICE_FAILURES), total),
        "duration_ms": {"median": durations[total // 2] if total else None,
                        "p95": durations[min(total - 1, int(total * 0.95))] if total else None,
                        "max": durations[-1] if total else None},
        "by_language": {
            code: {"count": v["count"], "errors": v["errors"],
                   "error_rate": _rate(v["errors"], v["count"]),
                   "mean_ms": round(v["total_ms"] / v["count"], 2)}
            for code, v in sorted(per_language.items())},
    }


class AdminService:
    """Reads the operator's view; never changes anything."""

    def __init__(self, client: valkey.Valkey, backend: SandboxBackend,
                 recent: RecentExecutions, max_sessions: int = 20000) -> None:
        self._client = client
        self._backend = backend
        self._recent = recent
        self._max_sessions = max_sessions

    async def overview(self, limit: int) -> dict[str, Any]:
        try:
            entries = await self._recent.latest(limit)
            sessions = await self.sessions_per_tenant()
        except (ValkeyError, OSError) as exc:
            raise ServiceUnavailable("Valkey unavailable", retry_after=2) from exc
        pools = await self._backend.pools()
        health = await self._backend.health()
        return {
            "backend": {"name": self._backend.name, **health},
            "pools": {code: attrs.asdict(pool) for code, pool in pools.items()},
            "executions": {"recent": entries, "summary": summarize(entries)},
            "sessions": sessions,
        }

    async def sessions_per_tenant(self) -> dict[str, Any]:
        """Live session records per tenant (at most ``max_sessions`` records looked at)."""
        tenants: Counter[str] = Counter()
        scanned, cursor, complete = 0, 0, False
        while scanned < self._max_sessions:
            cursor, keys = await self._client.scan(cursor, match=_SESSION_PATTERN, count=500)
            keys = keys[:self._max_sessions - scanned]
            scanned += len(keys)
            if keys:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hget(key, "tenant")
                    for tenant in await pipe.execute():
                        if tenant is not None:  # expired between SCAN and HGET
                            tenants[tenant.decode(errors="replace")] += 1
            if cursor == 0:
                complete = True
                break
        return {"by_tenant": dict(sorted(tenants.items())), "total": sum(tenants.values()),
                "complete": complete}
