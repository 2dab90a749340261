"""Request and response shapes of ``POST /exec/programmatic`` (and its ``/cancel``).

The shapes are those of LibreChat's ``@librechat/agents`` client (its
``ProgrammaticToolCalling`` and ``BashProgrammaticToolCalling`` tools): one endpoint
for the first request (``code``, ``tools``) and every continuation
(``continuation_token``, ``tool_results``). Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any

import attrs

from ...executor import StateIssue
from ..exec.staging import ArtifactDelivery

__all__ = ["CancelRequest", "CancelResponse", "ProgrammaticRequest", "ProgrammaticResponse",
           "ToolCallOut"]


@attrs.define
class ProgrammaticRequest:
    """A new run (``code``, ``tools``, ...) or the next step of one (``continuation_token``,
    ``tool_results``)."""

    code: str | None = None
    #: ``{name, description?, parameters?}`` each; the code calls them as functions.
    tools: list[dict[str, Any]] | None = None
    #: ``py`` (the default) or ``bash``.
    lang: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    entity_id: str | None = None
    files: list[dict[str, Any]] | None = None
    #: Milliseconds (seconds below 1000) for each run between two rounds of tool calls.
    timeout: float | None = None
    continuation_token: str | None = None
    #: ``{call_id, result, is_error, error_message?}`` each, one per call of the round.
    tool_results: list[dict[str, Any]] | None = None
    #: With ``X-LibreChat-Code-Workspace-ID``: the conversation's instance of the
    #: workspace (64 lowercase hex characters).
    workspace_instance_id: Any = None
    #: With ``X-CodeAPI-Expected-Profile: stateful``: the runtime session the run goes on
    #: in (as for ``/exec``; first request only).
    runtime_session_hint: str | None = None


@attrs.frozen
class ToolCallOut:
    """A call the code made: run tool ``name`` with ``input``, answer with ``id``."""

    id: str
    name: str
    input: Any


@attrs.frozen
class ProgrammaticResponse:
    """``tool_call_required`` (answer the calls with the token), ``completed`` or ``error``."""

    status: str
    session_id: str | None
    continuation_token: str | None = None
    tool_calls: list[ToolCallOut] = attrs.field(factory=list)
    stdout: str = ""
    stderr: str = ""
    #: Once completed: the files the code created or changed, stored (as in ``/exec``).
    files: list[dict[str, Any]] = attrs.field(factory=list)
    error: str | None = None
    skipped_files: list[dict[str, Any]] = attrs.field(factory=list)
    #: Once completed: names of input files the code removed (as in ``/exec``).
    deleted_files: list[str] = attrs.field(factory=list)
    #: Once completed: outputs that could not be stored (as in ``/exec``).
    artifact_delivery: ArtifactDelivery | None = None
    has_state: bool | None = None
    state_size: int | None = None
    state_errors: list[StateIssue] | None = None
    #: A completed run in a runtime session (the ``stateful`` profile with a hint).
    runtime_session_id: str | None = None
    runtime_status: str | None = None


@attrs.define
class CancelRequest:
    """The client's request id (also accepted as ``X-LibreChat-Code-Request-ID``)."""

    request_id: str | None = None


@attrs.frozen
class CancelResponse:
    cancelled: bool
