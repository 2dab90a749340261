"""Long ``POST /exec`` answers through proxies: whitespace before the JSON.

A proxy (or Node's own socket timeout) drops a connection that stays silent too long.
Once an execution has a sandbox and the request is older than ``KEEPALIVE_AFTER``
seconds, the 200 status goes out, then a single space every
``EXEC_KEEPALIVE_INTERVAL`` seconds until the JSON result, which JSON parsers read
past the leading whitespace. Until the sandbox is claimed nothing is sent, so every
error found before the run starts (validation, session, files, capacity) keeps its
own status code. A service error after the status went out becomes the body: the
contract's ``{"error", "message"}``, with the message also in ``stderr`` for clients
that only show the program's output. The client leaving cancels the execution: the
executor kills the program and the sandbox is released. With an interval of 0 the
answer is always plain JSON, sent when the run ends. ``/exec`` and
``/exec/programmatic`` answer through it alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson
from litestar import Response
from litestar.response import Stream
from litestar.serialization import encode_json

from ...errors import ServiceError

__all__ = ["KEEPALIVE_AFTER", "answer_with_keepalive"]

logger = logging.getLogger(__name__)

#: Seconds of a request before whitespace may start (once a sandbox is claimed).
KEEPALIVE_AFTER = 2.0

#: Runs the execution; calls its argument once a sandbox is claimed. Its answer is a
#: response schema (``ExecResponse``, ``ProgrammaticResponse``).
Run = Callable[[Callable[[], None]], Awaitable[object]]


def _nothing() -> None:
    """No whitespace to start: nobody waits for the claim."""


async def answer_with_keepalive(run: Run, *, interval: float, headers: dict[str, str],
                                ) -> Response[Any]:
    """The answer: plain JSON when the run is quick (or ``interval`` is 0), else
    whitespace first."""
    if interval <= 0:
        return Response(await run(_nothing), headers=headers)
    started = time.monotonic()
    claimed = asyncio.Event()
    task = asyncio.ensure_future(run(claimed.set))
    try:
        await asyncio.wait({task}, timeout=KEEPALIVE_AFTER)
        while not task.done() and not claimed.is_set():  # queued: nothing sent yet
            waiter = asyncio.ensure_future(claimed.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        if not task.done():
            await asyncio.wait({task}, timeout=max(0.0, KEEPALIVE_AFTER
                                                   - (time.monotonic() - started)))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():  # a quick run, or an error before the run: its own status code
        return Response(task.result(), headers=headers)
    return Stream(_body(task, interval), media_type="application/json", status_code=200,
                  headers=headers)


async def _body(task: asyncio.Future[object],
                interval: float) -> AsyncGenerator[bytes, None]:
    try:
        yield b" "
        while not task.done():
            await asyncio.wait({task}, timeout=interval)
            if not task.done():
                yield b" "
        yield _payload(task)
    finally:
        if not task.done():  # the client went away: stop the program, free the sandbox
            task.cancel()


def _payload(task: asyncio.Future[object]) -> bytes:
    try:
        return encode_json(task.result())
    except ServiceError as exc:
        return orjson.dumps({"status": "error", "error": exc.code, "message": exc.message,
                             **exc.extra, "stdout": "", "stderr": exc.message})
    except Exception:
        logger.exception("execution failed after the answer began")
        return orjson.dumps({"status": "error", "error": "internal_error",
                             "message": "internal server error", "stdout": "",
                             "stderr": "internal server error"})
