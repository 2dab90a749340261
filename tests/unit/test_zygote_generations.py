"""Zygote generations on real zygotes: what sandboxes of different tenants, or of one
tenant over time, do not share (layout and hash secret), and that replacing a zygote
harms no work in flight. The bookkeeping alone: ``test_generation_bookkeeping.py``."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    API_KEY,
    OTHER_KEY,
    RunningApp,
    make_settings,
    start_app,
    stop_app,
    wait_for_factory,
)

#: What a sandbox inherits from its zygote: the str hash secret and where libc is.
FINGERPRINT = ("import ctypes\n"
               "libc = ctypes.cast(ctypes.CDLL(None).printf, ctypes.c_void_p).value\n"
               "print(hash('k8si-layout'), hex(libc))")
THIRD_KEY = "third-tenant-key-5555555555"


def _app(tmp_path: Path, runtime_dir: Path, valkey_url: str, **overrides: Any) -> Iterator[
        RunningApp]:
    settings = make_settings(tmp_path, runtime_dir, valkey_url, sandbox_factory="zygote",
                             sandbox_prefault=False, pool_sizes={"py": 1},
                             api_keys=(API_KEY, f"other:{OTHER_KEY}", f"third:{THIRD_KEY}"),
                             **overrides)
    running, server, thread = start_app(settings)
    try:
        wait_for_factory(running, "zygote")
        yield running
    finally:
        stop_app(server, thread)


def _fingerprint(app: RunningApp, key: str, code: str = FINGERPRINT) -> tuple[str, str]:
    with app.client(key) as client:
        body = client.post("/exec", json={"lang": "py", "code": code}).json()
    assert body["status"] == "ok", body
    hash_value, libc = body["stdout"].split()
    return hash_value, libc


def _zygotes(app: RunningApp) -> dict[str, Any]:
    health = app.run(app.app.state.backend.health())
    zygotes: dict[str, Any] = health["zygotes"]
    return zygotes


@pytest.fixture
def per_tenant(tmp_path: Path, runtime_dir: Path, valkey_url: str) -> Iterator[RunningApp]:
    yield from _app(tmp_path, runtime_dir, valkey_url)


def test_two_tenants_never_share_a_layout_or_hash_secret(per_tenant: RunningApp) -> None:
    first = _fingerprint(per_tenant, API_KEY)
    # The control: one tenant's sandboxes of one generation do share them (so a
    # difference below is the generations' doing, not chance).
    assert _fingerprint(per_tenant, API_KEY) == first
    other = _fingerprint(per_tenant, OTHER_KEY)
    assert other[0] != first[0] and other[1] != first[1]
    assert _fingerprint(per_tenant, OTHER_KEY) == other
    # Warm sandboxes of the first tenant's zygote were in the pool: the other tenant
    # was never given one of them, whatever the order.
    assert _fingerprint(per_tenant, API_KEY) == first
    zygotes = _zygotes(per_tenant)
    assert zygotes["generations_in_service"] == 2
    assert zygotes["generations_retired"] == 0


def test_a_zygote_is_replaced_after_its_limit_with_work_in_flight_unharmed(
        tmp_path: Path, runtime_dir: Path, valkey_url: str) -> None:
    for app in _app(tmp_path, runtime_dir, valkey_url, zygote_generation_sandboxes=3):
        long_running = ("import time\n" + FINGERPRINT.replace("print(", "first = (") + "\n"
                        "time.sleep(4)\nprint(*first)")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(_fingerprint, app, API_KEY, long_running)
            later = [_fingerprint(app, API_KEY) for _ in range(6)]
            survivor = in_flight.result(timeout=120)
        # The long run's sandbox came from the first generation, which was retired
        # (and replaced) while it ran; it finished normally.
        seen = {survivor, *later}
        assert len(seen) >= 2, seen
        assert len({fingerprint[0] for fingerprint in seen}) == len(seen)
        zygotes = _zygotes(app)
        assert zygotes["generations_retired"] >= 1
        assert zygotes["generations_in_service"] <= 1  # (0: the last one just expired)


def test_one_sandbox_under_the_limit_keeps_its_generation(
        tmp_path: Path, runtime_dir: Path, valkey_url: str) -> None:
    """The other side of the limit: below it, no replacement."""
    for app in _app(tmp_path, runtime_dir, valkey_url, zygote_generation_sandboxes=50):
        seen = {_fingerprint(app, API_KEY) for _ in range(4)}
        assert len(seen) == 1
        assert _zygotes(app)["generations_retired"] == 0


def test_the_least_recently_used_tenants_zygote_is_retired_first(
        tmp_path: Path, runtime_dir: Path, valkey_url: str) -> None:
    for app in _app(tmp_path, runtime_dir, valkey_url, zygote_max_generations=2):
        first = _fingerprint(app, API_KEY)
        other = _fingerprint(app, OTHER_KEY)
        assert _fingerprint(app, API_KEY) == first  # the default tenant: used last
        third = _fingerprint(app, THIRD_KEY)  # one too many: "other" is retired
        assert len({first[0], other[0], third[0]}) == 3
        assert _zygotes(app)["generations_in_service"] == 2
        assert _fingerprint(app, API_KEY) == first  # kept
        again = _fingerprint(app, OTHER_KEY)  # a fresh zygote, not its old one
        assert again[0] not in {first[0], other[0], third[0]}
        assert _zygotes(app)["generations_retired"] >= 2
