"""The real ``@librechat/agents`` tools against our execution profiles: a deployment
that does not serve ``stateful`` yields the client's own permanent capability refusal."""

from __future__ import annotations

import pytest

from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient

#: The client's words for ``execution_profile_mismatch`` (CodeExecutor.mjs,
#: ``getCodeApiCapabilityErrorMessage``): a refusal the model must not retry.
REFUSAL = ("Code execution is not supported by the selected environment. The selected "
           "environment does not provide the requested execution profile. This is a "
           "permanent capability mismatch. Do not retry this tool in this environment; "
           "select a compatible environment or use an available workspace tool.")
STATEFUL = {"statefulSessions": True, "executionProfile": "stateful",
            "runtimeSessionHint": "conversation-1"}


def test_the_code_tool_expecting_stateful_gets_the_capability_refusal(
        api: RunningApp, librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY, params=STATEFUL,
                           args={"lang": "py", "code": "open('/mnt/data/a.csv', 'w')"})
    assert not answer["ok"], answer
    assert answer["error"] == f"Execution error:\n\n{REFUSAL}"


@pytest.mark.parametrize("bash", [False, True])
def test_the_programmatic_tools_expecting_stateful_get_it_too(
        api: RunningApp, librechat: LibreChatClient, bash: bool) -> None:
    code = "x=$(add '{\"a\": 1, \"b\": 2}')\necho $x" if bash else \
        "print(await add(a=1, b=2))"
    answer = librechat.run("ptc", base_url=api.base_url, api_key=API_KEY, bash=bash,
                           params=STATEFUL, args={"code": code})
    assert not answer["ok"], answer
    assert REFUSAL in answer["error"] and answer["calls"] == []


def test_the_default_profile_is_served_to_a_stateful_capable_client(
        api: RunningApp, librechat: LibreChatClient) -> None:
    # statefulSessions with the default profile: the client sends no hint, we run as ever
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY,
                           params={**STATEFUL, "executionProfile": "default"},
                           args={"lang": "py", "code": "print(6 * 7)"})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\n42")
    assert "runtime_session_id" not in answer["artifact"]
