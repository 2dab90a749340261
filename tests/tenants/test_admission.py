"""Admission (``app/admission.py``) against a real Valkey: every limit in one script.

Each limit is exercised on both sides: the last request it allows and the first it
refuses, with that limit's own 429; a refused step counts nothing after it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import valkey.asyncio as valkey

from app.admission import Admission, Slot
from app.errors import RateLimited, ServiceUnavailable
from app.settings import TenantLimits, TenantSettings
from tests.conftest import make_settings


def _admission(tmp_path: Path, valkey_url: str, **limits: Any) -> tuple[Admission,
                                                                         valkey.Valkey]:
    tenants = TenantSettings(
        defaults=TenantLimits(executions_per_window=limits.get("executions", 0),
                              concurrent_executions=limits.get("concurrent", 0),
                              storage_bytes=0, files=0),
        window=3600, auth_failures_per_window=limits.get("failures", 0))
    settings = make_settings(tmp_path, tmp_path, valkey_url, tenants=tenants,
                             rate_limit_window=3600,
                             rate_limit_tenant=limits.get("tenant_rate", 0),
                             rate_limit_key=limits.get("key_rate", 0),
                             queue_timeout=limits.get("queue", 0))
    client = valkey.Valkey.from_url(valkey_url)
    return Admission(client, settings, lease=60), client


def _refused(run: Callable[[Awaitable[Any]], Any], call: Awaitable[Any]) -> str:
    with pytest.raises(RateLimited) as refused:
        run(call)
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    return str(refused.value)


def test_rate_limits_of_the_tenant_and_the_credential(
        tmp_path: Path, valkey_url: str, run: Callable[[Awaitable[Any]], Any]) -> None:
    admission, _ = _admission(tmp_path, valkey_url, tenant_rate=3, key_rate=2)
    tenant = f"t{secrets.token_hex(4)}"
    assert run(admission.admit("10.0.0.1", tenant, "key:a", False)) is None
    assert run(admission.admit("10.0.0.1", tenant, "key:a", False)) is None  # key: 2 of 2
    assert "too many requests" in _refused(run, admission.admit("10.0.0.1", tenant, "key:a",
                                                                False))
    # The tenant's third request (the refused one counted too): its fourth is refused.
    assert "too many requests" in _refused(run, admission.admit("10.0.0.1", tenant, "key:b",
                                                                False))


def test_executions_per_window_and_concurrency(
        tmp_path: Path, valkey_url: str, run: Callable[[Awaitable[Any]], Any]) -> None:
    admission, client = _admission(tmp_path, valkey_url, executions=3, concurrent=1)
    tenant = f"t{secrets.token_hex(4)}"
    # Requests that do not run code are not executions.
    for _ in range(5):
        assert run(admission.admit("10.0.0.2", tenant, "key:a", False)) is None
    slot = run(admission.admit("10.0.0.2", tenant, "key:a", True))  # execution 1 of 3
    assert isinstance(slot, Slot)
    assert "already runs 1" in _refused(run, admission.admit("10.0.0.2", tenant, "key:a", True))
    run(admission.leave(slot))
    assert run(client.zcard(f"k8si:quota:running:{tenant}")) == 0
    last = run(admission.admit("10.0.0.2", tenant, "key:a", True))  # execution 3 of 3
    run(admission.leave(last))
    assert "executions for this window" in _refused(
        run, admission.admit("10.0.0.2", tenant, "key:a", True))
    # Refused by the window: no concurrency slot was taken.
    assert run(client.zcard(f"k8si:quota:running:{tenant}")) == 0


def test_over_its_concurrency_an_execution_waits_for_a_slot(
        tmp_path: Path, valkey_url: str, run: Callable[[Awaitable[Any]], Any]) -> None:
    admission, client = _admission(tmp_path, valkey_url, concurrent=1, queue=30)
    tenant = f"t{secrets.token_hex(4)}"
    first = run(admission.admit("10.0.0.4", tenant, "key:a", True))
    assert isinstance(first, Slot)

    async def second_once_the_first_ends() -> tuple[Slot | None, bool]:
        waiting = asyncio.ensure_future(admission.admit("10.0.0.4", tenant, "key:a", True))
        await asyncio.sleep(0.3)
        still_waiting = not waiting.done()
        await admission.leave(first)
        return await waiting, still_waiting

    second, waited = run(second_once_the_first_ends())
    assert waited, "the second execution waited instead of being refused"
    assert isinstance(second, Slot) and second.member != first.member
    assert run(client.zrange(f"k8si:quota:running:{tenant}", 0, -1)) == [
        second.member.encode()]
    run(admission.leave(second))


def test_a_full_tenant_is_refused_once_the_queue_timeout_ends(
        tmp_path: Path, valkey_url: str, run: Callable[[Awaitable[Any]], Any]) -> None:
    admission, client = _admission(tmp_path, valkey_url, concurrent=1, queue=1)
    tenant = f"t{secrets.token_hex(4)}"
    held = run(admission.admit("10.0.0.5", tenant, "key:a", True))
    message = _refused(run, admission.admit("10.0.0.5", tenant, "key:a", True))
    assert "already runs 1" in message and "waited 1 s" in message
    # the refused execution holds nothing; the held one is still the only one
    assert run(client.zrange(f"k8si:quota:running:{tenant}", 0, -1)) == [
        held.member.encode()]
    run(admission.leave(held))


def test_a_blocked_address_is_refused_before_anything_is_counted(
        tmp_path: Path, valkey_url: str, run: Callable[[Awaitable[Any]], Any]) -> None:
    admission, client = _admission(tmp_path, valkey_url, failures=2, tenant_rate=100,
                                   executions=100)
    tenant, address = f"t{secrets.token_hex(4)}", f"10.9.{secrets.randbelow(250)}.1"
    run(admission.failed(address))
    assert run(admission.admit(address, tenant, "key:a", True)) is None  # 1 failure of 2
    run(admission.failed(address))  # the second: now blocked
    assert "failed authentications" in _refused(run, admission.failed(address))
    assert "failed authentications" in _refused(
        run, admission.admit(address, tenant, "key:a", True))
    counts = run(client.keys(f"k8si:*{tenant}*"))
    # Only the one admitted request was counted (its rate and execution counters).
    assert all(int(run(client.get(key))) == 1 for key in counts), counts
    assert run(admission.admit("10.9.9.9", tenant, "key:a", True)) is None  # other address


def test_without_valkey_a_limit_is_a_503_and_no_limit_needs_no_valkey(
        tmp_path: Path, run: Callable[[Awaitable[Any]], Any]) -> None:
    nowhere = "redis://127.0.0.1:1/0"  # nothing listens there
    unlimited, _ = _admission(tmp_path, nowhere)
    assert run(unlimited.admit("10.0.0.3", "t", "key:a", True)) is None
    run(unlimited.failed("10.0.0.3"))
    limited, _ = _admission(tmp_path, nowhere, tenant_rate=5, failures=5)
    for call in (limited.admit("10.0.0.3", "t", "key:a", False), limited.failed("10.0.0.3")):
        with pytest.raises(ServiceUnavailable):
            run(call)
