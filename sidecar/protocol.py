"""The executor's wire format: the ``POST /execute`` request and its result.

Plain dataclasses (standard library only). The API side has its own attrs models
for the same JSON; this module is the executor's reading of it.

Python state travels base64-encoded: ``state`` in the request is the blob to
restore; ``capture_state`` asks for the namespace afterwards, under
``max_state_bytes`` (compressed) and ``max_state_raw_bytes`` (pickled), also after
a failed run when ``capture_state_on_error`` is true. The result's ``state_status``
is ``captured`` (``state`` holds the new blob), ``empty`` (the capture ran and kept
nothing) or ``skipped`` (it did not run: the previous state stands);
``state_errors`` names what could not be kept, as ``{name, type, error}``;
``state_restore_time`` and ``state_capture_time`` are the seconds each took.

Programmatic tool calling (``sidecar/ptc.py``): ``tools`` lists the tools' names
(``py`` and ``bash`` only); the run may then pause with ``status``
``tool_call_required`` and ``tool_calls`` ``[{id, name, input}]``, and go on with
``POST /execute/continue`` ``{tool_results: [{id, ok, result?, error?}], timeout}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from .ptc_wire import MAX_TOOL_NAME, MAX_TOOLS, identifier, valid_identifier

__all__ = ["MAX_EXECUTE_BODY", "MAX_STATE_BYTES", "TOKEN_HEADER", "ExecuteRequest",
           "ExecuteResult", "ProtocolError", "ToolResult", "parse_continue", "parse_keep",
           "valid_token", "wire_json"]

STATUSES = ("ok", "error", "timeout", "oom", "output_limit")
#: The header every request of the API but ``/health`` carries the sandbox's token in
#: (the first token shown binds the sandbox to its API: ``sidecar/server.py``).
TOKEN_HEADER = "X-Executor-Token"  # noqa: S105 (a header name, not a secret)
#: The largest state blob the executor accepts or returns, whatever the API asks.
MAX_STATE_BYTES = 1024 * 1024 * 1024
#: The longest one programmatic step may run (a larger ``timeout`` is clamped to it).
MAX_STEP_TIMEOUT = 24 * 3600.0
#: Request bodies carry code and args (8 MiB) plus a base64 state blob.
MAX_EXECUTE_BODY = 8 * 1024 * 1024 + (MAX_STATE_BYTES // 3 + 1) * 4


class ProtocolError(ValueError):
    """A request the executor cannot accept (answered with 400)."""


@dataclass(frozen=True)
class ExecuteRequest:
    """One execution: code in one language, argv, a wall-clock timeout in seconds."""

    lang: str
    code: str
    args: tuple[str, ...] = ()
    timeout: float = 30.0
    request_id: str = ""
    #: Python: the state blob to restore before the code runs.
    state: bytes | None = field(default=None, repr=False)
    capture_state: bool = False
    capture_state_on_error: bool = True
    max_state_bytes: int = 64 * 1024 * 1024
    max_state_raw_bytes: int = 512 * 1024 * 1024
    #: Programmatic tool calling: the tools' names (None: an ordinary run).
    tools: tuple[str, ...] | None = None
    #: The most rounds of tool calls the run may make.
    max_rounds: int = 50

    @classmethod
    def from_json(cls, body: Any) -> ExecuteRequest:
        if not isinstance(body, dict):
            raise ProtocolError("body must be a JSON object")
        lang, code = body.get("lang"), body.get("code")
        if not isinstance(lang, str) or not isinstance(code, str):
            raise ProtocolError("'lang' and 'code' must be strings")
        args = body.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ProtocolError("'args' must be a list of strings")
        if any("\x00" in a for a in args) or "\x00" in code:
            raise ProtocolError("NUL bytes are not allowed in code or args")
        timeout = body.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ProtocolError("'timeout' must be a positive number of seconds")
        request_id = body.get("request_id") or ""
        if not isinstance(request_id, str):
            raise ProtocolError("'request_id' must be a string")
        return cls(lang=lang, code=code, args=tuple(args), timeout=float(timeout),
                   request_id=request_id[:64], **_state_fields(body), **_tool_fields(body))


def _tool_fields(body: dict[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    if tools is None:
        return {}
    lang = body.get("lang")
    if lang not in ("py", "bash"):
        raise ProtocolError("tools are offered to 'py' and 'bash' programs only")
    if not isinstance(tools, list) or not 0 < len(tools) <= MAX_TOOLS or not all(
            isinstance(name, str) and 0 < len(name) <= MAX_TOOL_NAME for name in tools):
        raise ProtocolError(f"'tools' must list 1 to {MAX_TOOLS} names of at most "
                            f"{MAX_TOOL_NAME} characters")
    names = {identifier(name, lang) for name in tools}
    if len(names) != len(tools) or not all(valid_identifier(name, lang) for name in names):
        raise ProtocolError("'tools' must name distinct tools that make valid identifiers")
    return {"tools": tuple(tools), "max_rounds": _limit(body, "max_rounds", 50, 1000)}


@dataclass(frozen=True)
class ToolResult:
    """The client's answer to one tool call: a result, or an error raised in the program."""

    ok: bool
    result: Any = None
    error: str = ""


