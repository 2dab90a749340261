"""HTTP routes of programmatic tool calling: ``POST /exec/programmatic`` and ``/cancel``."""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ...auth import Principal
from ...errors import error_responses
from ...profiles import served_profile
from ..exec.controller import require_json
from ..exec.keepalive import answer_with_keepalive
from .schemas import CancelRequest, CancelResponse, ProgrammaticRequest, ProgrammaticResponse
from .service import ProgrammaticService
from .workspace import WORKSPACE_HEADER, read_workspace

__all__ = ["REQUEST_ID_HEADER", "ProgrammaticController"]

#: The largest ``/exec/programmatic`` body: a round's tool results may be files' contents
#: (the executor takes up to 64 MiB of them; ``sidecar/server.py``), far more than code.
MAX_PROGRAMMATIC_BODY = 32 * 1024 * 1024

#: The client's id of one request (sent with each step; the cancel names it).
REQUEST_ID_HEADER = "x-librechat-code-request-id"

DESCRIPTION = (
    "Programmatic tool calling, as LibreChat's `run_tools_with_code` and "
    "`run_tools_with_bash` tools use it. The first request carries `code` (Python by "
    "default, `lang: bash` for bash), `tools` (`{name, description, parameters}` each), "
    "and optionally `session_id`, `files` and `timeout` (milliseconds: it caps each run "
    "between two rounds of tool calls). The code calls each tool as a function (Python: "
    "`x = await add(a=3, b=7)`, several at once with `asyncio.gather`; bash: "
    "`x=$(add '{\"a\": 3}')`). When it waits for results the answer is "
    "`status: tool_call_required` with `tool_calls` `[{id, name, input}]` and a "
    "`continuation_token`; answer with `{continuation_token, tool_results: [{call_id, "
    "result, is_error, error_message?}]}` (an error raises `ToolError` in the code) to "
    "the same endpoint, as many rounds as the code needs, until `status: completed` "
    "(`stdout`, `stderr`, `files` as in `/exec`) or `status: error` with `error` (no "
    "code, an unknown, expired or used token; a limit in LibreChat's words: `Time limit "
    "exceeded`, `Out of memory`, `stdout length exceeded`, `stderr length exceeded`, "
    "`Sandbox exited with code N`, `Sandbox requested an unregistered tool: NAME`). A token is "
    "single-use, bound to its tenant and session, and any replica can continue it; a "
    "paused run not continued within `PTC_LEASE_SECONDS` is reaped. Long steps are "
    "answered with leading whitespace like `/exec`. With `X-LibreChat-Code-Workspace-ID` "
    "(LibreChat's bash tool with an attached workspace) `tools` may be empty; the "
    "workspace is recorded with the run (nothing is kept per workspace yet).")


class ProgrammaticController(Controller):
    """Code that calls the client's tools, paused while the client runs them."""

    path = "/exec/programmatic"
    tags = ["exec"]

    @post("/", status_code=200, guards=[require_json],
          request_max_body_size=MAX_PROGRAMMATIC_BODY,
          responses=error_responses(404, 409, 413, 415),
          summary="Run code that calls the client's tools", description=DESCRIPTION)
    async def run(self, request: Request[Principal, Any, Any], data: JSONBody[ProgrammaticRequest],
                  programmatic_service: NamedDependency[ProgrammaticService],
                  ) -> Response[ProgrammaticResponse]:
        request_id = request.headers.get(REQUEST_ID_HEADER)
        workspace = read_workspace(request.headers.get(WORKSPACE_HEADER),
                                   data.workspace_instance_id)
        profile = served_profile(request.scope)
        # A released sandbox is recycled once the answer is sent (``AfterResponse``).
        answer = await answer_with_keepalive(
            lambda acquired: programmatic_service.run(
                request.user, data, request_id, on_acquired=acquired, workspace=workspace,
                profile=profile),
            interval=programmatic_service.settings.exec_keepalive_interval, headers={})
        return cast("Response[ProgrammaticResponse]", answer)

    @post("/cancel", status_code=200, responses=error_responses(409),
          summary="Stop a programmatic run, paused or running",
          description="The run is named by the client's request id: the "
                      "`X-LibreChat-Code-Request-ID` header of any of its requests, or "
                      "`request_id` in the body (as the LibreChat client sends it). "
                      "`cancelled` is false when no run of this tenant has that id yet; "
                      "a request by that id that arrives later (the cancel overtook it) "
                      "ends with `the run was cancelled` before its code runs.")
    async def cancel(self, request: Request[Principal, Any, Any],
                     programmatic_service: NamedDependency[ProgrammaticService],
                     data: JSONBody[CancelRequest | None] = None) -> CancelResponse:
        request_id = request.headers.get(REQUEST_ID_HEADER) or (
            data.request_id if data is not None else None)
        return CancelResponse(cancelled=await programmatic_service.cancel(request.user,
                                                                          request_id))
