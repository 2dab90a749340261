"""Request and response shapes of ``POST /exec`` (the LibreChat contract)."""

from __future__ import annotations

from typing import Any

import attrs

from ...executor import StateIssue
from .staging import ArtifactDelivery

__all__ = ["ExecRequest", "ExecResponse"]


@attrs.define
class ExecRequest:
    """What a client sends. Unknown fields are ignored (old clients leak extra ones)."""

    lang: str
    code: str
    args: list[str] | str | None = None
    session_id: str | None = None
    user_id: str | None = None
    entity_id: str | None = None
    files: list[dict[str, Any]] | None = None
    #: Milliseconds from 1000 up (as today's client sends), else seconds; clamped.
    timeout: float | None = None
    #: With ``X-CodeAPI-Expected-Profile: stateful``: the runtime session to run in
    #: (``^[A-Za-z0-9._:-]{1,128}$``, bound to the tenant; LibreChat derives it from the
    #: conversation). Ignored by the ``default`` profile.
    runtime_session_hint: str | None = None


@attrs.frozen
class ExecResponse:
    """The flat result the client reads; user-code failures are 200 with a status."""

    session_id: str
    stdout: str
    stderr: str
    files: list[dict[str, Any]]
    code: int | None
    signal: str | None
    status: str
    message: str | None
    wall_time: float
    cpu_time: float
    memory: int
    language: str
    version: str | None
    #: Output files the caps left out: ``{name, size, reason}`` each (never silent).
    skipped_files: list[dict[str, Any]] = attrs.field(factory=list)
    #: Names of input files the code removed from ``/mnt/data`` (the client stops
    #: injecting them; the session no longer places them by itself).
    deleted_files: list[str] = attrs.field(factory=list)
    #: Set when outputs of the code (which ran) could not be stored: LibreChat tells
    #: the model they are missing and not to rerun.
    artifact_delivery: ArtifactDelivery | None = None
    #: Python: whether the session has state after this run, and its size in bytes.
    has_state: bool | None = None
    state_size: int | None = None
    #: Python: names of the namespace that could not be kept (or restored), and why.
    state_errors: list[StateIssue] | None = None
    #: A runtime session's execution (the ``stateful`` profile with a hint): its id, and
    #: ``created``, ``reused``, ``restored`` or ``reset`` (see README).
    runtime_session_id: str | None = None
    runtime_status: str | None = None
