"""Shapes of the state routes' answers, and the state part of an execution's answer."""

from __future__ import annotations

import attrs

from ...executor import StateIssue

__all__ = ["StateInfo", "StateOutcome", "StateUploaded"]


@attrs.frozen
class StateInfo:
    """``GET /state/{session_id}/info``: what is stored, without the blob."""

    exists: bool
    session_id: str
    #: The compressed blob's size in bytes.
    size_bytes: int | None = None
    #: SHA-256 of the blob (hex); the ETag of ``GET /state/{session_id}`` quotes it.
    hash: str | None = None
    #: ISO 8601 (UTC).
    created_at: str | None = None
    #: When the hot copy expires (ISO 8601, UTC); None when only the archive holds it.
    expires_at: str | None = None
    #: Where it is stored now: ``valkey`` (hot) or ``archive`` (object store).
    source: str | None = None
    #: ``execution`` (captured in a sandbox) or ``upload`` (``POST /state``).
    origin: str | None = None


@attrs.frozen
class StateUploaded:
    """``POST /state/{session_id}``: the blob is stored and signed for the session."""

    message: str
    session_id: str
    size: int
    hash: str


@attrs.frozen
class StateOutcome:
    """The state fields of a Python execution's answer."""

    has_state: bool
    state_size: int
    errors: tuple[StateIssue, ...] = ()
