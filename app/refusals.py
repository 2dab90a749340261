"""Refusals a client can read: a 413 is sent once the request body has been drained.

A server that answers 413 and closes while the client is still sending leaves unread
bytes in its socket; the kernel then resets the connection, and a client that sends
the whole body before reading (Node's fetch, httpx, requests) sees "connection reset"
instead of the JSON answer. ``DrainOnRefusal`` wraps ``send``: before the start of a
413 goes out it reads and discards what is left of the request body, at most
``DRAIN_BYTES`` bytes for at most ``DRAIN_SECONDS`` seconds, and marks the answer
``Connection: close``. A body within that bound is read to its end, so the close
is clean and the client reads the refusal; a larger one is cut off as before.

The middleware also wraps ``receive`` to note when the body has ended (a message
with ``more_body`` false, or ``http.disconnect``): a refusal made after that is sent
at once. Draining then would wait for nothing — under uvicorn a ``receive()`` after
the last body message blocks until the client disconnects, and a client waiting for
its answer would get its 413 only after ``DRAIN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "DrainOnRefusal", "drain"]

#: The most of a refused body read before answering (beyond it the connection is cut).
DRAIN_BYTES = 16 * 1024 * 1024
#: The longest a refused body is read before answering.
DRAIN_SECONDS = 30.0


async def drain(receive: Receive, limit: int = DRAIN_BYTES,
                seconds: float = DRAIN_SECONDS) -> bool:
    """Read the rest of the request body; True when it ended within the bounds."""
    read, deadline = 0, time.monotonic() + seconds
    while read <= limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            message: Any = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return False
        if message.get("type") != "http.request":
            return False  # the client is gone
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class DrainOnRefusal(ASGIMiddleware):
    """Drains the request body before a 413 answer starts (see the module docstring)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     next_app: ASGIApp) -> None:
        body_ended = False

        async def receive_noting_the_end() -> ReceiveMessage:
            nonlocal body_ended
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_ended = True  # the last body message, or the client is gone
            return message

        async def send_after_draining(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                if not body_ended:
                    await drain(receive_noting_the_end)
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await next_app(scope, receive_noting_the_end, send_after_draining)
