"""Work deferred until the response is sent: run after it, and never dropped."""

from __future__ import annotations

import asyncio

import pytest

from app import after_response
from app.after_response import Deferred, defer


def test_outside_a_request_work_starts_at_once() -> None:
    ran: list[str] = []
    defer(lambda: ran.append("now"))
    assert ran == ["now"]


def test_work_waits_for_the_response_then_runs_once() -> None:
    async def scenario() -> list[str]:
        ran: list[str] = []
        with Deferred() as deferred:
            defer(lambda: ran.append("recycle"))
            assert ran == []
        assert ran == []  # the handler returned; the response is not sent yet
        await deferred.run()  # the response's background task
        await deferred.run()
        defer(lambda: ran.append("outside"))  # the scope is left: at once
        return ran

    assert asyncio.run(scenario()) == ["recycle", "outside"]


def test_a_failed_request_runs_its_work_at_once() -> None:
    async def scenario() -> list[str]:
        ran: list[str] = []
        with pytest.raises(LookupError), Deferred():
            defer(lambda: ran.append("recycle"))
            raise LookupError("the handler failed")
        return ran

    assert asyncio.run(scenario()) == ["recycle"]


def test_work_runs_even_if_the_response_never_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(after_response, "SAFETY_DELAY", 0.01)

    async def scenario() -> list[str]:
        ran: list[str] = []
        with Deferred():
            defer(lambda: ran.append("recycle"))
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0.01)
        return ran

    assert asyncio.run(scenario()) == ["recycle"]
