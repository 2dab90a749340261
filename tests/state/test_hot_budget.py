"""``STATE_HOT_MAX_BYTES`` on a real Valkey (a database of its own: the budget counts
every hot copy) and a local object store: a save past the budget lives in the archive,
the archiver's loop sheds the hot copies that expire soonest down to the budget, hot
copies that expired on their own stop counting, and no state is ever lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import valkey.asyncio as valkey

from app.domain.state.hot import keep_within
from tests.state.harness import Harness

HOT = "k8si:state:hot"


@pytest.fixture
def own_db(valkey_url: str, run: Any) -> Iterator[valkey.Valkey]:
    client: valkey.Valkey = valkey.Valkey.from_url(valkey_url.rpartition("/")[0] + "/9")
    run(client.flushdb())
    yield client
    run(client.flushdb())


def _harness(tmp_path: Path, client: valkey.Valkey, blob: bytes, budget: float) -> Harness:
    return Harness(tmp_path / "objects", client, blob, hot_max_bytes=int(budget))


async def _hot(harness: Harness, session: str) -> bool:
    return bool(await harness.client.exists(f"k8si:state:{harness.tenant}:{session}"))


def test_a_save_past_the_hot_budget_lives_in_the_archive(
        tmp_path: Path, own_db: valkey.Valkey, blob: bytes, run: Any) -> None:
    harness = _harness(tmp_path, own_db, blob, 2.5 * len(blob))

    async def scenario() -> None:
        first, second = await harness.new_state(), await harness.new_state()
        assert await _hot(harness, first) and await _hot(harness, second)
        assert await harness.store.hot_bytes() == 2 * len(blob)  # within: both hot
        third = await harness.new_state()  # past it: archived, not hot
        assert not await _hot(harness, third)
        assert harness.archive_path(third).exists()
        assert await harness.store.hot_bytes() == 2 * len(blob)
        assert await harness.usage() == 3 * len(blob)  # still the tenant's, charged
        assert (await harness.service.download(harness.principal, third)).blob == blob

    run(scenario())


def test_the_archiver_sheds_the_soonest_expiring_copies_down_to_the_budget(
        tmp_path: Path, own_db: valkey.Valkey, blob: bytes, run: Any) -> None:
    harness = _harness(tmp_path, own_db, blob, 0)  # no budget while they are saved

    async def scenario() -> None:
        sessions = [await harness.new_state() for _ in range(4)]
        await harness.store.touch(harness.tenant, sessions[0])  # used again: kept longest
        harness.store.hot_max_bytes = int(2.5 * len(blob))
        assert await keep_within(harness.store) == 2
        assert await harness.store.hot_bytes() == 2 * len(blob)
        hot = [await _hot(harness, session) for session in sessions]
        assert hot == [True, False, False, True]
        assert all(harness.archive_path(s).exists() for s in sessions[1:3])  # archived first
        for session in sessions:  # nothing lost
            assert (await harness.service.download(harness.principal, session)).blob == blob

    run(scenario())


def test_hot_copies_that_expired_on_their_own_stop_counting(
        tmp_path: Path, own_db: valkey.Valkey, blob: bytes, run: Any) -> None:
    harness = _harness(tmp_path, own_db, blob, 0)

    async def scenario() -> None:
        gone, renewed, deleted = [await harness.new_state() for _ in range(3)]
        for session in (gone, renewed):  # both counted as expiring a while ago
            await own_db.zadd(HOT, {f"{harness.tenant}:{session}": time.time() - 10})
        await harness.evict(gone)  # its TTL was over
        await harness.service.delete(harness.principal, deleted)
        assert await harness.store.hot_bytes() == 2 * len(blob)
        await keep_within(harness.store)
        assert await harness.store.hot_bytes() == len(blob)  # the renewed one's
        score = await own_db.zscore(HOT, f"{harness.tenant}:{renewed}")
        assert score is not None and score > time.time() + 3000  # counted to its new end
        assert await own_db.hlen("k8si:state:hotsize") == 1  # type: ignore[misc]

    run(scenario())
