"""Rate limits per tenant and per credential, atomic across replicas.

A fixed window counted in Valkey by one Lua script (``INCR`` + ``PEXPIRE`` in a
single step, the window taken from the server's clock), so N replicas together
allow exactly the configured number of requests per window: never get-then-set.
"""

from __future__ import annotations

import attrs
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from .errors import RateLimited, ServiceUnavailable

__all__ = ["AuthFailureLimiter", "RateLimiter"]

# KEYS: the counters; ARGV[1]: window seconds; ARGV[2..]: limits (0 = unlimited).
# Returns the seconds until the window ends if any counter is over its limit, else 0.
_SCRIPT = """
local window = tonumber(ARGV[1])
local now = redis.call('TIME')
local slot = math.floor(tonumber(now[1]) / window)
local retry = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  if limit > 0 then
    local name = key .. ':' .. slot
    local count = redis.call('INCR', name)
    if count == 1 then redis.call('EXPIRE', name, window + 1) end
    if count > limit then
      retry = math.max(retry, window - (tonumber(now[1]) % window))
    end
  end
end
return retry
"""


@attrs.define(slots=False)
class RateLimiter:
    """Counts requests of a tenant and of a credential in the current window."""

    client: valkey.Valkey
    window: int
    tenant_limit: int
    key_limit: int

    def __attrs_post_init__(self) -> None:
        self._script = self.client.register_script(_SCRIPT)

    async def check(self, tenant: str, credential: str) -> None:
        """Count one request; ``RateLimited`` (429) when either allowance is used up."""
        if self.tenant_limit <= 0 and self.key_limit <= 0:
            return
        keys = [f"k8si:rl:tenant:{tenant}", f"k8si:rl:key:{credential}"]
        try:
            retry = int(await self._script(keys=keys, args=[
                self.window, self.tenant_limit, self.key_limit]))
        except ValkeyError as exc:
            raise ServiceUnavailable("rate limiter unavailable", retry_after=2) from exc
        if retry > 0:
            raise RateLimited("too many requests; slow down", retry_after=max(1, retry))


_FAILURES = """
local now = redis.call('TIME')
local key = KEYS[1] .. ':' .. math.floor(tonumber(now[1]) / tonumber(ARGV[1]))
if ARGV[3] == 'record' then
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, tonumber(ARGV[1]) + 1) end
  return 0
end
local count = tonumber(redis.call('GET', key) or '0')
if count >= tonumber(ARGV[2]) then
  return tonumber(ARGV[1]) - (tonumber(now[1]) % tonumber(ARGV[1]))
end
return 0
"""


@attrs.define(slots=False)
class AuthFailureLimiter:
    """Brute-force guard: too many failed authentications from one address → 429."""

    client: valkey.Valkey
    window: int
    limit: int

    def __attrs_post_init__(self) -> None:
        self._script = self.client.register_script(_FAILURES)

    async def _call(self, address: str, action: str) -> int:
        try:
            return int(await self._script(keys=[f"k8si:authfail:{address}"],
                                          args=[self.window, self.limit, action]))
        except ValkeyError as exc:
            raise ServiceUnavailable("rate limiter unavailable", retry_after=2) from exc

    async def check(self, address: str) -> None:
        if self.limit > 0 and (retry := await self._call(address, "check")) > 0:
            raise RateLimited("too many failed authentications; slow down",
                              retry_after=max(1, retry))

    async def record(self, address: str) -> None:
        if self.limit > 0:
            await self._call(address, "record")
