"""A programmatic run from the API's side: start it, go on with tool results, cancel it.

``POST /execute`` with ``tools`` starts the run; each answer is a step
(``ProgrammaticStep``): a pause with the round's tool calls, or the end, a result
like ``/execute``'s. ``POST /execute/continue`` carries the client's results and the
next step's timeout; ``POST /execute/cancel`` stops the program. The answers come
from inside a sandbox and are checked before anything uses them: a pause lists 1
to ``MAX_CALLS_PER_ROUND`` calls with ids of the executor's shape, distinct, naming
declared tools, with inputs under ``MAX_CALL_BYTES``; anything else is an
``ExecutorError`` (the sandbox is then treated as failed).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import attrs
import orjson

from sidecar.contract import MAX_CALL_BYTES, MAX_CALLS_PER_ROUND

from .client import ExecutorClient, ExecutorError, ExecutorResult, StateCapture, execute_body

__all__ = ["ProgrammaticStep", "ToolCall", "cancel_run", "continue_run", "parse_step",
           "start_run"]

PAUSED = "tool_call_required"
_CALL_ID = re.compile(r"call_[A-Za-z0-9_-]{1,40}")


@attrs.frozen
class ToolCall:
    """One call the program made: the client runs ``name`` with ``input``."""

    id: str
    name: str
    input: Any


@attrs.frozen
class ProgrammaticStep:
    """What one step of a run ended with: a round of tool calls, or the run's end."""

    result: ExecutorResult
    tool_calls: tuple[ToolCall, ...] = ()
    #: Why the executor ended the run (a bad tool call, too many rounds, a cancel).
    failure: str | None = None

    @property
    def paused(self) -> bool:
        return self.result.status == PAUSED


def parse_step(data: Any, tools: Collection[str]) -> ProgrammaticStep:
    """The executor's answer, checked (``ExecutorError`` when it is out of contract)."""
    if not isinstance(data, dict):
        raise ExecutorError("malformed executor result: not an object")
    result = ExecutorResult.from_json({"exit_code": None, "signal": None, "max_rss": 0,
                                       "cpu_time": 0.0, "stdout_truncated": False,
                                       "stderr_truncated": False, **data})
    if result.status != PAUSED:
        failure = data.get("ptc_failure")
        return ProgrammaticStep(result, failure=str(failure)[:500] if failure else None)
    raw = data.get("tool_calls")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_CALLS_PER_ROUND:
        raise ExecutorError(f"a pause must list 1 to {MAX_CALLS_PER_ROUND} tool calls")
    calls: list[ToolCall] = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"id", "name", "input"}:
            raise ExecutorError("a tool call must be {id, name, input}")
        call_id, name = entry["id"], entry["name"]
        if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
            raise ExecutorError("a tool call id of the wrong shape")
        if not isinstance(name, str) or name not in tools:
            raise ExecutorError("a tool call of an undeclared tool")
        try:
            size = len(orjson.dumps(entry["input"]))
        except orjson.JSONEncodeError:  # the program's fault (the executor caps nesting)
            return ProgrammaticStep(attrs.evolve(result, status="error"),
                                    failure="invalid tool call from the program: an input "
                                            "that cannot be passed on as JSON")
        if size > MAX_CALL_BYTES:
            raise ExecutorError(f"a tool call input over {MAX_CALL_BYTES} bytes")
        calls.append(ToolCall(call_id, name, entry["input"]))
    if len({call.id for call in calls}) != len(calls):
        raise ExecutorError("two tool calls with one id")
    return ProgrammaticStep(result, tuple(calls))


async def _step(executor: ExecutorClient, path: str, body: bytes, *, transport_timeout: float,
                tools: Collection[str]) -> ProgrammaticStep:
    data = await executor.post_for_result(path, body, timeout=transport_timeout,
                                          during=" during a programmatic run")
    return parse_step(data, tools)


async def start_run(executor: ExecutorClient, *, lang: str, code: str, args: list[str],
                    timeout: float, request_id: str, transport_timeout: float,
                    tools: list[str], max_rounds: int, state: bytes | None = None,
                    capture: StateCapture | None = None) -> ProgrammaticStep:
    """Start the run with ``tools`` (their names); its first step. With no tools there is
    nothing to call: the executor runs the code as an ordinary execution."""
    body = execute_body(lang=lang, code=code, args=args, timeout=timeout,
                        request_id=request_id, state=state, capture=capture,
                        tools=tools or None, max_rounds=max_rounds)
    return await _step(executor, "/execute", body, transport_timeout=transport_timeout,
                       tools=tools)


async def continue_run(executor: ExecutorClient, results: list[dict[str, Any]], *,
                       timeout: float, transport_timeout: float,
                       tools: Collection[str]) -> ProgrammaticStep:
    """The next step, the program given ``results`` (``{id, ok, result?, error?}`` each)."""
    body = orjson.dumps({"tool_results": results, "timeout": timeout})
    return await _step(executor, "/execute/continue", body,
                       transport_timeout=transport_timeout, tools=tools)


async def cancel_run(executor: ExecutorClient) -> bool:
    """Stop the program; False when the sandbox had no run left to stop."""
    status, content = await executor.post_json("/execute/cancel", b"{}", timeout=10.0)
    try:
        return status == 200 and orjson.loads(content).get("cancelled") is True
    except (orjson.JSONDecodeError, AttributeError):
        return False
