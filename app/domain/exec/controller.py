"""HTTP routes of the exec area: ``POST /exec`` and ``POST /exec/stream`` (SSE)."""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller, Request, Response, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody
from litestar.response import ServerSentEvent

from ...auth import Principal
from ...errors import UnsupportedMediaType, error_responses
from ...ids import is_valid_id, new_id
from ...profiles import served_profile
from .keepalive import answer_with_keepalive
from .schemas import ExecRequest, ExecResponse
from .service import ExecService
from .streaming import ExecStream

__all__ = ["ExecController"]


async def require_json(connection: ASGIConnection[Any, Any, Any, Any],
                       _: BaseRouteHandler) -> None:
    """415 for a body that is not JSON (before anything tries to decode it). Async: a
    sync guard would run in a worker thread (a thread hop on every request)."""
    media_type = connection.headers.get("content-type", "application/json")
    if media_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("expected Content-Type: application/json")


EXEC_DESCRIPTION = (
    "The program's own failures are 200 results with a `status`. A run that takes "
    "longer than about 2 s is answered early through proxies: once its sandbox is "
    "claimed, the 200 status and then a single space every `EXEC_KEEPALIVE_INTERVAL` "
    "seconds go out before the JSON result (JSON parsers skip leading whitespace). "
    "Errors found before the run starts keep their own status codes; a failure after "
    "the status went out is the body `{\"error\", \"message\"}`. `timeout` is in "
    "milliseconds from 1000 up (as today's LibreChat client sends it), else seconds.")


class ExecController(Controller):
    """Runs code; the program's own failures are 200 results, not errors."""

    path = "/exec"
    tags = ["exec"]

    @post("/", status_code=200, guards=[require_json],
          responses=error_responses(404, 409, 413, 415),
          summary="Run code in a fresh sandbox", description=EXEC_DESCRIPTION)
    async def execute(self, request: Request[Principal, Any, Any], data: JSONBody[ExecRequest],
                      exec_service: NamedDependency[ExecService]) -> Response[ExecResponse]:
        supplied = request.headers.get("x-request-id", "")
        request_id = supplied if is_valid_id(supplied) else new_id()
        profile = served_profile(request.scope)
        # The used sandbox is recycled once the answer is sent (``AfterResponse``).
        answer = await answer_with_keepalive(
            lambda acquired: exec_service.execute(request.user, data, request_id,
                                                  on_acquired=acquired, profile=profile),
            interval=exec_service.settings.exec_keepalive_interval,
            headers={"X-Request-ID": request_id})
        return cast("Response[ExecResponse]", answer)

    @post("/stream", status_code=200, guards=[require_json],
          responses=error_responses(404, 409, 413, 415), media_type="text/event-stream",
          summary="Run code, streaming its output as Server-Sent Events",
          response_description="Server-Sent Events: `stdout`/`stderr` chunks, then one "
                               "`result` (or `error`)",
          description="The same request as `POST /exec`. Answered as `text/event-stream`: "
                      "`stdout` and `stderr` events (`{\"text\": ...}`) as the program "
                      "produces output, then one `result` event with the full `/exec` "
                      "response (or one `error` event `{\"error\", \"message\"}` if the "
                      "service fails mid-stream). Request errors are JSON answers, sent "
                      "before the stream begins. Closing the connection stops the program.")
    async def execute_stream(self, request: Request[Principal, Any, Any],
                             data: JSONBody[ExecRequest],
                             exec_service: NamedDependency[ExecService]) -> ServerSentEvent:
        supplied = request.headers.get("x-request-id", "")
        request_id = supplied if is_valid_id(supplied) else new_id()
        stream = ExecStream(exec_service, request.user, data, request_id,
                            exec_service.settings.response_output_limit,
                            profile=served_profile(request.scope))
        await stream.start()
        return ServerSentEvent(stream.events(), headers={"X-Request-ID": request_id})
