"""``X-LibreChat-Code-Workspace-ID`` on ``/exec/programmatic``: LibreChat's bash tool
with an attached workspace (``tools: []``), run as an ordinary programmatic run until
runtime sessions exist, the workspace recorded with the run."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningApp

from .helpers import TOOLS, step

HEADER = "X-LibreChat-Code-Workspace-ID"
INSTANCE = "0123456789abcdef" * 4


def attached(client: httpx.Client, workspace: str | bytes, **body: object) -> httpx.Response:
    value = workspace if isinstance(workspace, bytes) else workspace.encode()
    return client.post("/exec/programmatic", headers={HEADER.encode(): value},
                       json={"lang": "bash", "tools": [], "code": "echo hi; pwd", **body})


@pytest.mark.parametrize("workspace", ["project-a", "a", "A" * 128, "w.1:x_y-z", "f" * 64])
def test_an_attached_call_with_no_tools_runs(client: httpx.Client, workspace: str) -> None:
    response = attached(client, workspace, workspace_instance_id=INSTANCE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["stdout"] == "hi\n/mnt/data\n", body


@pytest.mark.parametrize("workspace", ["", "-lead", ".lead", "A" * 129, "has space", "a/b",
                                      "\xe9".encode("latin-1")])
def test_a_malformed_workspace_is_400(client: httpx.Client, workspace: str | bytes) -> None:
    response = attached(client, workspace)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_workspace"


@pytest.mark.parametrize("instance", [INSTANCE[:-1], INSTANCE + "0", INSTANCE.upper(),
                                      "g" * 64, 12, ""])
def test_a_malformed_instance_is_400(client: httpx.Client, instance: object) -> None:
    response = attached(client, "project-a", workspace_instance_id=instance)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_workspace"


def test_an_instance_without_a_workspace_is_400(client: httpx.Client) -> None:
    response = client.post("/exec/programmatic", json={
        "lang": "bash", "tools": TOOLS, "code": "echo hi", "workspace_instance_id": INSTANCE})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_workspace"


def test_no_tools_without_a_workspace_is_still_400(client: httpx.Client) -> None:
    response = client.post("/exec/programmatic", json={"lang": "bash", "tools": [],
                                                       "code": "echo hi"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_the_workspace_is_recorded_with_the_run(api: RunningApp, client: httpx.Client) -> None:
    paused = step(client, {"code": "x=$(add '{\"a\": 1, \"b\": 2}')\necho $x",
                           "lang": "bash", "tools": TOOLS, "workspace_instance_id": INSTANCE},
                  **{HEADER: "project-a"})
    assert paused["status"] == "tool_call_required", paused
    service = api.app.state.programmatic_service
    token = service.tokens.read(paused["continuation_token"], "default")
    record = api.run(service.runs.load_run(token.run_id))
    assert (record.workspace_id, record.workspace_instance_id) == ("project-a", INSTANCE)
    done = step(client, {"continuation_token": paused["continuation_token"], "tool_results": [
        {"call_id": paused["tool_calls"][0]["id"], "result": 3}]}, **{HEADER: "project-a"})
    assert done["status"] == "completed" and done["stdout"] == "3\n", done
