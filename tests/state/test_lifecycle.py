"""The lifecycle of a session's Python state, on a real Valkey and a real local object
store: counted in its tenant's storage quota at its latest size while it is kept,
refused past the quota with the previous state kept, given back when deleted, and its
archive deleted once unused for ``STATE_ARCHIVE_TTL`` (``lifecycle.py``) but never
while a hot copy is left or since a use."""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from app.settings import Settings, SettingsError, StateSettings, TenantLimits, TenantSettings
from app.storage import StorageUnavailable, create_object_store
from app.storage.state_archive import StateArchive, StateRecord
from app.tenants import QuotaExceeded, TenantQuotas
from tests.state.helpers import lz4_blob, run_py

HOUR = 3600.0


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
                 storage_bytes: int = 0) -> None:
        self.archive = HookedArchive(create_object_store(None, root))
        self.root = root
        self.client = client
        self.blob = blob
        self.tenant = f"t{secrets.token_hex(4)}"
        self.principal = Principal(self.tenant, "test")
        self.quotas = TenantQuotas(client, TenantSettings(defaults=TenantLimits(
            0, 0, storage_bytes=storage_bytes, files=0)))
        self.sessions = SessionStore(client, 3600)
        self.store = StateStore(client, self.archive, 3600, self.quotas)
        self.service = StateService(StateSettings(), self.store, StateSigner(b"k" * 32),
                                    self.sessions)
        self.lease = SweepLease(client, f"state-archives-{self.tenant}", 60)

    async def new_state(self, blob: bytes | None = None) -> str:
        """A recorded session with ``blob`` (the harness's own by default) as its state."""
        session = self.sessions.fresh(self.tenant)
        await self.sessions.record(session)
        await self.service.upload(self.principal, session.id, _chunks(blob or self.blob))
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


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture(scope="module")
def blob(runtime_dir: Path) -> bytes:
    return lz4_blob(runtime_dir, pickle.dumps({"namespace": {"x": "y" * 3000}, "modules": {}}))


@pytest.fixture(scope="module")
def bigger(runtime_dir: Path, blob: bytes) -> bytes:
    data = lz4_blob(runtime_dir, pickle.dumps({"namespace": {"x": os.urandom(4000)},
                                               "modules": {}}))
    assert len(data) > len(blob)
    return data


@pytest.fixture
def harness(tmp_path: Path, valkey_url: str, blob: bytes) -> Iterator[Harness]:
    yield Harness(tmp_path / "objects", valkey.Valkey.from_url(valkey_url), blob)


