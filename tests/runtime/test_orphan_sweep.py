"""The sweep of orphaned checkpoints (``app/runtime_sessions/sweep.py``), on a real Valkey
and a real local object store: a runtime session whose record is gone (it expired
unused) loses its manifests and blobs, and its tenant gets their bytes back; nothing of
a live session, of a recent one, or of an ordinary session's files is touched."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, TypeVar

import obstore
import pytest
import valkey.asyncio as valkey

from app.leases import SweepLease
from app.runtime_sessions import Checkpoints, RuntimeRecord, RuntimeRecords, sweep_orphans
from app.settings import TenantLimits, TenantSettings
from app.storage import FileStore
from app.storage.store import create_object_store
from app.tenants import TenantQuotas, blob_charge

T = TypeVar("T")
_BLOB = b"x" * 1000


class _World:
    """A store, records and quotas of one test (its own tenant)."""

    def __init__(self, root: Path, valkey_url: str) -> None:
        self.root = root / "objects"
        self.store = create_object_store(None, self.root)
        self.client = valkey.Valkey.from_url(valkey_url)
        self.quotas = TenantQuotas(self.client, TenantSettings(defaults=TenantLimits(
            executions_per_window=0, concurrent_executions=0, storage_bytes=0, files=0)))
        self.records = RuntimeRecords(self.client, ttl_seconds=3600, lock_seconds=60)
        self.checkpoints = Checkpoints(self.store, FileStore(self.store), root / "tmp",
                                       self.quotas)
        self.tenant = f"t{secrets.token_hex(4)}"
        # Its own lease (tests share the Valkey server): held, it stops the sweep.
        self.lease = SweepLease(self.client, f"checkpoints-{self.tenant}", seconds=60)

    async def sweep(self, grace_seconds: float = 3600) -> list[tuple[str, str]]:
        return await sweep_orphans(self.records, self.checkpoints, self.lease, grace_seconds)

    async def session(self, *, record: bool, age: float) -> str:
        """A runtime session's checkpoint (a manifest and a blob counted in the quota),
        its objects last written ``age`` seconds ago, and its record if ``record``."""
        runtime_id = secrets.token_hex(8)
        root = f"{self.tenant}/rt/{runtime_id}"
        sha256 = secrets.token_hex(32)
        await self.quotas.reserve(self.tenant, blob_charge(runtime_id, sha256), len(_BLOB))
        await obstore.put_async(self.store, f"{root}/blobs/{sha256}", _BLOB)
        await obstore.put_async(self.store, f"{root}/manifests/1", b'{"files": {}}')
        written = time.time() - age
        for path in (self.root / root).rglob("*"):
            os.utime(path, (written, written))
        if record:
            await self.records.save(RuntimeRecord(
                id=runtime_id, tenant=self.tenant, hint=runtime_id, session_id="s" * 21,
                created_at=written, last_used=written, generation=1))
        return runtime_id

    async def put(self, path: str, data: bytes) -> None:
        await obstore.put_async(self.store, path, data)

    def objects(self, runtime_id: str) -> list[Path]:
        return [p for p in (self.root / self.tenant / "rt" / runtime_id).rglob("*")
                if p.is_file()]


@pytest.fixture
def world(tmp_path: Path, valkey_url: str) -> _World:
    return _World(tmp_path, valkey_url)


def test_an_orphan_is_swept_and_its_bytes_given_back(world: _World, run: Any) -> None:
    orphan = run(world.session(record=False, age=7200))
    assert run(world.quotas.usage(world.tenant)) == (len(_BLOB), 1)
    assert (world.tenant, orphan) in run(world.sweep())
    assert world.objects(orphan) == []
    assert run(world.quotas.usage(world.tenant)) == (0, 0)


def test_a_live_or_recent_session_and_ordinary_files_are_kept(world: _World,
                                                              run: Any) -> None:
    live = run(world.session(record=True, age=7200))
    recent = run(world.session(record=False, age=60))  # its record may not be written yet
    ordinary = f"{world.tenant}/{'s' * 21}/file"
    run(world.put(ordinary, b"data"))
    old = time.time() - 7200
    os.utime(world.root / ordinary, (old, old))
    swept = run(world.sweep())
    assert not {(world.tenant, live), (world.tenant, recent)} & set(swept)
    assert len(world.objects(live)) == 2 and len(world.objects(recent)) == 2
    assert (world.root / ordinary).exists()
    assert run(world.quotas.usage(world.tenant)) == (2 * len(_BLOB), 2)
    # Once nothing of it is recent any more, the one without a record goes too.
    assert (world.tenant, recent) in run(world.sweep(grace_seconds=30))
    assert world.objects(recent) == [] and len(world.objects(live)) == 2


def test_one_replica_sweeps_at_a_time(world: _World, run: Any) -> None:
    orphan = run(world.session(record=False, age=7200))

    async def while_another_holds_the_lease() -> list[tuple[str, str]]:
        async with SweepLease(world.client, f"checkpoints-{world.tenant}", 60).held() as mine:
            assert mine
            return await world.sweep()

    assert run(while_another_holds_the_lease()) == []
    assert len(world.objects(orphan)) == 2
    assert run(world.quotas.usage(world.tenant)) == (len(_BLOB), 1)
    assert (world.tenant, orphan) in run(world.sweep())  # the lease was given back
    assert run(world.quotas.usage(world.tenant)) == (0, 0)
