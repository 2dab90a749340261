"""Per-tenant storage quotas, atomic across replicas (one Valkey script per change).

Stored bytes and file count: reserved before a file is stored, given back when it is
deleted or expires. (The tenant's execution quotas, per window and concurrent, are
checked with every other per-request limit in ``admission.py``.)
"""

from __future__ import annotations

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import PayloadTooLarge, ServiceUnavailable
from ..settings import TenantSettings

__all__ = ["QuotaExceeded", "TenantQuotas"]

_RESERVE = """
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local files = tonumber(redis.call('HGET', KEYS[1], 'files') or '0')
local add_bytes, add_files = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_bytes, max_files = tonumber(ARGV[3]), tonumber(ARGV[4])
if add_bytes > 0 and max_bytes > 0 and bytes + add_bytes > max_bytes then return 0 end
if add_files > 0 and max_files > 0 and files + add_files > max_files then return 0 end
redis.call('HINCRBY', KEYS[1], 'bytes', add_bytes)
redis.call('HINCRBY', KEYS[1], 'files', add_files)
return 1
"""


class QuotaExceeded(PayloadTooLarge):
    """The tenant's storage quota would be exceeded (413)."""

    code = "quota_exceeded"


class TenantQuotas:
    """Checks and counts what each tenant uses."""

    def __init__(self, client: valkey.Valkey, settings: TenantSettings) -> None:
        self._client = client
        self._settings = settings
        self._reserve = client.register_script(_RESERVE)

    async def _run(self, script: object, keys: list[str], args: list[object]) -> int:
        try:
            return int(await script(keys=keys, args=args))  # type: ignore[operator]
        except ValkeyError as exc:
            raise ServiceUnavailable("quota store unavailable", retry_after=2) from exc

    async def reserve(self, tenant: str, size: int, files: int = 1) -> None:
        """Count a file about to be stored, or raise ``QuotaExceeded``."""
        limits = self._settings.limits(tenant)
        if not await self._run(self._reserve, [f"k8si:quota:usage:{tenant}"],
                               [size, files, limits.storage_bytes, limits.files]):
            raise QuotaExceeded(f"tenant {tenant!r} storage quota reached "
                                f"({limits.storage_bytes} bytes, {limits.files} files)")

    async def release(self, tenant: str, size: int, files: int = 1) -> None:
        """Give back what a deleted or expired file counted."""
        await self._run(self._reserve, [f"k8si:quota:usage:{tenant}"], [-size, -files, 0, 0])

    async def usage(self, tenant: str) -> tuple[int, int]:
        data = await self._client.hgetall(f"k8si:quota:usage:{tenant}")  # type: ignore[misc]
        return int(data.get(b"bytes", 0)), int(data.get(b"files", 0))
