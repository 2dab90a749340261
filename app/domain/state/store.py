"""Where state blobs live: a hot copy in Valkey, an archive in the object store.

Valkey, always keyed by (tenant, session):

    k8si:state:<tenant>:<session>   hash: blob, size, sha256, signature, created_at,
                                    origin, archived (the sha256 last archived);
                                    TTL ``STATE_TTL``, refreshed on use
    k8si:state:idle                 sorted set "<tenant>:<session>" -> last use
    k8si:state:used                 hash "<tenant>:<session>" -> last use (no TTL: the
                                    archive's expiry reads it)

An idle sweep (every replica may run it) claims entries idle for the archive period
with ``ZREM`` (one replica wins each), writes the blob to the object store
(``app/storage/state_archive.py``) and marks the hot copy archived. On a Valkey miss
the archive is read instead and, once the service has checked it, put back hot, and
archived again once idle (so an archive expired meanwhile is written back). An archive
with no hot copy and unused for ``STATE_ARCHIVE_TTL`` is released by
``release_archive`` for the expiry sweep (``lifecycle.py``) to delete.
The store moves opaque records; signatures are checked by the service.
"""

from __future__ import annotations

import logging
import time

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ...errors import ServiceUnavailable
from ...storage.state_archive import StateArchive, StateHeader, StateRecord

__all__ = ["StateStore"]

logger = logging.getLogger(__name__)

_IDLE_KEY = "k8si:state:idle"
_USED_KEY = "k8si:state:used"
_FIELDS = ("size", "sha256", "signature", "created_at", "origin")
# Mark a hot copy archived only if it still holds the blob that was archived.
_MARK_ARCHIVED = """
if redis.call('HGET', KEYS[1], 'sha256') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'archived', ARGV[1])
  return 1
end
return 0
"""
# Put an archived record back hot, unless a newer one arrived meanwhile; not marked
# archived, so it is archived again once idle. KEYS: hot copy, idle set, last uses.
# ARGV: TTL, member, now, then the record's fields and values.
_REHYDRATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""
# An archive may go when no hot copy exists and its last use is before the cutoff
# (none recorded: the caller checked when it was written). KEYS: hot copy, last uses.
# ARGV: member, cutoff.
_RELEASE_ARCHIVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local used = redis.call('HGET', KEYS[2], ARGV[1])
if used and tonumber(used) >= tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def _hot_key(tenant: str, session_id: str) -> str:
    return f"k8si:state:{tenant}:{session_id}"


def _member(tenant: str, session_id: str) -> str:
    return f"{tenant}:{session_id}"


def _mapping(record: StateRecord) -> dict[str, bytes | str]:
    header = record.header
    return {"blob": record.blob, "size": str(header.size), "sha256": header.sha256,
            "signature": header.signature, "created_at": repr(header.created_at),
            "origin": header.origin}


def _header(tenant: str, session_id: str, values: list[bytes | None]) -> StateHeader | None:
    if any(value is None for value in values):
        return None
    size, sha256, signature, created_at, origin = (v.decode() for v in values if v is not None)
    try:
        return StateHeader(tenant=tenant, session_id=session_id, size=int(size), sha256=sha256,
                           signature=signature, created_at=float(created_at), origin=origin)
    except ValueError:
        return None


