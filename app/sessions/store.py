"""Session records in Valkey, always looked up by (tenant, id).

A session belongs to one tenant. ``resolve`` picks the execution's session the
way the contract says: an explicit ``session_id`` the tenant owns; else the latest
session of (tenant, user_id, entity_id); else a new one. Every use refreshes the
TTL, so nothing expires while it is being used. Valkey being down is a 503.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import attrs
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import BadRequest, ServiceUnavailable
from ..ids import is_valid_id, new_id

__all__ = ["Session", "SessionStore", "check_entity_id"]

#: ``entity_id``, as every route takes it (the contract: 1-40 of ``[A-Za-z0-9_-]``).
_ENTITY_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def check_entity_id(value: str | None) -> str | None:
    """An ``entity_id`` the contract allows (None: none given), or a 400."""
    if value is not None and not _ENTITY_ID.fullmatch(value):
        raise BadRequest("entity_id must be 1-40 characters of [A-Za-z0-9_-]")
    return value


@attrs.frozen
class Session:
    """One session: the unit that owns files and Python state."""

    id: str
    tenant: str
    created_at: float
    is_new: bool = False


def _session_key(session_id: str) -> str:
    return f"k8si:session:{session_id}"


def _entity_key(tenant: str, user_id: str, entity_id: str) -> str:
    return f"k8si:entity:{tenant}:{user_id}:{entity_id}"


class SessionStore:
    """Creates, finds and refreshes sessions."""

    def __init__(self, client: valkey.Valkey, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds

    async def get(self, tenant: str, session_id: str) -> Session | None:
        """The tenant's session with this id; another tenant's answers like none."""
        if not is_valid_id(session_id):
            return None
        try:
            record = await self._client.hgetall(_session_key(session_id))  # type: ignore[misc]
        except ValkeyError as exc:
            raise ServiceUnavailable("session store unavailable", retry_after=2) from exc
        if not record or record.get(b"tenant", b"").decode() != tenant:
            return None
        return Session(id=session_id, tenant=tenant,
                       created_at=float(record.get(b"created_at", b"0")))

    async def resolve(self, tenant: str, session_id: str | None, user_id: str | None,
                      entity_id: str | None,
                      adoptable: Callable[[str], Awaitable[bool]] | None = None) -> Session:
        """The session an execution runs in (see the module docstring). ``adoptable``: a
        ``session_id`` without a record is adopted back (``adopt``) when this says its
        files or state outlived it, before any other session is looked for or made."""
        try:
            if session_id:
                session = await self.get(tenant, session_id)
                if session is not None:
                    await self._touch(session.id)
                    return session
                if adoptable is not None and is_valid_id(session_id) \
                        and await adoptable(session_id):
                    return await self.adopt(tenant, session_id)
            entity_key = _entity_key(tenant, user_id or "", entity_id) if entity_id else None
            if entity_key is not None:
                latest = await self._client.get(entity_key)
                if latest is not None:
                    session = await self.get(tenant, latest.decode())
                    if session is not None:
                        await self._touch(session.id, entity_key)
                        return session
            return await self._create(tenant, entity_key)
        except ValkeyError as exc:
            raise ServiceUnavailable("session store unavailable", retry_after=2) from exc

    async def adopt(self, tenant: str, session_id: str) -> Session:
        """Record a session whose files outlived its Valkey record (same tenant only)."""
        key = _session_key(session_id)
        try:
            created = await self._client.hsetnx(key, "tenant", tenant)  # type: ignore[misc]
            if not created:
                existing = await self.get(tenant, session_id)
                if existing is None:
                    raise ServiceUnavailable("session id conflict; try again", retry_after=1)
                return existing
            await self._client.hset(key, "created_at", str(time.time()))  # type: ignore[misc]
            await self._client.expire(key, self._ttl)
        except ValkeyError as exc:
            raise ServiceUnavailable("session store unavailable", retry_after=2) from exc
        return Session(id=session_id, tenant=tenant, created_at=time.time())

    @staticmethod
    def fresh(tenant: str) -> Session:
        """A new session, not recorded yet (``record``)."""
        return Session(id=new_id(), tenant=tenant, created_at=time.time(), is_new=True)

    async def record(self, session: Session, entity_key: str | None = None) -> None:
        """Write a new session's record (and make it its entity's latest)."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(_session_key(session.id), mapping={
                    "tenant": session.tenant, "created_at": str(session.created_at)})
                pipe.expire(_session_key(session.id), self._ttl)
                if entity_key is not None:
                    pipe.set(entity_key, session.id, ex=self._ttl)
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("session store unavailable", retry_after=2) from exc

    async def _create(self, tenant: str, entity_key: str | None) -> Session:
        session = self.fresh(tenant)
        await self.record(session, entity_key)
        return session

    async def _touch(self, session_id: str, entity_key: str | None = None) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.expire(_session_key(session_id), self._ttl)
            if entity_key is not None:
                pipe.expire(entity_key, self._ttl)
            await pipe.execute()