def test_an_archive_unused_for_the_ttl_is_deleted_and_its_bytes_given_back(
        harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        assert await harness.usage() == len(harness.blob)
        path = await harness.archive_and_evict(session, written_ago=5 * HOUR, used_ago=2 * HOUR)
        assert await harness.expire(3 * HOUR) == []  # written 5 h ago, but used 2 h ago
        assert path.exists() and await harness.usage() == len(harness.blob)
        assert await harness.expire(HOUR) == [session]
        assert not path.exists() and await harness.usage() == 0
        with pytest.raises(NotFound):
            await harness.service.download(harness.principal, session)
        assert await harness.expire(HOUR) == []  # nothing given back twice

    run(scenario())


def test_an_archive_still_hot_or_used_since_is_kept(harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        hot = await harness.new_state()  # written and used long ago, its hot copy still there
        assert await harness.archive_now(hot)
        os.utime(harness.archive_path(hot), (time.time() - 5 * HOUR,) * 2)
        await harness.used(hot, 5 * HOUR)
        assert await harness.expire(HOUR) == []
        # Read while hot (a download, no execution): a use all the same.
        read = await harness.new_state()
        path = await harness.archive_and_evict(read, written_ago=5 * HOUR, used_ago=5 * HOUR)
        await harness.service.download(harness.principal, read)  # back from the archive
        await harness.used(read, 5 * HOUR)
        await harness.service.download(harness.principal, read)  # the hot copy
        await harness.evict(read)
        assert await harness.expire(HOUR) == []
        assert path.exists() and harness.archive_path(hot).exists()
        assert await harness.usage() == 2 * len(harness.blob)

    run(scenario())


def test_an_archive_with_no_last_use_starts_its_ttl_when_first_seen(
        harness: Harness, run: Any) -> None:
    """Archives written before last uses were recorded (or a Valkey that lost them) are
    not deleted at the first sweep, however old."""
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=30 * 24 * HOUR,
                                               used_ago=None)
        assert await harness.expire(HOUR) == []
        assert path.exists()
        assert await harness.expire(HOUR) == []  # its TTL runs from the first sweep
        await harness.used(session, 2 * HOUR)
        assert await harness.expire(HOUR) == [session]

    run(scenario())


def test_a_state_deleted_while_it_was_read_stays_deleted(harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=0, used_ago=0)
        found = await harness.store.get(harness.tenant, session)  # a read from the archive
        assert found is not None and found[1] == "archive"
        await harness.service.delete(harness.principal, session)  # meanwhile
        assert not await harness.store.rehydrate(found[0])  # the read ends
        assert not await harness.archive_now(session)
        assert not path.exists() and await harness.usage() == 0
        with pytest.raises(NotFound):
            await harness.service.download(harness.principal, session)
        # A new state after the deletion is kept, counted and read back as any other.
        await harness.service.upload(harness.principal, session, _chunks(harness.blob))
        assert await harness.usage() == len(harness.blob)
        assert await harness.archive_now(session)
        await harness.evict(session)
        assert (await harness.service.download(harness.principal, session)).blob == \
            harness.blob

    run(scenario())


def test_an_archive_expired_while_it_was_read_does_not_come_back_uncounted(
        harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=2 * HOUR,
                                               used_ago=2 * HOUR)
        found = await harness.store.get(harness.tenant, session)
        assert found is not None
        assert await harness.expire(HOUR) == [session]  # meanwhile
        assert not await harness.store.rehydrate(found[0])
        assert not path.exists() and await harness.usage() == 0
        assert await harness.store.get(harness.tenant, session) is None

    run(scenario())


def test_a_read_that_loses_to_a_newer_save_leaves_the_newer_one_counted(
        harness: Harness, bigger: bytes, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        await harness.archive_and_evict(session, written_ago=0, used_ago=0)
        found = await harness.store.get(harness.tenant, session)
        assert found is not None
        await harness.service.upload(harness.principal, session, _chunks(bigger))  # meanwhile
        assert not await harness.store.rehydrate(found[0])
        assert await harness.usage() == len(bigger)
        assert (await harness.service.download(harness.principal, session)).blob == bigger

    run(scenario())


def test_a_save_after_the_expiry_retired_the_archive_is_counted(
        harness: Harness, bigger: bytes, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=2 * HOUR,
                                               used_ago=2 * HOUR)
        assert await harness.store.retire(harness.tenant, session, time.time() - HOUR)
        await harness.service.upload(harness.principal, session, _chunks(bigger))  # meanwhile
        await harness.store.archive.delete(harness.tenant, session)  # the expiry goes on
        assert not path.exists()
        assert await harness.usage() == len(bigger)
        assert (await harness.service.download(harness.principal, session)).blob == bigger
        assert await harness.archive_now(session)  # archived again

    run(scenario())


def test_concurrent_saves_leave_the_stored_state_counted(harness: Harness, runtime_dir: Path,
                                                         run: Any) -> None:
    blobs = [lz4_blob(runtime_dir, pickle.dumps({"namespace": {"x": os.urandom(500 * n)},
                                                 "modules": {}})) for n in range(1, 7)]

    async def scenario() -> None:
        session = await harness.new_state()
        await asyncio.gather(*(harness.service.upload(harness.principal, session, _chunks(b))
                               for b in blobs))
        stored = (await harness.service.download(harness.principal, session)).blob
        assert stored in blobs and await harness.usage() == len(stored)

    run(scenario())


def test_the_charge_of_a_state_lost_before_it_was_archived_is_given_back(
        harness: Harness, run: Any) -> None:
    """A hot copy that expired before it could be archived (the object store down for
    longer than ``STATE_TTL``): its charge goes once it is unused for the TTL."""
    async def scenario() -> None:
        lost = await harness.new_state()
        await harness.evict(lost)
        await harness.used(lost, 30)
        hot = await harness.new_state()  # neither archived: still hot, last used long ago
        await harness.used(hot, 2 * HOUR)
        assert await harness.expire(HOUR) == []
        assert await harness.usage() == 2 * len(harness.blob)  # used half a minute ago
        await harness.used(lost, 2 * HOUR)
        await harness.expire(HOUR)
        assert await harness.usage() == len(harness.blob)  # the hot one's
        assert (await harness.service.download(harness.principal, hot)).blob == harness.blob

    run(scenario())


def test_state_read_back_is_archived_again(harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=0, used_ago=0)
        await harness.service.download(harness.principal, session)  # hot again
        path.unlink()  # lost from the object store
        assert await harness.archive_now(session) and await harness.usage() == len(harness.blob)

    run(scenario())


def test_state_on_both_sides_of_the_storage_quota(tmp_path: Path, valkey_url: str,
                                                  blob: bytes, bigger: bytes,
                                                  run: Any) -> None:
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


def test_a_state_deleted_while_it_was_being_archived_is_not_archived(
        harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()

        async def delete_meanwhile() -> None:
            await harness.service.delete(harness.principal, session)

        harness.archive.before_put[session] = delete_meanwhile  # the archiver read it
        assert not await harness.archive_now(session)
        assert session not in harness.archive.before_put, "deleted while being archived"
        assert await harness.usage() == 0
        with pytest.raises(NotFound):
            await harness.service.download(harness.principal, session)

    run(scenario())


def test_an_archive_whose_delete_failed_is_never_read_and_deleted_later(
        harness: Harness, run: Any) -> None:
    """The object store refuses a deletion's archive delete (a 503 to the client), and
    then the expiry's: the state is not found meanwhile, however long it takes, and the
    expiry sweep deletes the archive once the store accepts."""
    async def scenario() -> None:
        session = await harness.new_state()
        path = await harness.archive_and_evict(session, written_ago=0, used_ago=0)
        harness.archive.failing_deletes = 2
        with pytest.raises(StorageUnavailable):
            await harness.service.delete(harness.principal, session)
        assert path.exists() and await harness.usage() == 0
        tombstone = f"k8si:state:deleted:{harness.tenant}:{session}"
        assert await harness.client.ttl(tombstone) == -1  # no end while the archive is there
        assert await harness.store.get(harness.tenant, session) is None
        with pytest.raises(NotFound):
            await harness.service.download(harness.principal, session)
        assert await harness.expire(HOUR) == []  # the store refuses again: next sweep
        assert path.exists()
        assert await harness.expire(HOUR) == [session]
        assert not path.exists() and await harness.usage() == 0
        assert 0 < await harness.client.ttl(tombstone) <= 600  # then for reads begun before

    run(scenario())


def test_an_archive_from_before_charges_is_counted_when_read_back(
        harness: Harness, run: Any) -> None:
    async def scenario() -> None:
        session = await harness.new_state()
        await harness.archive_and_evict(session, written_ago=0, used_ago=0)
        await harness.client.hdel(f"k8si:quota:ledger:{harness.tenant}",  # type: ignore[misc]
                                  f"state:{session}")
        await harness.client.hset(f"k8si:quota:usage:{harness.tenant}",  # type: ignore[misc]
                                  "bytes", "0")  # as an older version left it: uncounted
        assert (await harness.service.download(harness.principal, session)).blob == \
            harness.blob
        assert await harness.usage() == len(harness.blob)

    run(scenario())


@pytest.mark.parametrize(("archive_ttl", "accepted"), [
    ("0", True), ("4200", False), ("4201", True)])
def test_the_archive_ttl_outlives_the_hot_copy(archive_ttl: str, accepted: bool) -> None:
    env = {"STATE_TTL": "3600", "STATE_ARCHIVE_AFTER": "600", "STATE_ARCHIVE_TTL": archive_ttl}
    if accepted:
        assert Settings.from_env(env).state.archive_ttl == int(archive_ttl)
    else:
        with pytest.raises(SettingsError, match="STATE_ARCHIVE_TTL"):
            Settings.from_env(env)
