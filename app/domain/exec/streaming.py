"""``POST /exec/stream``: one execution answered as Server-Sent Events.

Events, in order: ``stdout`` and ``stderr`` with ``{"text": "..."}`` as the program
produces output, then exactly one ``result`` (the full ``/exec`` response) or one
``error`` (``{"error", "message"}``: the service failed after the stream began).
A comment line (``: keep-alive``) goes out after every 15 s of silence so proxies
do not close a quiet stream.

The execution runs in a task of its own through the same ``ExecService.execute``
as ``/exec``. The route answers only once a sandbox is claimed, so every request
error (validation, session, files, no capacity) is an ordinary JSON error with its
status code. Output waits in a queue for the client, capped per stream at
``RESPONSE_OUTPUT_LIMIT`` bytes like the ``/exec`` answer (then one marker), so
memory stays bounded whatever the client's speed, and a slow client never holds a
sandbox beyond the run. When the client goes away the task is cancelled: the
executor connection closes, the executor kills the program's tree, and the
sandbox is released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from litestar.response import ServerSentEventMessage
from litestar.serialization import encode_json

from ...auth import Principal
from ...errors import ServiceError
from .schemas import ExecRequest
from .service import ExecService

__all__ = ["KEEPALIVE_SECONDS", "ExecStream"]

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
CUT_MARKER = "\n[output truncated: the rest is not shown]\n"
_END = "end"
#: Executions whose stream ended early still finish their clean-up: keep them referenced.
_RUNNING: set[asyncio.Task[None]] = set()


class ExecStream:
    """One streamed execution: an ``OutputListener`` feeding the client's event stream."""

    def __init__(self, service: ExecService, principal: Principal, request: ExecRequest,
                 request_id: str, output_limit: int, *, profile: str = "default") -> None:
        self._profile = profile  # the execution profile serving it (``app/profiles.py``)
        self._service = service
        self._principal = principal
        self._request = request
        self._request_id = request_id
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._budget = {"stdout": output_limit, "stderr": output_limit}
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    # -- OutputListener ---------------------------------------------------------------

    def acquired(self) -> None:
        if not self._accepted.done():
            self._accepted.set_result(None)

    def output(self, stream: str, text: str) -> None:
        budget = self._budget[stream]  # bytes left; -1 once the marker went out
        data = text.encode("utf-8", "replace")
        if budget < 0 or not data:
            return
        if len(data) > budget:  # at 0 too: output filled it exactly and more came
            text = data[:budget].decode("utf-8", "ignore") + CUT_MARKER
            budget = -1
        else:
            budget -= len(data)
        self._budget[stream] = budget
        self._put(stream, {"text": text})

    # -- the run ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the execution; return once it has a sandbox, or raise the request's error."""
        task = asyncio.create_task(self._run())
        self._task = task
        _RUNNING.add(task)
        task.add_done_callback(_finished)
        try:
            await asyncio.wait({task, self._accepted}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not self._accepted.done():
            task.result()  # the request's error, raised before anything was streamed

    async def _run(self) -> None:
        try:
            response = await self._service.execute(self._principal, self._request,
                                                   self._request_id, self,
                                                   profile=self._profile)
        except ServiceError as exc:
            if not self._accepted.done():
                raise
            self._put("error", {"error": exc.code, "message": exc.message})
        except Exception:
            if not self._accepted.done():
                raise
            logger.exception("streamed execution failed")
            self._put("error", {"error": "internal_error", "message": "internal server error"})
        else:
            self._queue.put_nowait(("result", encode_json(response)))
        finally:
            self._queue.put_nowait((_END, b""))

    def _put(self, event: str, payload: dict[str, Any]) -> None:
        self._queue.put_nowait((event, orjson.dumps(payload)))

    # -- the client's side --------------------------------------------------------------

    async def events(self) -> AsyncGenerator[ServerSentEventMessage, None]:
        """The event stream; leaving it early (the client went away) stops the execution."""
        try:
            while True:
                try:
                    event, data = await asyncio.wait_for(self._queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                    continue
                if event == _END:
                    self._ended = True
                    return
                yield ServerSentEventMessage(event=event, data=data.decode())
        finally:
            if not self._ended and self._task is not None:
                # No await here: the stream's own scope is being cancelled.
                self._task.cancel()


def _finished(task: asyncio.Task[None]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an error raised before the stream began was answered
