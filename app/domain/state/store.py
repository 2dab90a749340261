"""Where state blobs live: a hot copy in Valkey, an archive in the object store.

Valkey, always keyed by (tenant, session):

    k8si:state:<tenant>:<session>   hash: blob, size, sha256, signature, created_at,
                                    origin, archived (the sha256 last archived);
                                    TTL ``STATE_TTL``, refreshed on use
    k8si:state:idle                 sorted set "<tenant>:<session>" -> last use
    k8si:state:used                 hash "<tenant>:<session>" -> last use (no TTL: the
                                    archive's expiry reads it)
    k8si:state:deleted:<t>:<s>      tombstone of a state deleted or expired: until its
                                    archive is gone, then ``TOMBSTONE_SECONDS`` more

A session's state is charged to its tenant's storage quota at its latest size
(``state_charge``) in the same script that saves it, and given back in the one that
deletes or expires it (``scripts.py``): the charge and the state never disagree.

An idle sweep (every replica may run it) claims entries idle for the archive period
with ``ZREM`` (one replica wins each), writes the blob to the object store
(``app/storage/state_archive.py``) and marks the hot copy archived. On a Valkey miss
the archive is read instead and, once the service has checked it, put back hot (unless
it was deleted or expired meanwhile), and archived again once idle. An archive with no
hot copy and unused for ``STATE_ARCHIVE_TTL`` is retired here (``retire``) for the
expiry sweep (``lifecycle.py``) to delete. The store moves opaque records; signatures
are checked by the service.
"""

from __future__ import annotations

import logging
import time

import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ...errors import ServiceUnavailable
from ...storage.state_archive import StateArchive, StateHeader, StateRecord
from ...tenants import QuotaExceeded, TenantQuotas, state_charge
from . import scripts

__all__ = ["StateStore"]

logger = logging.getLogger(__name__)

_IDLE_KEY = "k8si:state:idle"
_USED_KEY = "k8si:state:used"
_FIELDS = ("size", "sha256", "signature", "created_at", "origin")


def _hot_key(tenant: str, session_id: str) -> str:
    return f"k8si:state:{tenant}:{session_id}"


def _member(tenant: str, session_id: str) -> str:
    return f"{tenant}:{session_id}"


def _tombstone(tenant: str, session_id: str) -> str:
    return f"k8si:state:deleted:{tenant}:{session_id}"


