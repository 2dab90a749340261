"""The periodic sweeps outlive their failures: an outage is a warning, a bug is logged
with its traceback, and the next pass comes at its interval either way; only
cancellation ends the loop."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from app.errors import ServiceUnavailable
from app.periodic import run_periodically
from app.storage import FileMeta, FileStore, create_object_store
from app.storage.expiry import run_expiry

logger = logging.getLogger("tests.periodic")


def test_a_failed_pass_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[BaseException | None] = [KeyError("bug"), ServiceUnavailable("down"),
                                            None, None]
    ran = asyncio.Event()
    passes = 0

    async def step() -> None:
        nonlocal passes
        passes += 1
        outcome = outcomes[min(passes, len(outcomes)) - 1]
        if passes >= 3:
            ran.set()
        if outcome is not None:
            raise outcome

    async def scenario() -> bool:
        task = asyncio.create_task(run_periodically(step, 0.01, what="test sweep",
                                                    logger=logger))
        await asyncio.wait_for(ran.wait(), timeout=30)
        task.cancel()
        try:
            await asyncio.wait_for(task, timeout=30)
        except asyncio.CancelledError:
            return True
        return False

    with caplog.at_level(logging.WARNING, logger="tests.periodic"):
        assert asyncio.run(scenario()), "only cancellation ends the loop"
    records = [r for r in caplog.records if r.name == "tests.periodic"]
    assert [(r.levelno, r.getMessage()) for r in records[:2]] == [
        (logging.ERROR, "test sweep failed unexpectedly"),
        (logging.WARNING, "test sweep failed")]
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], KeyError)
    assert getattr(records[1], "error", None) == "down"
    assert passes >= 3


def test_an_exception_the_caller_expects_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    class BackendError(Exception):
        pass

    passes: list[float] = []
    third = asyncio.Event()

    async def step() -> None:
        passes.append(time.monotonic())
        if len(passes) == 3:
            third.set()
        raise BackendError("403 Forbidden: apiserver says no")

    async def scenario() -> None:
        task = asyncio.create_task(run_periodically(step, 0.01, what="maintenance pass",
                                                    logger=logger, expected=(BackendError,)))
        await asyncio.wait_for(third.wait(), timeout=30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="tests.periodic"):
        asyncio.run(scenario())
    records = [r for r in caplog.records if r.name == "tests.periodic"]
    assert records and all(r.levelno == logging.WARNING and r.exc_info is None
                           for r in records)
    assert getattr(records[0], "error", None) == "403 Forbidden: apiserver says no"
    assert [getattr(r, "failures", None) for r in records[:3]] == [1, 2, 3]
    # failures in a row: each wait at least double the interval's multiple before it
    assert passes[2] - passes[1] >= 0.04 and passes[1] - passes[0] >= 0.02


class BuggyOnce(FileStore):
    """A real local store whose first sweep hits a bug."""

    def __init__(self, root: Path) -> None:
        super().__init__(create_object_store(None, root))
        self.sweeps = 0

    async def expire(self, unused_for: float, on_deleted: object = None) -> list[FileMeta]:
        self.sweeps += 1
        if self.sweeps == 1:
            raise AttributeError("a bug in the first sweep")
        return await super().expire(unused_for)


class AlwaysMine:
    """A sweep lease this replica always holds (the lease itself has its own tests)."""

    def held(self) -> object:
        class Held:
            async def __aenter__(self) -> bool:
                return True

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Held()


def test_the_file_expiry_sweep_survives_a_bug(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = BuggyOnce(tmp_path / "objects")
    source = tmp_path / "data"
    source.write_bytes(b"x")
    old = FileMeta(id="O" * 21, session_id="S" * 21, tenant="t", name="old.txt", size=1,
                   sha256="0" * 64, last_used=time.time() - 7200)
    monkeypatch.setattr("app.storage.expiry.expiry_interval", lambda ttl: 0.01)

    async def scenario() -> list[FileMeta]:
        await store.put(old, source)
        task = asyncio.create_task(run_expiry(store, 3600, AlwaysMine()))  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while await store.list_session("t", "S" * 21) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # until a later sweep has deleted the file
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return await store.list_session("t", "S" * 21)

    assert asyncio.run(scenario()) == []
    assert store.sweeps >= 2
