"""The zygote generations' bookkeeping alone (pure logic over stand-in zygotes): which
generation forks for whom, when one retires, when its zygote is stopped."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from app.backends.local.generations import ZygoteGenerations
from app.backends.local.zygote import ZygoteError, ZygoteFactory


class _StandIn:
    """What the bookkeeping uses of a zygote: whether it runs, and stopping it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.running = True
        self.prefault = None

    async def stop(self) -> None:
        self.running = False


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _generations(**limits: Any) -> tuple[ZygoteGenerations, list[_StandIn], _Clock]:
    started: list[_StandIn] = []
    clock = _Clock()

    async def start() -> ZygoteFactory:
        await asyncio.sleep(0.001)  # a zygote takes a while to start
        started.append(_StandIn(len(started) + 1))
        return cast(ZygoteFactory, started[-1])

    options = {"max_sandboxes": 3, "max_age": 60.0, "max_tenants": 2, **limits}
    return ZygoteGenerations(start, clock=clock, **options), started, clock


def _run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return run


async def _settle() -> None:
    """Let the background starts and stops run."""
    await asyncio.sleep(0.02)


@_run
async def test_each_tenant_gets_its_own_generation_and_a_spare_waits() -> None:
    generations, started, _ = _generations()
    await generations.start()
    a = await generations.checkout("a")
    b = await generations.checkout("b")
    await _settle()
    assert a is not b and (a.tenant, b.tenant) == ("a", "b")
    assert await generations.checkout("a") is a
    assert len(started) == 3  # a's, b's, and the next spare started ahead
    await generations.stop()
    assert not any(zygote.running for zygote in started)


@_run
async def test_a_warm_sandbox_of_the_spare_binds_it_to_its_first_claimant_only() -> None:
    generations, _, _ = _generations()
    await generations.start()
    warm = await generations.checkout(None)
    assert warm.tenant is None
    assert generations.claim(warm, "a")
    assert warm.tenant == "a"
    assert not generations.claim(warm, "b")  # never a second tenant
    assert generations.claim(warm, "a")
    await generations.stop()


@pytest.mark.parametrize(("forks", "replaced"), [(2, False), (3, True)])
@_run
async def test_replaced_after_max_sandboxes_not_before(forks: int, replaced: bool) -> None:
    generations, _, _ = _generations(max_sandboxes=3)
    await generations.start()
    first = await generations.checkout("a")
    for _ in range(forks - 1):
        assert await generations.checkout("a") is first
    await _settle()
    nxt = await generations.checkout("a")
    assert (nxt is not first) is replaced
    assert first.retired is replaced
    await generations.stop()


@pytest.mark.parametrize(("age", "replaced"), [(59.0, False), (60.0, True)])
@_run
async def test_replaced_after_max_age_not_before(age: float, replaced: bool) -> None:
    generations, _, clock = _generations(max_age=60.0, max_sandboxes=100)
    await generations.start()
    first = await generations.checkout("a")
    clock.now += age
    await _settle()
    assert (await generations.checkout("a") is not first) is replaced
    await generations.stop()


@_run
async def test_a_retired_zygote_stops_only_when_its_last_sandbox_is_gone() -> None:
    generations, _, _ = _generations(max_sandboxes=2)
    await generations.start()
    first = await generations.checkout("a")
    await generations.checkout("a")
    await _settle()
    await generations.checkout("a")  # the third: a new generation; the first retires
    zygote = cast(_StandIn, first.factory)
    assert first.retired and first.live == 2 and zygote.running
    generations.sandbox_gone(first)
    await _settle()
    assert zygote.running  # one sandbox of it still works
    generations.sandbox_gone(first)
    await _settle()
    assert not zygote.running
    await generations.stop()


@pytest.mark.parametrize(("tenants", "retired"), [(2, 0), (3, 1)])
@_run
async def test_the_least_recently_used_tenant_is_retired_over_the_cap(
        tenants: int, retired: int) -> None:
    generations, _, clock = _generations(max_tenants=2)
    await generations.start()
    first = await generations.checkout("t0")
    for number in range(1, tenants):
        clock.now += 1
        await _settle()
        await generations.checkout(f"t{number}")
    assert generations.health()["generations_in_service"] == min(tenants, 2)
    assert generations.stats["generations_retired"] == retired
    assert first.retired is bool(retired)
    await generations.stop()


@_run
async def test_concurrent_first_requests_of_two_tenants_never_bind_one_zygote() -> None:
    generations, _, _ = _generations()
    await generations.start()
    a, b = await asyncio.gather(generations.checkout("a"), generations.checkout("b"))
    assert a is not b and (a.tenant, b.tenant) == ("a", "b")
    await generations.stop()


@_run
async def test_concurrent_first_requests_of_one_tenant_bind_one_zygote() -> None:
    """Two sandboxes asked at once for a tenant without a zygote (a request and a pool
    refill): one binding; the second must not bind the next spare and retire the first."""
    generations, _, _ = _generations()  # no spare started yet: both wait for one
    first, second = await asyncio.gather(generations.checkout("a"), generations.checkout("a"))
    await _settle()
    assert first is second and not first.retired
    assert generations.stats["generations_retired"] == 0
    await generations.stop()


@_run
async def test_a_zygote_that_cannot_start_is_an_error_not_a_shared_zygote() -> None:
    async def broken() -> ZygoteFactory:
        raise ZygoteError("no zygote here")

    generations = ZygoteGenerations(broken, max_sandboxes=3, max_age=60, max_tenants=2)
    with pytest.raises(ZygoteError):
        await generations.start()
    with pytest.raises(ZygoteError):
        await generations.checkout("a")
    assert generations.stats["generations_failed"] == 2
    await generations.stop()