def _fields(record: StateRecord) -> list[bytes | str]:
    """The record's fields and values, flat (a script's arguments)."""
    flat: list[bytes | str] = []
    for name, value in _mapping(record).items():
        flat += [name, value]
    return flat


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
    """Saves, finds, archives and deletes the state of sessions, and charges it."""

    def __init__(self, client: valkey.Valkey, archive: StateArchive, hot_ttl: int,
                 quotas: TenantQuotas) -> None:
        self._client = client
        self.archive = archive
        self.quotas = quotas
        self._ttl = hot_ttl
        self._save = client.register_script(scripts.SAVE)
        self._remove = client.register_script(scripts.REMOVE)
        self._rehydrate = client.register_script(scripts.REHYDRATE)
        self._mark_archived = client.register_script(scripts.MARK_ARCHIVED)
        self._settle = client.register_script(scripts.SETTLE)
        self._retire = client.register_script(scripts.RETIRE)
        self._reclaim = client.register_script(scripts.RECLAIM)

    async def _run(self, script: object, keys: list[str], args: list[bytes | str | int],
                   ) -> int:
        try:
            return int(await script(keys=keys, args=args))  # type: ignore[operator]
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc

    async def save(self, record: StateRecord) -> None:
        """The session's state from now on (hot; archived once idle), charged at its size:
        ``QuotaExceeded`` past the tenant's quota (the previous state stays)."""
        header = record.header
        tenant, session_id = header.tenant, header.session_id
        keys = [_hot_key(tenant, session_id), _IDLE_KEY, _USED_KEY,
                _tombstone(tenant, session_id), *self.quotas.ledger_keys(tenant)]
        args: list[bytes | str | int] = [
            self._ttl, _member(tenant, session_id), repr(time.time()),
            state_charge(session_id), header.size, self.quotas.max_bytes(tenant),
            *_fields(record)]
        if not await self._run(self._save, keys, args):
            raise QuotaExceeded(f"tenant {tenant!r} storage quota reached "
                                f"({self.quotas.max_bytes(tenant)} bytes)")

    async def get(self, tenant: str, session_id: str) -> tuple[StateRecord, str] | None:
        """The stored record and where it was found (``valkey`` or ``archive``); a hot
        copy found is a use (its TTL and last use renewed). A deleted or expired state
        whose archive is not gone yet is not found."""
        key = _hot_key(tenant, session_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hmget(key, ["blob", *_FIELDS])
                pipe.exists(_tombstone(tenant, session_id))
                values, tombstoned = await pipe.execute()
            if values[0] is None and tombstoned:
                return None
            if values[0] is not None:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.expire(key, self._ttl)
                    pipe.hset(_USED_KEY, _member(tenant, session_id), repr(time.time()))
                    await pipe.execute()
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

    async def rehydrate(self, record: StateRecord) -> bool:
        """Put a (checked) archived record back hot, to be archived again once idle; False
        when a newer one is there, or it was deleted or expired since it was read."""
        header = record.header
        tenant, session_id = header.tenant, header.session_id
        keys = [_hot_key(tenant, session_id), _IDLE_KEY, _USED_KEY,
                _tombstone(tenant, session_id), *self.quotas.ledger_keys(tenant)]
        args: list[bytes | str | int] = [self._ttl, _member(tenant, session_id),
                                         repr(time.time()), state_charge(session_id),
                                         header.size, *_fields(record)]
        return bool(await self._run(self._rehydrate, keys, args))

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
        """Remove the hot copy, its entries and the archive; the charge given back."""
        charge = state_charge(session_id)
        await self._run(self._remove, [
            _hot_key(tenant, session_id), _IDLE_KEY, _USED_KEY, _tombstone(tenant, session_id),
            *self.quotas.ledger_keys(tenant), self.quotas.marker_key(tenant, charge)],
            [_member(tenant, session_id), charge])
        await self.delete_archive(tenant, session_id)

    async def delete_archive(self, tenant: str, session_id: str) -> None:
        """Delete the archive of a deleted or retired state; once it is gone the
        tombstone ends after a while (until then a read never finds the state)."""
        await self.archive.delete(tenant, session_id)
        await self._run(self._settle, [_tombstone(tenant, session_id)], [])

    async def retire(self, tenant: str, session_id: str, cutoff: float) -> bool:
        """True when the session's archive is to be deleted now: no hot copy and no use
        since ``cutoff`` (its charge is then given back; see ``scripts.RETIRE``)."""
        charge = state_charge(session_id)
        return bool(await self._run(self._retire, [
            _hot_key(tenant, session_id), _USED_KEY, _tombstone(tenant, session_id),
            *self.quotas.ledger_keys(tenant), self.quotas.marker_key(tenant, charge)],
            [_member(tenant, session_id), repr(cutoff), charge, repr(time.time())]))

    async def reclaim(self, tenant: str, session_id: str, cutoff: float) -> bool:
        """For a last use with no archive: when the state is not hot either and unused
        since ``cutoff``, drop the entry and give its charge back; True if it was."""
        charge = state_charge(session_id)
        return bool(await self._run(self._reclaim, [
            _hot_key(tenant, session_id), _USED_KEY, *self.quotas.ledger_keys(tenant),
            self.quotas.marker_key(tenant, charge)],
            [_member(tenant, session_id), repr(cutoff), charge]))

    async def unused_since(self, cutoff: float) -> list[tuple[str, str]]:
        """Every ``(tenant, session)`` whose last use is before ``cutoff``."""
        found: list[tuple[str, str]] = []
        try:
            async for member, used in self._client.hscan_iter(_USED_KEY, count=1000):
                if float(used) < cutoff:
                    tenant, _, session_id = member.decode().partition(":")
                    found.append((tenant, session_id))
        except ValkeyError as exc:
            raise ServiceUnavailable("state store unavailable", retry_after=2) from exc
        return found

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
            marked = await self._mark_archived(keys=[key, _tombstone(tenant, session_id)],
                                               args=[header.sha256])
            if marked == 2:  # deleted while it was being archived: not brought back
                await self.delete_archive(tenant, session_id)
                return False
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
