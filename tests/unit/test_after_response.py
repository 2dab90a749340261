"""Work deferred until the response is sent (``AfterResponse``, wired once for every
route): it runs after the last byte, whatever the response's shape, and is never
dropped. Driven through the ASGI interface the server uses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.response import Stream
from litestar.testing import TestClient

from app.after_response import AfterResponse, defer

EVENTS: list[str] = []


def _record(event: str) -> None:
    EVENTS.append(event)


@get("/plain", sync_to_thread=False)
def plain() -> dict[str, str]:
    defer(lambda: _record("recycled"))
    _record("handled")
    return {"ok": "yes"}


@get("/stream")
async def stream() -> Stream:
    async def chunks() -> Any:
        for number in range(3):
            _record(f"chunk {number}")
            yield f"{number}\n".encode()
            await asyncio.sleep(0)
        defer(lambda: _record("recycled"))  # deferred while the body is still going out

    return Stream(chunks())


@get("/fails", sync_to_thread=False)
def fails() -> None:
    defer(lambda: _record("recycled"))
    raise LookupError("the handler failed")


def _app() -> Litestar:
    return Litestar(route_handlers=[plain, stream, fails], middleware=[AfterResponse()])


def test_outside_a_request_work_starts_at_once() -> None:
    ran: list[str] = []
    defer(lambda: ran.append("now"))
    assert ran == ["now"]


def _messages_of(path: str) -> list[str]:
    """Run one request through the app's ASGI interface; the order of what happened."""
    EVENTS.clear()
    app = _app()

    async def scenario() -> None:
        received = False
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal received
            if received:  # the client hangs up once it has the whole answer
                await done.wait()
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                last = not message.get("more_body")
                EVENTS.append("last byte sent" if last else "bytes sent")
                if last:
                    done.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": [],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
        await app(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(scenario())
    return list(EVENTS)


def test_work_runs_after_the_last_byte_of_a_plain_answer() -> None:
    assert _messages_of("/plain") == ["handled", "last byte sent", "recycled"]


def test_work_runs_after_the_last_byte_of_a_streamed_answer() -> None:
    events = _messages_of("/stream")
    assert events.index("recycled") > events.index("last byte sent")
    assert events.count("recycled") == 1


def test_a_failed_request_runs_its_work_too() -> None:
    events = _messages_of("/fails")
    assert events.count("recycled") == 1


@pytest.mark.parametrize("path", ["/plain", "/stream"])
def test_a_real_client_gets_the_answer_and_the_work_runs_once(path: str) -> None:
    EVENTS.clear()
    with TestClient(_app()) as client:
        assert client.get(path).status_code == 200
    assert EVENTS.count("recycled") == 1
