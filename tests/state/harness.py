"""A state service of a tenant of its own on the tests' real Valkey and a local object
store, with an archive whose puts can let a request in and whose deletes can fail."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import valkey.asyncio as valkey

from app.auth import Principal
from app.domain.state import StateService, StateSigner, StateStore
from app.domain.state.lifecycle import expire_archives
from app.leases import SweepLease
from app.sessions import SessionStore
from app.settings import StateSettings, TenantLimits, TenantSettings
from app.storage import StorageUnavailable, create_object_store
from app.storage.state_archive import StateArchive, StateRecord
from app.tenants import TenantQuotas

__all__ = ["Harness", "HookedArchive", "chunks"]


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """A request body of one chunk."""
    yield data


class HookedArchive(StateArchive):
    """The real archive (a local object store), with a hook run before a session's
    ``put`` (to let a request in at that moment) and deletes that can be made to fail."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.before_put: dict[str, Callable[[], Awaitable[None]]] = {}
        self.failing_deletes = 0

    async def put(self, record: StateRecord) -> None:
        hook = self.before_put.pop(record.header.session_id, None)
        if hook is not None:
            await hook()
        await super().put(record)

    async def delete(self, tenant: str, session_id: str) -> None:
        if self.failing_deletes > 0:
            self.failing_deletes -= 1
            raise StorageUnavailable("injected: the object store refused the delete")
        await super().delete(tenant, session_id)


class Harness:
    """A state service of its own tenant, and what the tests look at beside it."""

    def __init__(self, root: Path, client: valkey.Valkey, blob: bytes,
                 storage_bytes: int = 0, hot_max_bytes: int = 0) -> None:
        self.archive = HookedArchive(create_object_store(None, root))
        self.root = root
        self.client = client
        self.blob = blob
        self.tenant = f"t{secrets.token_hex(4)}"
        self.principal = Principal(self.tenant, "test")
        self.quotas = TenantQuotas(client, TenantSettings(defaults=TenantLimits(
            0, 0, storage_bytes=storage_bytes, files=0)))
        self.sessions = SessionStore(client, 3600)
        self.store = StateStore(client, self.archive, 3600, self.quotas, hot_max_bytes)
        self.service = StateService(StateSettings(), self.store, StateSigner(b"k" * 32),
                                    self.sessions)
        self.lease = SweepLease(client, f"state-archives-{self.tenant}", 60)

    async def new_state(self, blob: bytes | None = None) -> str:
        """A recorded session with ``blob`` (the harness's own by default) as its state."""
        session = self.sessions.fresh(self.tenant)
        await self.sessions.record(session)
        await self.service.upload(self.principal, session.id, chunks(blob or self.blob))
        return session.id

    async def archive_and_evict(self, session_id: str, *, written_ago: float,
                                used_ago: float | None) -> Path:
        """Archived, the hot copy gone (its TTL over), written and last used that long ago
        (``used_ago`` None: no last use recorded)."""
        assert await self.archive_now(session_id)
        await self.evict(session_id)
        path = self.archive_path(session_id)
        os.utime(path, (time.time() - written_ago, time.time() - written_ago))
        await self.used(session_id, used_ago)
        return path

    async def archive_now(self, session_id: str) -> bool:
        """Run the idle archiver (every idle state of the shared Valkey: counts are not
        this test's); whether this session's archive is in the store now."""
        await self.store.archive_idle(0, batch=10_000)
        return self.archive_path(session_id).exists()

    async def evict(self, session_id: str) -> None:
        """The hot copy gone, as when its ``STATE_TTL`` is over."""
        await self.client.delete(f"k8si:state:{self.tenant}:{session_id}")

    async def used(self, session_id: str, ago: float | None) -> None:
        member = f"{self.tenant}:{session_id}"
        if ago is None:
            await self.client.hdel("k8si:state:used", member)  # type: ignore[misc]
        else:
            await self.client.hset("k8si:state:used", member,  # type: ignore[misc]
                                   repr(time.time() - ago))

    def archive_path(self, session_id: str) -> Path:
        return self.root / "k8si.state" / self.tenant / session_id

    async def expire(self, ttl: float) -> list[str]:
        deleted = await expire_archives(self.store, int(ttl), self.lease)
        return [session for tenant, session in deleted if tenant == self.tenant]

    async def usage(self) -> int:
        return (await self.quotas.usage(self.tenant))[0]
