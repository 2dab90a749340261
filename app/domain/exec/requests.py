"""Checking and shaping the pieces of an execution request and answer: the timeout
(seconds or milliseconds, clamped), ``args``, output cut to the answer's limit with a
visible marker, and the plain line a timeout or an OOM adds to ``stderr``."""

from __future__ import annotations

import shlex
from typing import Any

from ...errors import BadRequest, PayloadTooLarge
from ...storage import FileMeta
from .staging import WORKDIR

__all__ = ["cut_output", "file_entry", "limit_notice", "normalize_args", "normalize_timeout",
           "with_notice"]

_MAX_ARGS = 256
_MAX_ARGS_BYTES = 64 * 1024


def normalize_timeout(value: float | None, default: int, maximum: int) -> float:
    """Seconds from seconds-or-milliseconds, clamped. Today's client sends milliseconds
    (never under 1000: its ``ptcTimeout`` floors at 1000 ms), older ones seconds: values
    from 1000 up are milliseconds, smaller ones seconds."""
    if value is None:
        return float(default)
    if value <= 0:
        raise BadRequest("timeout must be positive (seconds, or milliseconds above 1000)")
    seconds = value / 1000 if value >= 1000 else value
    return float(min(seconds, maximum))


def normalize_args(value: list[str] | str | None) -> list[str]:
    """argv for the program; a string is split like a command line (never run by a shell)."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise BadRequest(f"args: {exc}") from exc
    else:
        args = list(value)
    if len(args) > _MAX_ARGS or sum(len(a.encode()) for a in args) > _MAX_ARGS_BYTES:
        raise PayloadTooLarge(f"args: at most {_MAX_ARGS} arguments and {_MAX_ARGS_BYTES} bytes")
    if any("\x00" in a for a in args):
        raise BadRequest("args must not contain NUL bytes")
    return args


def cut_output(text: str, limit: int, cut_in_sandbox: bool) -> str:
    """At most ``limit`` bytes of UTF-8, with a visible marker where anything was cut."""
    data = text.encode("utf-8", "replace")
    marker = ""
    if len(data) > limit:
        marker = f"\n[output truncated: {len(data) - limit} more bytes not shown]\n"
        text = data[:limit].decode("utf-8", "ignore")
    if cut_in_sandbox:
        marker += "\n[output limit reached: the program was stopped]\n"
    return text + marker


def limit_notice(status: str, timeout: float, memory_mb: int) -> str | None:
    """A plain line for ``stderr`` when the sandbox stopped the program (else None):
    without it a timeout or an OOM leaves the client with nothing to show."""
    if status == "timeout":
        return f"Time limit exceeded after {timeout:g} s"
    if status == "oom":
        return f"Out of memory ({memory_mb} MB)"
    return None


def with_notice(stderr: str, notice: str | None) -> str:
    if notice is None:
        return stderr
    separator = "\n" if stderr and not stderr.endswith("\n") else ""
    return f"{stderr}{separator}{notice}\n"


def file_entry(meta: FileMeta, inherited: bool = False) -> dict[str, Any]:
    """A stored output (or an inherited read-only input) as the answer's ``files`` list it."""
    entry: dict[str, Any] = {
        "id": meta.id, "name": meta.name, "path": f"{WORKDIR}/{meta.name}",
        "storage_session_id": meta.session_id, "session_id": meta.session_id,
        "size": meta.size, "content_type": meta.content_type, "inherited": inherited}
    if meta.modified_from is not None:
        entry["modified_from"] = meta.modified_from
    return entry
