"""The lifecycle of a session's Python state, on a real Valkey and a real local object
store: counted in its tenant's storage quota at its latest size while it is kept,
refused past the quota with the previous state kept, given back when deleted, and its
archive deleted once unused for ``STATE_ARCHIVE_TTL`` (``lifecycle.py``) but never
while a hot copy is left or since a use."""

from __future__ import annotations

import base64
import os
import pickle
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey.asyncio as valkey

from app.auth import Principal
from app.domain.state import StateService, StateSigner, StateStore
from app.domain.state.lifecycle import expire_archives
from app.errors import NotFound
from app.executor import ExecutorResult
from app.leases import SweepLease
from app.sessions import SessionStore
from app.settings import StateSettings, TenantLimits, TenantSettings
from app.storage import create_object_store
from app.storage.state_archive import StateArchive
from app.tenants import QuotaExceeded, TenantQuotas
from tests.state.helpers import lz4_blob, run_py

HOUR = 3600.0


class Harness:
    """A state service of its own tenant, and what the tests look at beside it."""

    def __init__(self, root: Path, client: valkey.Valkey, blob: bytes,
                 storage_bytes: int = 0) -> None:
        self.root = root
        self.client = client
        self.blob = blob
        self.tenant = f"t{secrets.token_hex(4)}"
        self.principal = Principal(self.tenant, "test")
        self.quotas = TenantQuotas(client, TenantSettings(defaults=TenantLimits(
            0, 0, storage_bytes=storage_bytes, files=0)))
        self.sessions = SessionStore(client, 3600)
        self.store = StateStore(client, StateArchive(create_object_store(None, root)), 3600)
        self.service = StateService(StateSettings(), self.store,
                                    StateSigner(b"k" * 32), self.sessions, self.quotas)
        self.lease = SweepLease(client, f"state-archives-{self.tenant}", 60)

    async def new_state(self, blob: bytes | None = None) -> str:
        """A recorded session with ``blob`` (the harness's own by default) as its state."""
        session = self.sessions.fresh(self.tenant)
        await self.sessions.record(session)
        await self.service.upload(self.principal, session.id, _chunks(blob or self.blob))
        return session.id

    async def archive_and_evict(self, session_id: str, *, written_ago: float,
                                used_ago: float) -> Path:
        """Archived, the hot copy gone (its TTL over), written and last used that long ago."""
        assert await self.store.archive_idle(0) >= 1
        await self.client.delete(f"k8si:state:{self.tenant}:{session_id}")
        path = self.archive_path(session_id)
        os.utime(path, (time.time() - written_ago, time.time() - written_ago))
        await self.client.hset("k8si:state:used", f"{self.tenant}:{session_id}",  # type: ignore[misc]
                               repr(time.time() - used_ago))
        return path

    def archive_path(self, session_id: str) -> Path:
        return self.root / "k8si.state" / self.tenant / session_id

    async def expire(self, ttl: float) -> list[str]:
        deleted = await expire_archives(self.store, self.quotas, int(ttl), self.lease)
        return [session for tenant, session in deleted if tenant == self.tenant]

    async def usage(self) -> int:
        return (await self.quotas.usage(self.tenant))[0]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture(scope="module")
def blob(runtime_dir: Path) -> bytes:
    return lz4_blob(runtime_dir, pickle.dumps({"namespace": {"x": "y" * 3000}, "modules": {}}))


@pytest.fixture
def harness(tmp_path: Path, valkey_url: str, blob: bytes) -> Iterator[Harness]:
    yield Harness(tmp_path / "objects", valkey.Valkey.from_url(valkey_url), blob)