class StateStore:
    """Saves, finds, archives and deletes the state of sessions."""

    def __init__(self, client: valkey.Valkey, archive: StateArchive, hot_ttl: int) -> None:
        self._client = client
        self.archive = archive
        self._ttl = hot_ttl
        self._mark_archived = client.register_script(_MARK_ARCHIVED)
        self._rehydrate = client.register_script(_REHYDRATE)
        self._release_archive = client.register_script(_RELEASE_ARCHIVE)

    async def save(self, record: StateRecord) -> None:
        """The session's state from now on (hot; archived once idle)."""
        header = record.header
        key, member, now = _hot_key(header.tenant, header.session_id), _member(
            header.tenant, header.session_id), time.time()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=_mapping(record))
                pipe.expire(key, self._ttl)
                pipe.zadd(_IDLE_KEY, {member: now})
                pipe.hset(_USED_KEY, member, repr(now))
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc

    async def get(self, tenant: str, session_id: str) -> tuple[StateRecord, str] | None:
        """The stored record and where it was found (``valkey`` or ``archive``)."""
        key = _hot_key(tenant, session_id)
        try:
            values = await self._client.hmget(key, ["blob", *_FIELDS])  # type: ignore[misc]
            if values[0] is not None:
                await self._client.expire(key, self._ttl)
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc
        header = _header(tenant, session_id, values[1:])
        if values[0] is not None and header is not None:
            return StateRecord(header=header, blob=values[0]), "valkey"
        archived = await self.archive.get(tenant, session_id)
        if archived is None or (archived.header.tenant, archived.header.session_id) != (
                tenant, session_id):
            return None
        return archived, "archive"

    async def rehydrate(self, record: StateRecord) -> None:
        """Put a (checked) archived record back hot, to be archived again once idle."""
        header = record.header
        args: list[bytes | str | int] = [self._ttl, _member(header.tenant, header.session_id),
                                         repr(time.time())]
        for name, value in _mapping(record).items():
            args += [name, value]
        try:
            await self._rehydrate(keys=[_hot_key(header.tenant, header.session_id), _IDLE_KEY,
                                        _USED_KEY], args=args)
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc

    async def header(self, tenant: str, session_id: str,
                     ) -> tuple[StateHeader, str, float | None] | None:
        """Header, source and hot expiry time, without fetching the blob."""
        key = _hot_key(tenant, session_id)
        try:
            values = await self._client.hmget(key, list(_FIELDS))  # type: ignore[misc]
            ttl = await self._client.ttl(key)
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc
        header = _header(tenant, session_id, values)
        if header is not None:
            return header, "valkey", time.time() + ttl if ttl > 0 else None
        archived = await self.archive.header(tenant, session_id)
        if archived is None or (archived.tenant, archived.session_id) != (tenant, session_id):
            return None
        return archived, "archive", None

    async def touch(self, tenant: str, session_id: str) -> None:
        """Note a use: the hot copy stays, and the idle period starts again."""
        member, now = _member(tenant, session_id), time.time()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.expire(_hot_key(tenant, session_id), self._ttl)
                pipe.zadd(_IDLE_KEY, {member: now}, xx=True)
                pipe.hset(_USED_KEY, member, repr(now))
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc

    async def delete(self, tenant: str, session_id: str) -> None:
        """Remove the hot copy, the idle entry and the archive."""
        member = _member(tenant, session_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(_hot_key(tenant, session_id))
                pipe.zrem(_IDLE_KEY, member)
                pipe.hdel(_USED_KEY, member)
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc
        await self.archive.delete(tenant, session_id)

    async def release_archive(self, tenant: str, session_id: str, cutoff: float) -> bool:
        """True when the session's archive may be deleted: no hot copy, and no use since
        ``cutoff`` (its record of last use is then dropped)."""
        try:
            return bool(await self._release_archive(
                keys=[_hot_key(tenant, session_id), _USED_KEY],
                args=[_member(tenant, session_id), repr(cutoff)]))
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc

    async def archive_idle(self, idle_seconds: float, batch: int = 100) -> int:
        """Archive the hot copies idle for ``idle_seconds``; the number archived."""
        try:
            members = await self._client.zrangebyscore(
                _IDLE_KEY, "-inf", time.time() - idle_seconds, start=0, num=batch)
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc
        archived = 0
        for member in members:
            if await self._archive_one(member.decode()):
                archived += 1
        return archived

    async def _archive_one(self, member: str) -> bool:
        tenant, _, session_id = member.partition(":")
        key = _hot_key(tenant, session_id)
        try:
            if not await self._client.zrem(_IDLE_KEY, member):
                return False  # another replica claimed it
            values = await self._client.hmget(  # type: ignore[misc]
                key, ["blob", "archived", *_FIELDS])
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc
        header = _header(tenant, session_id, values[2:])
        if values[0] is None or header is None:
            return False  # expired or deleted meanwhile
        if values[1] is not None and values[1].decode() == header.sha256:
            return False  # this blob is archived already
        try:
            await self.archive.put(StateRecord(header=header, blob=values[0]))
            await self._mark_archived(keys=[key], args=[header.sha256])
        except (ServiceUnavailable, ValkeyError) as exc:
            logger.warning("state archive failed; retried later",
                           extra={"tenant": tenant, "session_id": session_id, "error": str(exc)})
            try:
                # Score 0: the next sweep tries again (unless a new save re-added it).
                await self._client.zadd(_IDLE_KEY, {member: 0}, nx=True)
            except ValkeyError as again:
                raise ServiceUnavailable("state store unavailable", retry_after=2) from again
            return False
        return True
