"""The requests' and answers' pieces of ``/exec/programmatic`` that need no service:
the tools' names, the client's tool results as the executor takes them, the plain
failure answer and the limit notice."""

from __future__ import annotations

from typing import Any

import orjson

from sidecar.contract import (
    MAX_CALLS_PER_ROUND,
    MAX_TOOL_NAME,
    MAX_TOOLS,
    identifier,
    valid_identifier,
)

from ...errors import BadRequest
from .schemas import ProgrammaticResponse

__all__ = ["failed", "tool_names", "wire_results", "with_notice"]


def tool_names(tools: Any, lang: str, allow_none: bool = False) -> list[str]:
    """The tools' names, each making a distinct function name in ``lang`` (else 400);
    ``allow_none``: an empty list is fine (a call attached to a workspace)."""
    if isinstance(tools, list) and not tools and allow_none:
        return []
    if not isinstance(tools, list) or not tools:
        raise BadRequest("'tools' must list the tools the code calls ({name, ...} each)")
    if len(tools) > MAX_TOOLS:
        raise BadRequest(f"at most {MAX_TOOLS} tools")
    functions: dict[str, str] = {}
    for tool in tools:
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not 0 < len(name) <= MAX_TOOL_NAME:
            raise BadRequest(f"each tool needs a 'name' of 1 to {MAX_TOOL_NAME} characters")
        function = identifier(name, lang)
        if not valid_identifier(function, lang):
            raise BadRequest(f"tool {name!r} makes no valid function name")
        if functions.setdefault(function, name) != name:
            raise BadRequest(f"tools {functions[function]!r} and {name!r} both become "
                             f"{function!r} in the code")
    return list(functions.values())


_INT64 = range(-(2 ** 63), 2 ** 63)


def _as_float(value: int) -> float | int:
    """The nearest double; past the doubles' range the integer as it is (no JSON number
    a client could mean: ``wire_results`` then refuses it)."""
    try:
        return float(value)
    except OverflowError:
        return value


def _wire_numbers(value: Any) -> Any:
    """``value`` with integers past the signed 64-bit range as floats: JavaScript, the
    client's, has only doubles, and ``JSON.stringify(1e20)`` writes an integer no 64-bit
    reader takes. Iterative (the request's own nesting bounds it)."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, int) and not isinstance(item, bool) and item not in _INT64:
            container[key] = _as_float(item)
        elif isinstance(item, dict):
            stack.extend((item, k) for k in item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
    return root[0]


def wire_results(raw: Any) -> list[dict[str, Any]]:
    """The client's ``tool_results`` as the executor takes them (``is_error`` raises)."""
    if not isinstance(raw, list) or len(raw) > MAX_CALLS_PER_ROUND:
        raise BadRequest(f"'tool_results' must list at most {MAX_CALLS_PER_ROUND} results")
    results = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("call_id"), str):
            raise BadRequest("each tool result needs a 'call_id'")
        if entry.get("is_error"):
            message = entry.get("error_message") or entry.get("result") or "the tool failed"
            results.append({"id": entry["call_id"], "ok": False, "error": str(message)})
        else:
            results.append({"id": entry["call_id"], "ok": True,
                            "result": _wire_numbers(entry.get("result"))})
    try:  # checked before the token is used: a refused round leaves the run paused
        orjson.dumps(results)
    except orjson.JSONEncodeError as exc:
        raise BadRequest(f"'tool_results' cannot be passed on as JSON: {exc}") from exc
    return results


def with_notice(stderr: str, notice: str | None) -> str:
    """``stderr`` with a plain line saying the sandbox stopped the program (if it did)."""
    if notice is None:
        return stderr
    return f"{stderr}{chr(10) if stderr and not stderr.endswith(chr(10)) else ''}{notice}\n"


def failed(session_id: str | None, message: str) -> ProgrammaticResponse:
    return ProgrammaticResponse(status="error", session_id=session_id, error=message)
