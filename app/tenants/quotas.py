"""Per-tenant quotas, atomic across replicas (each check-and-count is one Valkey script).

- executions per window (fixed window, as the rate limiter);
- concurrent executions: a sorted set of running executions whose scores are lease
  deadlines, so a replica that dies mid-execution frees its slot when the lease ends;
- stored bytes and file count: reserved before a file is stored, given back when it
  is deleted or expires.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import PayloadTooLarge, RateLimited, ServiceUnavailable
from ..settings import TenantSettings

__all__ = ["QuotaExceeded", "TenantQuotas"]

_WINDOW = """
local now = redis.call('TIME')
local slot = math.floor(tonumber(now[1]) / tonumber(ARGV[1]))
local key = KEYS[1] .. ':' .. slot
local count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, tonumber(ARGV[1]) + 1) end
if count > tonumber(ARGV[2]) then
  return tonumber(ARGV[1]) - (tonumber(now[1]) % tonumber(ARGV[1]))
end
return 0
"""

_ENTER = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 60)
return 1
"""

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

    def __init__(self, client: valkey.Valkey, settings: TenantSettings,
                 default_lease: int) -> None:
        self._client = client
        self._settings = settings
        self._lease = default_lease
        self._window = client.register_script(_WINDOW)
        self._enter = client.register_script(_ENTER)
        self._reserve = client.register_script(_RESERVE)

    async def _run(self, script: object, keys: list[str], args: list[object]) -> int:
        try:
            return int(await script(keys=keys, args=args))  # type: ignore[operator]
        except ValkeyError as exc:
            raise ServiceUnavailable("quota store unavailable", retry_after=2) from exc

    @contextlib.asynccontextmanager
    async def execution(self, tenant: str) -> AsyncIterator[None]:
        """Count one execution in the window and hold a concurrency slot while it runs."""
        limits = self._settings.limits(tenant)
        if limits.executions_per_window > 0:
            retry = await self._run(self._window, [f"k8si:quota:execs:{tenant}"],
                                    [self._settings.window, limits.executions_per_window])
            if retry > 0:
                raise RateLimited(f"tenant {tenant!r} used its executions for this window",
                                  retry_after=retry)
        if limits.concurrent_executions <= 0:
            yield
            return
        key, member = f"k8si:quota:running:{tenant}", secrets.token_hex(8)
        if not await self._run(self._enter, [key], [limits.concurrent_executions,
                                                    self._lease, member]):
            raise RateLimited(f"tenant {tenant!r} already runs "
                              f"{limits.concurrent_executions} executions", retry_after=1)
        try:
            yield
        finally:
            with contextlib.suppress(ValkeyError):  # the lease frees it anyway
                await self._client.zrem(key, member)

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