def test_an_archive_unused_for_the_ttl_is_deleted_and_its_bytes_given_back(
        harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        assert await harness.usage() == len(harness.blob)
        path = await harness.archive_and_evict(session, written_ago=2 * HOUR, used_ago=2 * HOUR)
        assert await harness.expire(3 * HOUR) == []  # not yet: unused for 2 of 3 hours
        assert path.exists() and await harness.usage() == len(harness.blob)
        assert await harness.expire(HOUR) == [session]
        assert not path.exists() and await harness.usage() == 0
        with pytest.raises(NotFound):
            await harness.service.download(harness.principal, session)
        assert await harness.expire(HOUR) == []  # nothing given back twice

    run(scenario())


def test_an_archive_used_since_the_cutoff_or_still_hot_is_kept(harness: Harness,
                                                              run: Any) -> None:
    async def scenario() -> None:
        used = await harness.new_state()  # written long ago, used a minute ago
        path = await harness.archive_and_evict(used, written_ago=5 * HOUR, used_ago=60)
        hot = await harness.new_state()  # written and used long ago, its hot copy still there
        assert await harness.store.archive_idle(0) == 1
        os.utime(harness.archive_path(hot), (time.time() - 5 * HOUR,) * 2)
        await harness.client.hset("k8si:state:used", f"{harness.tenant}:{hot}",  # type: ignore[misc]
                                  repr(time.time() - 5 * HOUR))
        assert await harness.expire(HOUR) == []
        assert path.exists() and harness.archive_path(hot).exists()
        assert await harness.usage() == 2 * len(harness.blob)
        # Read back from the archive: a use, so the next sweep keeps it too.
        await harness.client.hset("k8si:state:used", f"{harness.tenant}:{used}",  # type: ignore[misc]
                                  repr(time.time() - 5 * HOUR))
        await harness.client.delete(f"k8si:state:{harness.tenant}:{used}")
        record = await harness.service.download(harness.principal, used)
        assert record.blob == harness.blob
        assert await harness.expire(HOUR) == []

    run(scenario())


def test_state_read_back_is_archived_again(harness: Harness, run: Any) -> None:
    """An archive deleted by the expiry just as it was read back (the race the expiry
    cannot see) is written again from the hot copy once that is idle."""
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=0, used_ago=0)
        await harness.service.download(harness.principal, session)  # hot again
        path.unlink()  # the expiry's delete, just after the read
        assert await harness.store.archive_idle(0) == 1
        assert path.exists()

    run(scenario())


def test_state_on_both_sides_of_the_storage_quota(tmp_path: Path, valkey_url: str,
                                                  blob: bytes, runtime_dir: Path,
                                                  run: Any) -> None:
    bigger = lz4_blob(runtime_dir, pickle.dumps({"namespace": {"x": os.urandom(4000)},
                                                 "modules": {}}))
    assert len(bigger) > len(blob)
    client = valkey.Valkey.from_url(valkey_url)
    at_limit = Harness(tmp_path / "a", client, blob, storage_bytes=len(bigger))
    past_limit = Harness(tmp_path / "b", client, blob, storage_bytes=len(bigger) - 1)

    async def scenario() -> None:
        session = await at_limit.new_state()
        await at_limit.service.upload(at_limit.principal, session, _chunks(bigger))
        assert await at_limit.usage() == len(bigger)  # recounted, not added
        session = await past_limit.new_state()
        with pytest.raises(QuotaExceeded):
            await past_limit.service.upload(past_limit.principal, session, _chunks(bigger))
        kept = await past_limit.service.download(past_limit.principal, session)
        assert kept.blob == blob and await past_limit.usage() == len(blob)
        # The same from an execution: reported, the previous state kept.
        outcome = await past_limit.service.after_execution(
            past_limit.tenant, session, _captured(bigger), kept)
        assert outcome.has_state and outcome.state_size == len(blob)
        assert any("not kept" in issue.error and "quota" in issue.error
                   for issue in outcome.errors), outcome
        assert (await past_limit.service.download(past_limit.principal, session)).blob == blob
        await past_limit.service.delete(past_limit.principal, session)
        assert await past_limit.usage() == 0

    run(scenario())


def _captured(blob: bytes) -> ExecutorResult:
    return ExecutorResult.from_json({
        "exit_code": 0, "signal": None, "stdout": "", "stderr": "", "stdout_truncated": False,
        "stderr_truncated": False, "status": "ok", "wall_time": 0.1, "cpu_time": 0.1,
        "max_rss": 1, "state_status": "captured", "state": base64.b64encode(blob).decode()})


def test_an_execution_s_state_is_counted_and_given_back(client: httpx.Client,
                                                        valkey_url: str, run: Any) -> None:
    """Through the API and a sandbox: the captured state is counted at its size, a
    bigger one at its new size, and a deleted one given back."""
    quotas = valkey.Valkey.from_url(valkey_url)

    async def usage() -> int:
        return int(await quotas.hget("k8si:quota:usage:default", "bytes") or 0)

    before = run(usage())
    session = run_py(client, "x = 'a' * 10")["session_id"]
    first = client.get(f"/state/{session}/info").json()["size_bytes"]
    assert run(usage()) == before + first
    run_py(client, "import os\ny = os.urandom(20000)", session)
    second = client.get(f"/state/{session}/info").json()["size_bytes"]
    assert second > first and run(usage()) == before + second
    assert client.delete(f"/state/{session}").status_code == 204
    assert run(usage()) == before