def parse_continue(body: Any) -> tuple[dict[str, ToolResult], float]:
    """``POST /execute/continue``: the results by call id, and the run's next timeout."""
    if not isinstance(body, dict) or not isinstance(body.get("tool_results"), list):
        raise ProtocolError("body must be an object with a 'tool_results' list")
    timeout = body.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout < float("inf"):
        raise ProtocolError("'timeout' must be a positive number of seconds")
    timeout = min(float(timeout), MAX_STEP_TIMEOUT)
    results: dict[str, ToolResult] = {}
    for entry in body["tool_results"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) \
                or not isinstance(entry.get("ok"), bool):
            raise ProtocolError("each tool result must be {id, ok, result?, error?}")
        error = entry.get("error") or ""
        results[entry["id"]] = ToolResult(entry["ok"], entry.get("result"),
                                          str(error)[:65536])
    return results, timeout


def valid_token(token: str) -> bool:
    """A sandbox token's shape: 16-256 printable ASCII characters."""
    return 16 <= len(token) <= 256 and token.isascii() and token.isprintable()


def parse_keep(body: Any) -> str | None:
    """``POST /keep``: the token later requests must present (None: none given; the
    API of this release sends it in ``TOKEN_HEADER`` too)."""
    if not isinstance(body, dict):
        raise ProtocolError("body must be an object")
    token = body.get("token")
    if token is None:
        return None
    if not isinstance(token, str) or not valid_token(token):
        raise ProtocolError("'token' must be 16-256 printable ASCII characters")
    return token


def _limit(body: dict[str, Any], name: str, default: int, maximum: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        raise ProtocolError(f"{name!r} must be an integer from 1 to {maximum}")
    return value


def _state_fields(body: dict[str, Any]) -> dict[str, Any]:
    encoded = body.get("state")
    state = None
    if encoded is not None:
        if not isinstance(encoded, str):
            raise ProtocolError("'state' must be a base64 string")
        try:
            state = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"'state' is not valid base64: {exc}") from exc
    flags = {name: body.get(name, default) for name, default in
             (("capture_state", False), ("capture_state_on_error", True))}
    if not all(isinstance(flag, bool) for flag in flags.values()):
        raise ProtocolError("'capture_state' and 'capture_state_on_error' must be booleans")
    max_bytes = _limit(body, "max_state_bytes", 64 * 1024 * 1024, MAX_STATE_BYTES)
    if state is not None and len(state) > max_bytes:
        raise ProtocolError(f"'state' is larger than {max_bytes} bytes")
    return {"state": state or None, **flags, "max_state_bytes": max_bytes,
            "max_state_raw_bytes": _limit(body, "max_state_raw_bytes", 512 * 1024 * 1024,
                                          1 << 40)}


@dataclass
class ExecuteResult:
    """What one execution did, as returned by ``POST /execute``."""

    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    status: str = "ok"
    message: str | None = None
    wall_time: float = 0.0
    cpu_time: float = 0.0
    max_rss: int = 0
    compile_time: float | None = None
    request_id: str = ""
    #: Python state (see the module docstring); ``None`` where no capture was asked.
    state: str | None = None
    state_status: str | None = None
    state_errors: list[dict[str, str]] = field(default_factory=list)
    #: Seconds the restore and the capture took inside the sandbox (None: not run).
    state_restore_time: float | None = None
    state_capture_time: float | None = None
    #: The work dir's files after the run, as ``GET /files`` lists them.
    files: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # Shallow (``asdict`` deep-copies every list): the fields are JSON values already.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data.update(data.pop("extra"))
        return data


def wire_json(value: Any) -> bytes:
    """``value`` as the executor sends JSON: always valid UTF-8. A string that is not
    (a file name or output decoded with ``surrogateescape``) has each lone surrogate
    sent as ``?``; ``json.dumps`` would escape it as ``\\udcff``, which no strict
    parser (the API's ``orjson``) accepts, and the whole answer would be lost."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")
