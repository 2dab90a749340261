"""Admission: every per-request limit in one Valkey round trip, atomic across replicas.

Once a caller is authenticated, one Lua script (``_ADMIT``) checks in this order:

1. the brute-force guard of the caller's address (``AUTH_FAILURES_PER_WINDOW``
   failed authentications per ``TENANT_WINDOW``; forwarded headers are never trusted);
2. the tenant's and the credential's rate limits (``RATE_LIMIT_TENANT``,
   ``RATE_LIMIT_KEY`` per ``RATE_LIMIT_WINDOW``);
3. for requests that run code, the tenant's executions per window and its concurrent
   executions (``TENANT_EXECUTIONS_PER_WINDOW``, ``TENANT_CONCURRENT_EXECUTIONS``): a
   sorted set of running executions whose scores are lease deadlines, so a replica
   that dies mid-execution frees its slot when the lease ends.

A refusal is that check's own 429, and nothing after it is counted, except that an
execution over its tenant's concurrency limit first waits for a slot, up to
``QUEUE_TIMEOUT`` seconds as executions wait for backend slots: it asks again with a
smaller script (``_CLAIM``: the concurrency check alone, nothing counted twice),
polling with a growing interval, and only then answers 429. The first attempt stays
one round trip. Windows are
fixed and taken from the server's clock (``INCR`` + ``EXPIRE`` in the same step), so
N replicas together allow exactly the configured numbers: never get-then-set. A
failed authentication is one more script (``_FAILED``): refused when the address is
already blocked, otherwise counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time

import attrs
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from .errors import RateLimited, ServiceUnavailable
from .settings import Settings

__all__ = ["Admission", "Slot"]

# KEYS: 1 the address's failures, 2 the tenant's and 3 the credential's request counts,
#       4 the tenant's executions, 5 its running executions (sorted set).
# ARGV: 1 failures window, 2 failures limit, 3 rate window, 4 tenant limit, 5 credential
#       limit, 6 runs code ('1'/'0'), 7 executions window, 8 executions limit,
#       9 concurrency limit, 10 lease seconds, 11 this execution's member.
# Limits of 0 are off. Returns {0, 0} when admitted, else {check, seconds to retry}:
# 1 failures, 2 rate limit, 3 executions window, 4 concurrency.
_ADMIT = """
local now = redis.call('TIME')
local seconds = tonumber(now[1])
local function counter(key, window)
  local name = key .. ':' .. math.floor(seconds / window)
  local count = redis.call('INCR', name)
  if count == 1 then redis.call('EXPIRE', name, window + 1) end
  return count
end
local function left(window) return window - (seconds % window) end

local failures_window, failures_limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if failures_limit > 0 then
  local name = KEYS[1] .. ':' .. math.floor(seconds / failures_window)
  if tonumber(redis.call('GET', name) or '0') >= failures_limit then
    return {1, left(failures_window)}
  end
end
local rate_window, retry = tonumber(ARGV[3]), 0
for i = 2, 3 do
  local limit = tonumber(ARGV[i + 2])
  if limit > 0 and counter(KEYS[i], rate_window) > limit then retry = left(rate_window) end
end
if retry > 0 then return {2, retry} end
if ARGV[6] ~= '1' then return {0, 0} end
local executions_window, executions_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
if executions_limit > 0 and counter(KEYS[4], executions_window) > executions_limit then
  return {3, left(executions_window)}
end
local concurrency, lease = tonumber(ARGV[9]), tonumber(ARGV[10])
if concurrency > 0 then
  local t = seconds + tonumber(now[2]) / 1e6
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', t)
  if redis.call('ZCARD', KEYS[5]) >= concurrency then return {4, 1} end
  redis.call('ZADD', KEYS[5], t + lease, ARGV[11])
  redis.call('EXPIRE', KEYS[5], lease + 60)
end
return {0, 0}
"""

# KEYS: the tenant's running executions; ARGV: concurrency limit, lease seconds, member.
# Returns 1 when the slot was taken, 0 when the tenant still runs its limit.
_CLAIM = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 60)
return 1
"""

#: Polling a full tenant for a free slot: first and longest pause (seconds).
_FIRST_POLL, _MAX_POLL = 0.05, 0.5

# KEYS: the address's failures; ARGV: window, limit. Returns the seconds to retry when
# the address is blocked (nothing counted), else 0 after counting this failure.
_FAILED = """
local now = redis.call('TIME')
local window = tonumber(ARGV[1])
local name = KEYS[1] .. ':' .. math.floor(tonumber(now[1]) / window)
if tonumber(redis.call('GET', name) or '0') >= tonumber(ARGV[2]) then
  return window - (tonumber(now[1]) % window)
end
if redis.call('INCR', name) == 1 then redis.call('EXPIRE', name, window + 1) end
return 0
"""


