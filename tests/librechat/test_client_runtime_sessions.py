"""The real ``@librechat/agents`` code tool with stateful sessions against a deployment
serving ``stateful``: one kept sandbox per conversation (``runtimeSessionHint``), files
persisting without re-injection, and a killed sandbox restored from its checkpoint."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from tests.conftest import API_KEY, RunningApp
from tests.runtime.conftest import GENEROUS, drop, kept_of, stateful_api_fixture

from .client import LibreChatClient

STATEFUL = {"statefulSessions": True, "executionProfile": "stateful",
            "runtimeSessionHint": "thread-0123456789abcdef"}


stateful_api = stateful_api_fixture(attrs.evolve(GENEROUS, per_tenant=4, total=8))


def _call(librechat: LibreChatClient, app: RunningApp, code: str,
          **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = librechat.run(
        "exec", base_url=app.base_url, api_key=API_KEY, params=STATEFUL,
        args={"lang": "py", "code": code}, **extra)
    assert answer["ok"], answer
    return answer


def test_files_persist_in_the_conversations_sandbox_and_survive_its_loss(
        stateful_api: RunningApp, librechat: LibreChatClient) -> None:
    first = _call(librechat, stateful_api,
                  "open('/mnt/data/a.csv', 'w').write('x,y\\n1,2\\n')\nprint('written')")
    assert first["content"].startswith("stdout:\nwritten")
    artifact = first["artifact"]
    assert artifact["runtime_status"] == "created"
    runtime_id = artifact["runtime_session_id"]
    assert [f["name"] for f in artifact["files"]] == ["a.csv"]

    # the next call carries no files (nothing injected): the workspace still has a.csv
    second = _call(librechat, stateful_api,
                   "import pandas as pd\nprint(pd.read_csv('/mnt/data/a.csv')['y'].sum())")
    assert second["content"].startswith("stdout:\n2"), second
    assert second["artifact"]["runtime_status"] == "reused"
    assert second["artifact"]["runtime_session_id"] == runtime_id

    drop(stateful_api, runtime_id)  # the kept sandbox killed
    assert kept_of(stateful_api, runtime_id) == []
    third = _call(librechat, stateful_api, "print(open('/mnt/data/a.csv').read().split()[1])")
    assert third["content"].startswith("stdout:\n1,2"), third
    assert third["artifact"]["runtime_status"] == "restored"
    assert third["artifact"]["runtime_session_id"] == runtime_id


def test_a_deleted_workspace_file_reaches_the_client_through_deleted_files(
        stateful_api: RunningApp, librechat: LibreChatClient) -> None:
    params = {**STATEFUL, "runtimeSessionHint": "thread-deletes"}
    made = librechat.run("exec", base_url=stateful_api.base_url, api_key=API_KEY,
                         params=params, args={"lang": "py", "code": (
                             "open('/mnt/data/old.txt', 'w').write('o')")})
    assert made["ok"] and made["artifact"]["runtime_status"] == "created", made
    removed = librechat.run("exec", base_url=stateful_api.base_url, api_key=API_KEY,
                            params=params, args={"lang": "py", "code": (
                                "import os\nos.remove('/mnt/data/old.txt')\nprint('gone')")})
    assert removed["ok"], removed
    assert removed["artifact"]["deleted_files"] == ["old.txt"]
    assert removed["artifact"]["runtime_status"] == "reused"


@pytest.mark.parametrize("bash", [False, True])
def test_the_programmatic_tools_go_on_in_the_conversations_sandbox(
        stateful_api: RunningApp, librechat: LibreChatClient, bash: bool) -> None:
    params = {**STATEFUL, "runtimeSessionHint": f"thread-ptc-{'bash' if bash else 'py'}"}
    made = librechat.run("exec", base_url=stateful_api.base_url, api_key=API_KEY,
                         params=params, args={"lang": "py", "code": (
                             "open('/mnt/data/n.txt', 'w').write('40')")})
    assert made["ok"], made
    code = ("n=$(cat /mnt/data/n.txt)\nx=$(add \"{\\\"a\\\": $n, \\\"b\\\": 2}\")\necho $x"
            if bash else "n = int(open('/mnt/data/n.txt').read())\n"
                         "print(await add(a=n, b=2))")
    answer = librechat.run("ptc", base_url=stateful_api.base_url, api_key=API_KEY,
                           bash=bash, params=params, args={"code": code})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\n42"), answer
    assert answer["calls"] == [{"name": "add", "input": {"a": 40, "b": 2}}]
    # a bash run after a Python one: another language, the workspace moved through its
    # checkpoint into a bash sandbox
    assert answer["artifact"]["runtime_status"] == ("restored" if bash else "reused")
    assert answer["artifact"]["runtime_session_id"] == made["artifact"]["runtime_session_id"]


def test_an_attached_workspace_is_a_runtime_session_of_its_own(
        stateful_api: RunningApp, librechat: LibreChatClient) -> None:
    """The bash tool with a workspace (``/exec/programmatic``, ``tools: []``, the header):
    its files persist in the workspace's runtime session, across conversations."""
    workspace = {"workspaceId": "project-w", "workspaceInstanceId": "b" * 64}

    def bash(hint: str, command: str) -> dict[str, Any]:
        answer: dict[str, Any] = librechat.run(
            "exec", base_url=stateful_api.base_url, api_key=API_KEY, bash=True,
            params={**STATEFUL, **workspace, "runtimeSessionHint": hint},
            args={"command": command})
        assert answer["ok"], answer
        return answer

    made = bash("thread-w1", "echo v1 > /mnt/data/notes.txt; echo made")
    assert made["artifact"]["runtime_status"] == "created"
    later = bash("thread-w2", "cat /mnt/data/notes.txt")  # another conversation
    assert later["content"].startswith("stdout:\nv1"), later
    assert later["artifact"]["runtime_status"] == "reused"
    assert later["artifact"]["runtime_session_id"] == made["artifact"]["runtime_session_id"]
