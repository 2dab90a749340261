"""Sweep leases (``app/leases.py``) on a real Valkey: one replica at a time sweeps (an
expired file is deleted, and its bytes given back, by one replica, not by each)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import valkey.asyncio as valkey

from app.leases import SweepLease
from app.settings import TenantLimits, TenantSettings
from app.storage import FileMeta, FileStore, create_object_store
from app.storage.expiry import expire_once
from app.tenants import TenantQuotas, file_charge


def test_a_lease_is_held_by_one_and_given_back(valkey_url: str, run: Any) -> None:
    client = valkey.Valkey.from_url(valkey_url)
    name = f"test-{secrets.token_hex(4)}"
    first, second = SweepLease(client, name, 60), SweepLease(client, name, 60)

    async def scenario() -> tuple[bool, bool, bool, int]:
        async with first.held() as mine, second.held() as theirs:
            ttl = int(await client.ttl(first.key))
        async with second.held() as afterwards:
            return mine, theirs, afterwards, ttl

    mine, theirs, afterwards, ttl = run(scenario())
    assert mine and not theirs and afterwards
    assert 0 < ttl <= 60  # a replica that dies while holding it does not keep it
    assert run(client.exists(first.key)) == 0


def test_a_lease_taken_over_after_expiry_is_not_given_back_by_the_old_holder(
        valkey_url: str, run: Any) -> None:
    client = valkey.Valkey.from_url(valkey_url)
    lease = SweepLease(client, f"test-{secrets.token_hex(4)}", 60)

    async def scenario() -> bytes | None:
        async with lease.held() as mine:
            assert mine
            await client.set(lease.key, b"another replica's")  # ours expired, theirs now
        value: bytes | None = await client.get(lease.key)
        return value

    assert run(scenario()) == b"another replica's"


def test_two_replicas_expiring_the_same_file_give_its_bytes_back_once(
        tmp_path: Path, valkey_url: str, run: Any) -> None:
    client = valkey.Valkey.from_url(valkey_url)
    tenant = f"t{secrets.token_hex(4)}"
    quotas = TenantQuotas(client, TenantSettings(defaults=TenantLimits(
        executions_per_window=0, concurrent_executions=0, storage_bytes=0, files=0)))
    store = FileStore(create_object_store(None, tmp_path / "objects"))
    source = tmp_path / "data"
    source.write_bytes(b"x" * 100)
    old = FileMeta(id="O" * 21, session_id="S" * 21, tenant=tenant, name="old.txt", size=100,
                   sha256="0" * 64, last_used=time.time() - 7200)
    name = f"files-{tenant}"

    async def release(meta: FileMeta) -> None:
        await quotas.release(meta.tenant, file_charge(meta.session_id, meta.id), meta.size)

    async def scenario() -> tuple[list[FileMeta], list[FileMeta]]:
        await quotas.reserve(tenant, file_charge(old.session_id, old.id), 100)
        await store.put(old, source)
        replicas = (SweepLease(client, name, 60), SweepLease(client, name, 60))
        first, second = await asyncio.gather(
            *(expire_once(store, 3600, lease, release) for lease in replicas))
        return first, second

    first, second = run(scenario())
    assert sorted((len(first), len(second))) == [0, 1]  # one replica swept
    assert run(quotas.usage(tenant)) == (0, 0)  # given back once, not twice
    # (Without the lease both would sweep; the quota's ledger would still give the bytes
    # back once: tests/tenants/test_quota_ledger.py.)
