"""The real ``@librechat/agents`` bash tool with an attached workspace: it posts
``/exec/programmatic`` with ``tools: []`` and ``X-LibreChat-Code-Workspace-ID``; we run
the command (as an ordinary run with the default profile; with ``stateful`` it is a
runtime session of its own: ``test_client_runtime_sessions.py``)."""

from __future__ import annotations

from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient

WORKSPACE = {"workspaceId": "project-a", "workspaceInstanceId": "a" * 64}


def test_the_attached_bash_tool_runs(api: RunningApp, librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY, bash=True,
                           params=WORKSPACE, args={
        "command": "echo hi > /mnt/data/out.txt; cat /mnt/data/out.txt; echo \"$1\"",
        "args": ["an argument"]})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\nhi\nan argument\n"), answer
    assert [f["name"] for f in answer["artifact"]["files"]] == ["out.txt"]


def test_a_failing_command_still_shows_its_output(api: RunningApp,
                                                  librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY, bash=True,
                           params=WORKSPACE, args={"command": "echo before; ls /nope"})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\nbefore\n")
    assert "No such file or directory" in answer["content"]


def test_a_limit_is_the_clients_safe_error(api: RunningApp,
                                           librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY, bash=True,
                           params=WORKSPACE, args={"command": "yes"})
    assert not answer["ok"], answer
    assert answer["error"].startswith(
        "Execution error:\n\nCode execution failed. Execution output exceeded the size limit.")
