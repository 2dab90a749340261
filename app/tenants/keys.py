"""API keys issued at run time (``k8si keys create|list|revoke``), stored hashed in Valkey.

Only the SHA-256 digest of a key is stored; the key itself is shown once, when it is
created. A lookup is by digest, so nothing about other keys can be learnt from its
timing. Static keys from ``API_KEYS`` keep working beside these.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import attrs
import valkey.asyncio as valkey
from valkey.exceptions import ValkeyError

from ..errors import ServiceUnavailable

__all__ = ["ApiKeyRecord", "KeyStore"]

_TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INDEX = "k8si:apikeys"


@attrs.frozen
class ApiKeyRecord:
    """One issued key, without the key itself."""

    id: str
    tenant: str
    name: str
    created_at: float
    digest: str


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Creates, finds, lists and revokes issued API keys."""

    def __init__(self, client: valkey.Valkey) -> None:
        self._client = client

    async def create(self, tenant: str, name: str = "") -> tuple[ApiKeyRecord, str]:
        """A new key for ``tenant``: the record, and the key (shown only now)."""
        if not _TENANT.fullmatch(tenant):
            raise ValueError("tenant must be 1-64 characters of [A-Za-z0-9_-]")
        key = "k8si_" + secrets.token_urlsafe(32)
        record = ApiKeyRecord(id=secrets.token_hex(6), tenant=tenant, name=name[:100],
                              created_at=time.time(), digest=digest_of(key))
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(f"k8si:apikey:{record.digest}", mapping={
                    "id": record.id, "tenant": tenant, "name": record.name,
                    "created_at": str(record.created_at)})
                pipe.hset(_INDEX, record.id, record.digest)
                await pipe.execute()
        except ValkeyError as exc:
            raise ServiceUnavailable("key store unavailable", retry_after=2) from exc
        return record, key

    async def lookup(self, key: str) -> ApiKeyRecord | None:
        digest = digest_of(key)
        try:
            data = await self._client.hgetall(f"k8si:apikey:{digest}")  # type: ignore[misc]
        except ValkeyError as exc:
            raise ServiceUnavailable("key store unavailable", retry_after=2) from exc
        if not data:
            return None
        return ApiKeyRecord(id=data[b"id"].decode(), tenant=data[b"tenant"].decode(),
                            name=data.get(b"name", b"").decode(),
                            created_at=float(data.get(b"created_at", b"0")), digest=digest)

    async def list(self) -> list[ApiKeyRecord]:
        records = []
        index = await self._client.hgetall(_INDEX)  # type: ignore[misc]
        for digest in index.values():
            data = await self._client.hgetall(f"k8si:apikey:{digest.decode()}")  # type: ignore[misc]
            if data:
                records.append(ApiKeyRecord(
                    id=data[b"id"].decode(), tenant=data[b"tenant"].decode(),
                    name=data.get(b"name", b"").decode(),
                    created_at=float(data.get(b"created_at", b"0")), digest=digest.decode()))
        return sorted(records, key=lambda r: r.created_at)

    async def revoke(self, key_id: str) -> bool:
        """Remove a key by its id; False when there was none."""
        digest = await self._client.hget(_INDEX, key_id)  # type: ignore[misc]
        if digest is None:
            return False
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(f"k8si:apikey:{digest.decode()}")
            pipe.hdel(_INDEX, key_id)
            await pipe.execute()
        return True
