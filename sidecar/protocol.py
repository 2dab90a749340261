"""The executor's wire format: the ``POST /execute`` request and its result.

Plain dataclasses (standard library only). The API side has its own attrs models
for the same JSON; this module is the executor's reading of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ExecuteRequest", "ExecuteResult", "ProtocolError"]

STATUSES = ("ok", "error", "timeout", "oom", "output_limit")


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
                   request_id=request_id[:64])


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data
