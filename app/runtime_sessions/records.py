"""Runtime-session records in Valkey: the record, the LRU of kept sandboxes, the lock.

- ``k8si:rt:rec:<tenant>:<sha256(hint)>`` → the record (JSON). A hint is only ever looked
  up with the caller's tenant: two tenants with one hint have two runtime sessions,
  and another tenant's hint reads as unknown. TTL: the maximum age plus a day (the
  record outlives its sandbox, so the next call can restore).
- ``k8si:rt:lru`` and ``k8si:rt:lru:<tenant>``: record keys of runtime sessions that
  have a kept sandbox, scored by last use (the caps read them). The record and both
  sets change together in one ``MULTI``/``EXEC``.
- ``k8si:rt:lock:rec:<tenant>:<sha256(hint)>``: one execution at a time per runtime
  session (``SET NX PX`` with a random token, released by compare-and-delete; also
  covers its creation). Others poll with a growing pause up to ``QUEUE_TIMEOUT``,
  then 429 ``runtime_session_busy``.

Valkey failing is a 503 (``ServiceUnavailable``), as for sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time

import attrs
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import RuntimeSessionBusy, ServiceUnavailable
from ..records import JsonRecord

__all__ = ["RuntimeRecord", "RuntimeRecords"]

_PREFIX = "k8si:rt:"
#: Records under their own prefix: no tenant name can make one collide with a lock or LRU.
_RECORDS = f"{_PREFIX}rec:"
_LRU = "k8si:rt:lru"
_FIRST_POLL, _MAX_POLL = 0.01, 0.25
#: Releases the lock only if it is still ours (compare-and-delete).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Extends the lock only if it is still ours (a programmatic run across its rounds).
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def record_key(tenant: str, hint: str, owner: str = "") -> str:
    """A runtime session's record key: its tenant's, for its hint, and for its owner (a
    JWT caller's own; "" for the tenant's API-key callers, whose hints are shared)."""
    named = f"{owner}\0{hint}" if owner else hint  # NUL: no hint can hold one
    digest = hashlib.sha256(named.encode()).hexdigest()
    return f"{_RECORDS}{tenant}:{digest}"


def owner_of(user_id: str | None) -> str:
    """The owner a JWT caller's runtime sessions are recorded under: a digest of its
    token's subject (not the subject itself); "" for API-key callers."""
    return "" if user_id is None else hashlib.sha256(user_id.encode()).hexdigest()[:32]


def _lock_key(key: str) -> str:
    return f"{_PREFIX}lock:{key[len(_PREFIX):]}"


def _tenant_lru(tenant: str) -> str:
    return f"{_LRU}:{tenant}"


@attrs.frozen
class RuntimeRecord(JsonRecord):
    """One runtime session: whose, where its kept sandbox is, its last good checkpoint."""

    id: str
    tenant: str
    hint: str
    #: The ordinary session its files (outputs) and Python state live in.
    session_id: str
    created_at: float
    last_used: float
    #: Where its kept sandbox is (as ``backend.keep`` says), "" when it has none.
    location: str = ""
    language: str = ""
    #: The manifest of the last good checkpoint (0: none yet).
    generation: int = 0
    #: When its kept sandbox was first claimed (its maximum age runs from there).
    sandbox_since: float = 0.0
    #: Whose it is within the tenant (``owner_of``): "" for the tenant's API-key callers.
    owner: str = ""
    #: What its kept sandbox's executor asks of each execution (``ExecutorClient.keep``).
    executor_token: str = ""

    @property
    def key(self) -> str:
        return record_key(self.tenant, self.hint, self.owner)


class RuntimeRecords:
    """Reads and writes records, the LRU sets and the per-runtime-session lock."""

    def __init__(self, client: valkey.Valkey, ttl_seconds: int, lock_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._lock_ms = lock_seconds * 1000
        self._unlock = client.register_script(_UNLOCK)
        self._extend = client.register_script(_EXTEND)

    async def get(self, tenant: str, hint: str, owner: str = "") -> RuntimeRecord | None:
        return await self.get_by_key(record_key(tenant, hint, owner))

    async def get_by_key(self, key: str) -> RuntimeRecord | None:
        try:
            data = await self._client.get(key)
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc
        return RuntimeRecord.from_json(data) if data is not None else None

    async def save(self, record: RuntimeRecord) -> None:
        """Write the record, and put it in (location set) or take it out of the LRU sets."""
        key = record.key
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(key, record.to_json(), ex=self._ttl)
                for lru in (_LRU, _tenant_lru(record.tenant)):
                    if record.location:
                        pipe.zadd(lru, {key: record.last_used})
                    else:
                        pipe.zrem(lru, key)
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc

    async def delete(self, record: RuntimeRecord) -> None:
        key = record.key
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.zrem(_LRU, key)
                pipe.zrem(_tenant_lru(record.tenant), key)
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc

    async def kept(self, tenant: str | None = None, stale_before: float = 0.0) -> list[str]:
        """Record keys with a kept sandbox, least recently used first. Entries last used
        before ``stale_before`` (their idle lease has ended: the backend released them)
        are dropped from the set first."""
        lru = _tenant_lru(tenant) if tenant else _LRU
        try:
            if stale_before > 0:
                await self._client.zremrangebyscore(lru, "-inf", f"({stale_before}")
            members = await self._client.zrange(lru, 0, -1)
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc
        return [m.decode() for m in members]

    async def forget(self, key: str) -> None:
        """Take a key whose record is gone out of the LRU sets."""
        tenant = key[len(_RECORDS):].rpartition(":")[0]
        try:
            await self._client.zrem(_LRU, key)
            await self._client.zrem(_tenant_lru(tenant), key)
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc

    async def all_records(self) -> list[RuntimeRecord]:
        """Every runtime session's record (the operator's listing)."""
        records = []
        try:
            async for key in self._client.scan_iter(match=f"{_RECORDS}*", count=200):
                record = await self.get_by_key(key.decode())
                if record is not None:
                    records.append(record)
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc
        return records

    # -- the lock -------------------------------------------------------------------

    async def try_lock(self, key: str) -> str | None:
        """The lock's token if it was free, else None (never waits)."""
        token = secrets.token_hex(16)
        try:
            taken = await self._client.set(_lock_key(key), token, nx=True, px=self._lock_ms)
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc
        return token if taken else None

    async def lock(self, key: str, wait_seconds: float) -> str:
        """Wait for the runtime session's lock up to ``wait_seconds``; its token, or 429
        ``runtime_session_busy``."""
        deadline = time.monotonic() + wait_seconds
        pause = _FIRST_POLL
        while True:
            token = await self.try_lock(key)
            if token is not None:
                return token
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeSessionBusy(
                    f"another execution of this runtime session is still running "
                    f"(waited {wait_seconds:g} s)", retry_after=1)
            await asyncio.sleep(min(left, pause * random.uniform(0.8, 1.2)))  # noqa: S311
            pause = min(pause * 2, _MAX_POLL)

    async def extend(self, key: str, token: str, seconds: float) -> bool:
        """Hold the lock ``seconds`` from now (a programmatic run's pause or next step);
        False when it is no longer ours (it expired: the run was abandoned too long)."""
        try:
            return bool(await self._extend(keys=[_lock_key(key)],
                                           args=[token, max(1, int(seconds * 1000))]))
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if it is still ours (else its expiry already released it)."""
        try:
            await self._unlock(keys=[_lock_key(key)], args=[token])
        except ValkeyError as exc:
            raise ServiceUnavailable("runtime session store unavailable", retry_after=2) from exc
