"""An attached workspace on ``/exec/programmatic``: LibreChat's bash tool with a project.

LibreChat's ``bash_tool`` with an attached workspace (``BashExecutor.mjs``) posts to
``/exec/programmatic`` with ``tools: []``, the header ``X-LibreChat-Code-Workspace-ID``
(the workspace: the client's own pattern ``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``) and,
optionally, ``workspace_instance_id`` in the body (64 lowercase hex characters, the
client's ``WORKSPACE_INSTANCE_ID_PATTERN``: the conversation's instance of it). Either
malformed is a 400 ``invalid_workspace``; an instance id without a workspace too.

With the ``stateful`` profile the call runs in the workspace's runtime session (its
key: the tenant and ``runtime_hint``, from the workspace and its instance, in place of
the conversation's ``runtime_session_hint``): its files persist there. Otherwise it runs
as an ordinary programmatic run in a fresh sandbox (its files through ``files`` and the
session, as always). Either way the workspace is recorded with the run (record, logs).
"""

from __future__ import annotations

import hashlib
import re

import attrs

from ...errors import BadRequest

__all__ = ["WORKSPACE_HEADER", "InvalidWorkspace", "Workspace", "read_workspace"]

WORKSPACE_HEADER = "X-LibreChat-Code-Workspace-ID"
_WORKSPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_INSTANCE_ID = re.compile(r"[a-f0-9]{64}")


class InvalidWorkspace(BadRequest):
    """A malformed ``X-LibreChat-Code-Workspace-ID`` or ``workspace_instance_id``."""

    code = "invalid_workspace"


@attrs.frozen
class Workspace:
    """The workspace a programmatic call is attached to."""

    id: str
    instance_id: str | None = None

    def runtime_hint(self) -> str:
        """Its runtime session's hint: ``ws:<id>[:<instance>]`` (hashed past 128 chars)."""
        raw = f"ws:{self.id}:{self.instance_id}" if self.instance_id else f"ws:{self.id}"
        return raw if len(raw) <= 128 else f"ws:{hashlib.sha256(raw.encode()).hexdigest()}"


def read_workspace(header: str | None, instance_id: object) -> Workspace | None:
    """The request's workspace (None without the header), or ``InvalidWorkspace``."""
    if header is None:
        if instance_id is not None:
            raise InvalidWorkspace(f"workspace_instance_id needs the {WORKSPACE_HEADER} "
                                   "header (the workspace it is an instance of)")
        return None
    workspace_id = header.strip()
    if not _WORKSPACE_ID.fullmatch(workspace_id):
        raise InvalidWorkspace(f"{WORKSPACE_HEADER} must be 1-128 characters of "
                               "[A-Za-z0-9._:-], starting with a letter or digit")
    if instance_id is not None and not (isinstance(instance_id, str)
                                        and _INSTANCE_ID.fullmatch(instance_id)):
        raise InvalidWorkspace("workspace_instance_id must be 64 lowercase hex characters")
    return Workspace(workspace_id, instance_id)
