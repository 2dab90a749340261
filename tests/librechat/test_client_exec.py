"""The real ``@librechat/agents`` code tool against our server: one execution."""

from __future__ import annotations

from tests.conftest import API_KEY, RunningApp

from .client import LibreChatClient


def test_the_client_runs_code_and_reads_the_answer(api: RunningApp,
                                                   librechat: LibreChatClient) -> None:
    answer = librechat.run("exec", base_url=api.base_url, api_key=API_KEY,
                           args={"lang": "py", "code": "print(6 * 7)"})
    assert answer["ok"], answer
    assert answer["content"].startswith("stdout:\n42")
    assert answer["artifact"]["session_id"]