@attrs.frozen
class Slot:
    """A concurrency slot an execution holds until it is over (``Admission.leave``)."""

    tenant: str
    member: str


class Admission:
    """Checks and counts a request against every limit that applies to it."""

    def __init__(self, client: valkey.Valkey, settings: Settings, lease: int) -> None:
        self._client = client
        self._settings = settings
        self._lease = lease
        self._admit = client.register_script(_ADMIT)
        self._failed = client.register_script(_FAILED)
        self._claim = client.register_script(_CLAIM)

    async def admit(self, address: str, tenant: str, credential: str,
                    runs_code: bool) -> Slot | None:
        """Count the request, or ``RateLimited`` (429) naming the limit it hit. A request
        that runs code may get a ``Slot`` to give back once it is over."""
        settings, limits = self._settings, self._settings.tenants.limits(tenant)
        if not (settings.tenants.auth_failures_per_window > 0 or settings.rate_limit_tenant > 0
                or settings.rate_limit_key > 0 or (runs_code and (
                    limits.executions_per_window > 0 or limits.concurrent_executions > 0))):
            return None  # no limit applies: no round trip
        slot = Slot(tenant, secrets.token_hex(8)) \
            if runs_code and limits.concurrent_executions > 0 else None
        keys = [f"k8si:authfail:{address}", f"k8si:rl:tenant:{tenant}",
                f"k8si:rl:key:{credential}", f"k8si:quota:execs:{tenant}",
                f"k8si:quota:running:{tenant}"]
        args = [settings.tenants.window, settings.tenants.auth_failures_per_window,
                settings.rate_limit_window, settings.rate_limit_tenant, settings.rate_limit_key,
                "1" if runs_code else "0", settings.tenants.window,
                limits.executions_per_window, limits.concurrent_executions, self._lease,
                slot.member if slot is not None else ""]
        try:
            check, retry = (int(value) for value in await self._admit(keys=keys, args=args))
        except ValkeyError as exc:
            raise ServiceUnavailable("rate limiter unavailable", retry_after=2) from exc
        if check == 1:
            raise RateLimited("too many failed authentications; slow down",
                              retry_after=max(1, retry))
        if check == 2:
            raise RateLimited("too many requests; slow down", retry_after=max(1, retry))
        if check == 3:
            raise RateLimited(f"tenant {tenant!r} used its executions for this window",
                              retry_after=max(1, retry))
        if check == 4 and slot is not None:
            await self._wait_for_slot(slot, limits.concurrent_executions)
        return slot

    async def _wait_for_slot(self, slot: Slot, concurrency: int) -> None:
        """Take a concurrency slot as soon as one is free, or 429 after ``QUEUE_TIMEOUT``."""
        deadline = time.monotonic() + self._settings.queue_timeout
        pause = _FIRST_POLL
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, pause * random.uniform(0.8, 1.2)))  # noqa: S311
            pause = min(pause * 2, _MAX_POLL)
            try:
                if int(await self._claim(keys=[f"k8si:quota:running:{slot.tenant}"],
                                         args=[concurrency, self._lease, slot.member])):
                    return
            except ValkeyError as exc:
                raise ServiceUnavailable("rate limiter unavailable", retry_after=2) from exc
        raise RateLimited(f"tenant {slot.tenant!r} already runs {concurrency} executions "
                          f"(waited {self._settings.queue_timeout} s for one to end)",
                          retry_after=1)

    async def leave(self, slot: Slot) -> None:
        """Give the concurrency slot back (if Valkey is unreachable, its lease ends it)."""
        with contextlib.suppress(ValkeyError):
            await self._client.zrem(f"k8si:quota:running:{slot.tenant}", slot.member)

    async def failed(self, address: str) -> None:
        """Count a failed authentication; ``RateLimited`` if the address is blocked."""
        limit, window = self._settings.tenants.auth_failures_per_window, \
            self._settings.tenants.window
        if limit <= 0:
            return
        try:
            retry = int(await self._failed(keys=[f"k8si:authfail:{address}"],
                                           args=[window, limit]))
        except ValkeyError as exc:
            raise ServiceUnavailable("rate limiter unavailable", retry_after=2) from exc
        if retry > 0:
            raise RateLimited("too many failed authentications; slow down", retry_after=retry)
