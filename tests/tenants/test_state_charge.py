"""A session's Python state in the storage quota's ledger, on a real Valkey: one object
rewritten in place, charged at its latest size (``TenantQuotas.recharge``), refused
when it grows past the quota, and given back once when it goes."""

from __future__ import annotations

import asyncio
from typing import Any

import valkey.asyncio as valkey

from app.settings import TenantLimits, TenantSettings
from app.tenants import QuotaExceeded, TenantQuotas, state_charge


def _quotas(client: valkey.Valkey, storage_bytes: int = 0) -> TenantQuotas:
    return TenantQuotas(client, TenantSettings(defaults=TenantLimits(
        executions_per_window=0, concurrent_executions=0, storage_bytes=storage_bytes,
        files=1)))  # a state is no file: a one-file quota never refuses it


def test_a_state_is_counted_at_its_latest_size(client: valkey.Valkey, tenant: str,
                                               run: Any) -> None:
    quotas = _quotas(client)
    charge = state_charge("s" * 21)

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        for size in (700, 1500, 200):  # saved three times: grown, then shrunk
            await quotas.recharge(tenant, charge, size)
            seen.append(await quotas.usage(tenant))
        await quotas.release(tenant, charge, 0, files=0)
        seen.append(await quotas.usage(tenant))
        return seen

    assert run(scenario()) == [(700, 0), (1500, 0), (200, 0), (0, 0)]


def test_a_state_on_both_sides_of_the_quota(client: valkey.Valkey, tenant: str,
                                            run: Any) -> None:
    quotas = _quotas(client, storage_bytes=1000)
    first, second = state_charge("a" * 21), state_charge("b" * 21)

    async def scenario() -> list[Any]:
        await quotas.recharge(tenant, first, 400)
        await quotas.recharge(tenant, second, 600)  # exactly the quota
        steps: list[Any] = [await quotas.usage(tenant)]
        try:
            await quotas.recharge(tenant, second, 601)  # one byte past it
        except QuotaExceeded as exc:
            steps.append(exc.code)
        steps.append(await quotas.usage(tenant))  # what it counted before stays
        await quotas.recharge(tenant, first, 399)  # room for one more byte
        await quotas.recharge(tenant, second, 601)
        steps.append(await quotas.usage(tenant))
        return steps

    assert run(scenario()) == [(1000, 0), "quota_exceeded", (1000, 0), (1000, 0)]


def test_a_shrinking_state_is_never_refused_and_reading_is_never_refused(
        client: valkey.Valkey, tenant: str, run: Any) -> None:
    """Over the quota (lowered, or an archive read back): a smaller state is kept, and
    a state read back is counted whatever the limit."""
    quotas = _quotas(client, storage_bytes=100)
    charge = state_charge("c" * 21)

    async def scenario() -> list[tuple[int, int]]:
        await quotas.recharge(tenant, charge, 500, enforce=False)
        seen = [await quotas.usage(tenant)]
        await quotas.recharge(tenant, charge, 300)
        seen.append(await quotas.usage(tenant))
        return seen

    assert run(scenario()) == [(500, 0), (300, 0)]


def test_concurrent_saves_and_deletes_count_the_state_once(
        client: valkey.Valkey, tenant: str, run: Any) -> None:
    quotas = _quotas(client)
    charge = state_charge("d" * 21)

    async def scenario() -> list[tuple[int, int]]:
        await asyncio.gather(*(quotas.recharge(tenant, charge, 100 * n) for n in range(1, 9)))
        bytes_, _ = await quotas.usage(tenant)
        ledger = await client.hget(f"k8si:quota:ledger:{tenant}", charge)  # type: ignore[misc]
        assert ledger is not None and int(ledger.split()[0]) == bytes_  # one of the saves
        await asyncio.gather(*(quotas.release(tenant, charge, 0, files=0) for _ in range(4)))
        return [await quotas.usage(tenant)]

    assert run(scenario()) == [(0, 0)]


def test_with_usage_from_before_the_ledger_a_state_is_given_back_each_time_it_goes(
        client: valkey.Valkey, tenant: str, run: Any) -> None:
    """A session's state key is reused: deleted, saved again and deleted again within a
    day, its charge in the ledger is given back both times (the day's release marker
    stops only a second give-back of an object the ledger does not hold)."""
    quotas = _quotas(client)
    charge = state_charge("e" * 21)

    async def scenario() -> list[tuple[int, int]]:
        await client.hset(f"k8si:quota:usage:{tenant}",  # type: ignore[misc]
                          mapping={"bytes": 5000, "files": 3})  # counted by an older version
        seen = []
        for _ in range(2):
            await quotas.recharge(tenant, charge, 250)
            await quotas.release(tenant, charge, 0, files=0)
            seen.append(await quotas.usage(tenant))
        return seen

    assert run(scenario()) == [(5000, 3), (5000, 3)]
